"""`ptools port` against TensorFlow's own `load_model` on the same Keras file, whole processes, side by side.

    python benchmarks/port_speed.py                       # ResNet50V2 (94 MB), .keras and tf_keras .h5
    python benchmarks/port_speed.py --model my.keras --reps 5

The goal (issue 17): porting a file takes no longer than loading it with Keras (ratio <= 1.0). Each
repetition runs, in fresh processes and alternating, `ptools port FILE OUT --force` and a Python that
imports Keras and calls `load_model(FILE)` (Keras 3 for `.keras`, tf_keras for `.h5`), so both pay their
imports as a user does. Wall time is what a user waits; CPU time (user + sys of the process and its
children) is what the machine spent, and is the steadier figure on a shared machine: both are printed with
the load average. The models are made with random weights by TensorFlow (`--tf-python`, default
/work/tfvenv/bin/python or $PTOOLS_TF_PYTHON); without it the benchmark says so and stops.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TF_PYTHON = os.environ.get("PTOOLS_TF_PYTHON", "/work/tfvenv/bin/python")
MAKE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
out = sys.argv[1]
import keras
keras.applications.ResNet50V2(weights=None, input_shape=(224, 224, 3), classes=1000).save(out + "/resnet50v2.keras")
import tf_keras
tf_keras.applications.ResNet50V2(weights=None, input_shape=(224, 224, 3), classes=1000).save(out + "/resnet50v2_tfk.h5")
"""
LOAD = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
path = sys.argv[1]
if path.endswith(".keras"):
    import keras
    keras.models.load_model(path)
else:
    import tf_keras
    tf_keras.models.load_model(path)
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one command run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, action="append", help="Keras file(s) to time (default: ResNet50V2)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each side (alternating)")
    ap.add_argument("--tf-python", default=TF_PYTHON, help="a Python with tensorflow, keras and tf_keras")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ptools-port-speed")
    args = ap.parse_args(argv)
    if not Path(args.tf_python).exists():
        print(
            f"skipped: no TensorFlow Python at {args.tf_python} (pip install 'ptools-port[tf]' there, or set "
            "--tf-python / PTOOLS_TF_PYTHON); the comparison needs Keras' own load_model"
        )
        return 0
    models = args.model
    if not models:
        args.cache.mkdir(parents=True, exist_ok=True)
        models = [args.cache / "resnet50v2.keras", args.cache / "resnet50v2_tfk.h5"]
        if not all(m.exists() for m in models):
            print(f"making ResNet50V2 (random weights) in {args.cache} ...", file=sys.stderr)
            subprocess.run([args.tf_python, "-c", MAKE, str(args.cache)], check=True, capture_output=True)
    ptools = [sys.executable, "-m", "ptools"]
    rows = []
    load_before = os.getloadavg()
    for model in models:
        out = Path(tempfile.mkdtemp(prefix="ptools-port-speed-"))
        try:
            port_w, port_c, tf_w, tf_c = [], [], [], []
            for _ in range(args.reps):
                w, c = timed([*ptools, "port", str(model), str(out), "--force"])
                port_w.append(w)
                port_c.append(c)
                w, c = timed([args.tf_python, "-c", LOAD, str(model)])
                tf_w.append(w)
                tf_c.append(c)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append((model, port_w, port_c, tf_w, tf_c))
    load_after = os.getloadavg()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ptools port vs Keras load_model, median of {args.reps} (whole processes)")
    for col in (
        "file",
        "MB",
        "port wall s",
        "load_model wall s",
        "ratio wall",
        "port CPU s",
        "load_model CPU s",
        "ratio CPU",
    ):
        table.add_column(col, justify="right" if col != "file" else "left")
    for model, pw, pc, tw, tc in rows:
        mpw, mpc, mtw, mtc = (statistics.median(x) for x in (pw, pc, tw, tc))
        table.add_row(
            model.name,
            f"{model.stat().st_size / 1e6:.0f}",
            f"{mpw:.2f}",
            f"{mtw:.2f}",
            f"{mpw / mtw:.2f}",
            f"{mpc:.2f}",
            f"{mtc:.2f}",
            f"{mpc / mtc:.2f}",
        )
    Console(width=max(120, Console().width)).print(table)  # piped: whole file names and headers
    print(
        f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
        f"after {tuple(round(x, 2) for x in load_after)}; {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
