"""Differential check of ptools' PyTables pickle scan against PyTables itself: every value PyTables unpickles.

    python benchmarks/pytables_differential.py --n 40 --seed 5

Needs PyTables (`pip install tables`; not a ptools dependency). Each drawn file is written by PyTables
(drawn Python values as attributes of drawn nodes, an ObjectAtom VLArray); PyTables then opens every node
and reads every row with `pickle.loads` recorded (benign values only: nothing else runs). The bytes
PyTables unpickled must all be among the pickles ptools finds in the file, and none may be graded
dangerous; then a payload attribute is added through h5py and ptools must grade the file dangerous.
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    try:
        import tables
    except ImportError:
        print("needs PyTables (pip install tables)", file=sys.stderr)
        return 2
    import h5py
    import numpy as np

    from ptools.checkpoint.keras.hdf5_pickles import pytables_pickles, scan_hdf5

    loaded: list[bytes] = []
    real_loads = pickle.loads

    def recording_loads(data: bytes, *a: object, **k: object) -> object:
        loaded.append(bytes(data))
        return real_loads(data, *a, **k)

    pickle.loads = recording_loads  # PyTables calls pickle.loads for attributes and ObjectAtom rows
    values = [{"lr": 0.1}, ("x", 2), [1, 2.5, None], {"nested": {"a": [1]}}, {1, 2}, complex(1, 2), b"\x00raw", None]
    unseen = dangerous_benign = missed = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            rng = random.Random(f"{args.seed}:{i}")
            path = Path(tmp) / f"f{i}.h5"
            with tables.open_file(str(path), "w") as f:
                arr = f.create_array("/", "w", np.arange(rng.randint(1, 5), dtype="f4"))
                grp = f.create_group("/", "g")
                for k in range(rng.randint(1, 4)):
                    rng.choice([f.root, arr, grp])._v_attrs[f"a{k}"] = rng.choice(values)
                if rng.random() < 0.5:
                    v = f.create_vlarray("/", "objs", tables.ObjectAtom())
                    for _ in range(rng.randint(1, 3)):
                        v.append(rng.choice(values))
            loaded.clear()
            with tables.open_file(str(path)) as f:
                for node in f.walk_nodes():
                    _ = node._v_attrs
                    if isinstance(node, tables.VLArray):
                        list(node)
            with h5py.File(path) as h:
                mine = Counter(raw for _, raw in pytables_pickles(h, 1 << 30))
                graded = scan_hdf5(h, 1 << 30)
            theirs = Counter(loaded)
            total += sum(theirs.values())
            unseen += sum((theirs - mine).values())
            dangerous_benign += any(g.grade == "dangerous" for g in graded.globals.values())
            with h5py.File(path, "a") as h:
                h["w"].attrs["evil"] = np.bytes_(b"cos\nsystem\n(Vtrue\ntR.")
            with h5py.File(path) as h:
                if not any(g.grade == "dangerous" for g in scan_hdf5(h, 1 << 30).globals.values()):
                    missed += 1
    print(
        f"files {args.n}: PyTables unpickled {total} values, {unseen} of them not found by ptools; "
        f"benign files graded dangerous {dangerous_benign}; payload attributes missed {missed}"
    )
    return 1 if unseen or dangerous_benign or missed else 0


if __name__ == "__main__":
    sys.exit(main())
