"""The promise every reader keeps on hostile input, checked by seeded mutation fuzzing (tests/fuzzing.py).

CI runs a fixed seed; PTOOLS_FUZZ_SEED and PTOOLS_FUZZ_N run others (`python benchmarks/fuzz.py` for long runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import fuzzing

ROOT = Path(__file__).resolve().parent.parent
# Every reader, each fed a share of the inputs.
KINDS = [
    "torch-zip",
    "torch-legacy",
    "pickle",
    "torchscript",
    "safetensors",
    "tf-bundle",
    "keras",
    "dataset-images",
    "dataset-csv",
    "npy",
    "npz",
    "torch-package",
    "hdf5-pickles",
]


def test_mutated_inputs_never_crash_hang_exhaust_memory_or_fail_unclearly():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tests.fuzzing", "--json", "--commands-per-input", "2", "--kinds", ",".join(KINDS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.stdout, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["inputs"] == int(os.environ.get("PTOOLS_FUZZ_N", 300))
    assert set(summary["per_reader"]) == set(KINDS)  # every reader really ran
    assert all(r["commands"] >= 20 for r in summary["per_reader"].values())
    assert {"0", "2"} <= set(summary["exit_codes"])  # both valid and rejected inputs were produced
    failures = [
        f"[{f['verdict']}] input {f['input_id']} ({f['kind']}/{f['mutation']}) rc={f['rc']}: "
        f"ptools {' '.join(f['argv'])}: {f['stderr'][-300:]!r}"
        for f in summary["failures"]
    ]
    assert not failures, f"seed {summary['seed']}:\n" + "\n".join(failures[:20])
    assert proc.returncode == 0


def test_judge_names_each_failure_class():
    names = ["model.pt"]
    ok = "ptools: error: /x/model.pt: corrupt\n"
    assert fuzzing.judge(2, None, False, ok, names, 10, 512) == "ok"
    assert fuzzing.judge(None, 9, True, "", names, 10, 512) == "hang"
    assert fuzzing.judge(None, 11, False, "", names, 10, 512) == "crash"
    assert fuzzing.judge(2, None, False, "ptools: error: x: MemoryError:\n", names, 10, 512) == "memory"
    assert fuzzing.judge(0, None, False, "", names, 600, 512) == "memory"
    assert fuzzing.judge(2, None, False, "ptools: error: internal error: KeyError: 1\n", names, 1, 512) == (
        "internal_error"
    )
    assert fuzzing.judge(2, None, False, "\n" + ok, names, 1, 512) == "not_one_line"
    assert fuzzing.judge(2, None, False, "ptools: error: corrupt\n", names, 1, 512) == "no_file_name"
    assert fuzzing.judge(4, None, False, "", names, 1, 512) == "bad_exit"


def test_a_child_that_burns_its_cpu_limit_is_a_hang(tmp_path):
    """The time limit is CPU time (a loaded machine must not turn slow-but-sound commands into hangs)."""
    import resource
    import signal
    import time

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child spins under the limit _child sets
        resource.setrlimit(resource.RLIMIT_CPU, (1, 2))
        while True:
            pass
    start = time.monotonic()
    _, status, usage = os.wait4(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU
    err = tmp_path / "stderr.txt"
    err.write_text("")
    inp = fuzzing.FuzzInput(0, fuzzing.Seed("pickle", {"m.pt": b""}, "m.pt", []), "none", {}, "m.pt")
    out = fuzzing._outcome((inp, ["inspect", "m.pt"], tmp_path, start, err, 0), status, usage, 0.0, timed_out=False)
    assert out.verdict == "hang"


def test_inputs_are_reproducible_from_the_seed(tmp_path):
    seeds = fuzzing._dataset_seeds()
    a = fuzzing.make_input(seeds, 5, 17)
    b = fuzzing.make_input(seeds, 5, 17)
    c = fuzzing.make_input(seeds, 6, 17)
    assert a.files == b.files and a.mutation == b.mutation
    assert a.files != c.files or a.mutation != c.mutation
