"""Long mutation-fuzz runs over every ptools reader: figures for inputs, crashes, hangs, memory hits, internal errors.

    python benchmarks/fuzz.py --n 5000 --seed 77
    python benchmarks/fuzz.py --seed 77 --only 1234 --keep /tmp/f   # replay one input and keep its files

The harness is tests/fuzzing.py (CI runs it with a fixed seed); see its docstring for what is judged.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the harness lives in tests/
    from tests.fuzzing import main

    sys.exit(main())
