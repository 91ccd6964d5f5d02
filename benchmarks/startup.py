"""Startup time of light ptools commands vs `python -c "import typer"`, measured side by side in one run.

Usage: python benchmarks/startup.py [--runs 15] [--importtime]
Prints the median wall time of each command and its ratio to the typer baseline (target <= 2.5x).
With --importtime, also lists the slowest imports of each ptools command (python -X importtime).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 2.5


def ptools_cmd() -> list[str]:
    # The console script users run; fall back to -m when it is not installed next to this Python.
    script = Path(sys.executable).with_name("ptools")
    if script.exists():
        return [str(script)]
    found = shutil.which("ptools")
    return [found] if found else [sys.executable, "-m", "ptools"]


def commands() -> dict[str, list[str]]:
    ptools = ptools_cmd()
    return {
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "ptools --help": [*ptools, "--help"],
        "ptools check-conv --input 224 --kernel 3 --stride 2": [
            *ptools,
            "check-conv",
            "--input",
            "224",
            "--kernel",
            "3",
            "--stride",
            "2",
        ],
    }


def bytecode_env(cache_dir: str) -> dict[str, str]:
    """Measure as installed: with cached bytecode (pip writes it; PYTHONDONTWRITEBYTECODE would make
    every run recompile ptools but not the already-compiled typer), kept outside the source tree."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=cache_dir)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def time_once(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - start


def slowest_imports(args: list[str], env: dict[str, str], top: int = 10) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest imports of `ptools ARGS`, two levels deep (the
    modules ptools.cli pulls in directly show where the time goes)."""
    code = (
        f"import sys; sys.argv = ['ptools', *{args!r}]\n"
        "from ptools.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if depth <= 1:
            rows.append((int(cumulative), ("  " * depth) + name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()

    cmds = commands()
    with tempfile.TemporaryDirectory(prefix="ptools-bench-pyc-") as cache_dir:
        env = bytecode_env(cache_dir)
        for cmd in cmds.values():  # warm the file cache and write the bytecode once
            time_once(cmd, env)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.runs):  # interleaved, so load on the machine hits every command alike
            for name, cmd in cmds.items():
                samples[name].append(time_once(cmd, env))
        report(args, cmds, samples, env)


def report(args: argparse.Namespace, cmds: dict[str, list[str]], samples: dict[str, list[float]], env) -> None:

    medians = {name: statistics.median(values) for name, values in samples.items()}
    base_name = next(iter(cmds))
    base = medians[base_name]
    print(f"median of {args.runs} runs (python {sys.version.split()[0]})")
    print(f"{'command':<56} {'median ms':>10} {'ratio':>7}")
    worst = 0.0
    for name, median in medians.items():
        ratio = median / base
        if name != base_name:
            worst = max(worst, ratio)
        print(f"{name:<56} {median * 1000:>10.1f} {ratio:>6.2f}x")
    verdict = "ok" if worst <= TARGET else "OVER TARGET"
    print(f"worst ratio {worst:.2f}x (target <= {TARGET}x): {verdict}")

    if args.importtime:
        for name, cmd in list(cmds.items())[1:]:
            print(f"\nslowest top-level imports of {name} (cumulative ms):")
            for micros, module in slowest_imports(cmd[len(ptools_cmd()) :], env):
                print(f"  {micros / 1000:8.1f}  {module}")


if __name__ == "__main__":
    main()
