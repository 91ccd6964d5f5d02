"""Random Keras models through `ptools port` and `ptools convert`, judged against Keras' own outputs.

    python benchmarks/port_fuzz.py --seed 9001 --n 200                 # models 0..199 of seed 9001
    python benchmarks/port_fuzz.py --seed 9001 --start 57 --n 1 --keep /tmp/m57   # replay one model

The Keras side (benchmarks/port_fuzz_keras.py) runs in a TensorFlow environment (--tf-python, default
/work/tfvenv/bin/python or $PTOOLS_TF_PYTHON); without one the run says so and is skipped. The judge is
tests/port_fuzzing.py (CI runs it on a committed set of generated models); see its docstring for verdicts.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the judge lives in tests/
    from tests.port_fuzzing import main

    sys.exit(main())
