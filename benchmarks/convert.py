"""`ptools convert` on a 1 GiB TF bundle vs `cp` of the same bytes, and its peak memory.

Writes a TF1-named bundle with ptools' numpy bundle writer (one 256 MiB Dense kernel, twelve 64 MiB conv
kernels and a few small tensors: real transposes, not copies) into a temp folder, then in the same run:
`cp` of the data shard (median of --repeat runs) and `ptools convert PREFIX out.safetensors` as a
subprocess (median time, max peak RSS from wait4). Targets: time <= 3x cp; peak RSS <= 1.5x the largest
tensor + 200 MB.

    python benchmarks/convert.py [--repeat 3] [--keep DIR]
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

import numpy as np

from ptools.checkpoint.tf_bundle_writer import TFBundleWriter

MiB = 1 << 20


def write_bundle(prefix: Path) -> tuple[int, int]:
    """Returns (total bytes, largest tensor bytes)."""
    rng = np.random.default_rng(0)
    total = largest = 0
    with TFBundleWriter(prefix) as w:
        big = rng.standard_normal((8192, 8192), dtype=np.float32)  # 256 MiB Dense kernel -> transpose
        w.add("model/head/dense/kernel", big)
        total += big.nbytes
        largest = big.nbytes
        del big
        for i in range(12):  # 64 MiB conv kernels (3, 3, 1024, 1820) -> permute(3,2,0,1)
            k = rng.standard_normal((3, 3, 1024, 1820), dtype=np.float32)[..., :]
            w.add(f"model/block{i}/conv2d/kernel", k)
            w.add(f"model/block{i}/conv2d/bias", np.zeros(1820, np.float32))
            total += k.nbytes + 1820 * 4
            del k
    return total, largest


def run_timed(cmd: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds (user + system) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="use/keep this folder instead of a temp one")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ptools-bench-convert-"))
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / "model.ckpt"
    try:
        t0 = time.perf_counter()
        total, largest = write_bundle(prefix)
        print(
            f"bundle: {total / MiB:.0f} MiB, largest tensor {largest / MiB:.0f} MiB "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        data = Path(f"{prefix}.data-00000-of-00001")
        out = folder / "out.safetensors"
        cp_times, conv_times, rss, cp_cpu, conv_cpu, dd_times = [], [], [], [], [], []
        for _ in range(args.repeat):  # interleaved, so both see the same page cache and machine load
            copy = folder / "copy.bin"
            t, _, cpu = run_timed(["cp", str(data), str(copy)])
            cp_times.append(t)
            cp_cpu.append(cpu)
            copy.unlink()
            # For context: GNU cp copies in the kernel (copy_file_range); dd goes through user space as we do.
            t, _, _ = run_timed(["dd", f"if={data}", f"of={copy}", "bs=16M", "status=none"])
            dd_times.append(t)
            copy.unlink()
            out.unlink(missing_ok=True)  # freeing the old output is not part of either timing
            t, peak, cpu = run_timed([sys.executable, "-m", "ptools", "convert", str(prefix), str(out)])
            conv_times.append(t)
            conv_cpu.append(cpu)
            rss.append(peak)
        cp_t, conv_t, peak = statistics.median(cp_times), statistics.median(conv_times), max(rss)
        budget = 1.5 * largest + 200 * 1000**2
        print(f"cp:      median {cp_t:.2f} s  ({', '.join(f'{t:.2f}' for t in cp_times)})")
        print(f"convert: median {conv_t:.2f} s  ({', '.join(f'{t:.2f}' for t in conv_times)})")
        print(f"time ratio convert/cp: {conv_t / cp_t:.2f}x (target <= 3x)")
        dd_t = statistics.median(dd_times)
        print(f"(context) dd bs=16M, a user-space copy: median {dd_t:.2f} s; convert/dd {conv_t / dd_t:.2f}x")
        c_cp, c_conv = statistics.median(cp_cpu), statistics.median(conv_cpu)
        print(
            f"CPU seconds (user+sys, less sensitive to a busy machine): cp {c_cp:.2f}, convert {c_conv:.2f} "
            f"({c_conv / max(c_cp, 1e-9):.2f}x); load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"peak RSS: {peak / MiB:.0f} MiB = {peak / budget:.2f}x the budget 1.5 x largest + 200 MB "
            f"({budget / MiB:.0f} MiB; target <= 1x)"
        )
        print(f"output: {out.stat().st_size / MiB:.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
