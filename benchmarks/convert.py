"""`ptools convert` on a 1 GiB TF bundle vs `cp` of the same bytes and vs the floor, and its peak memory.

Writes a TF1-named bundle with ptools' numpy bundle writer (one 256 MiB Dense kernel, twelve 64 MiB conv
kernels and a few small tensors: real transposes, not copies) into a temp folder, then in the same run,
interleaved (best and median of --repeat runs each; on a shared machine the best is the least disturbed):
- `cp` of the data shard (GNU cp copies inside the kernel: copy_file_range);
- the floor a converter cannot beat: a read + write of the file through user space in Python (16 MiB
  chunks) in a subprocess, and one pass of `numpy.copyto` / torch `copy_` over the same bytes in RAM
  (what touching every byte once costs, with no transposing);
- the transposes alone (every kernel through swap_chunks in RAM), with 1 thread and with the default;
- `ptools convert PREFIX out.safetensors` as a subprocess (time, max peak RSS from wait4).
Targets: time <= 3x cp; peak RSS <= 1.5x the largest tensor + 200 MB.

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
import warnings
from pathlib import Path

import numpy as np

from ptools.checkpoint.tf.writer import TFBundleWriter

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


READ_WRITE = """
import sys
src, dst = sys.argv[1], sys.argv[2]
buf = bytearray(16 << 20)
view = memoryview(buf)
with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as g:
    while n := f.readinto(buf):
        g.write(view[:n])
"""


def ram_copy_seconds(data: Path, repeat: int) -> tuple[float, float]:
    """One pass over the file's bytes in RAM (page cache -> a reused buffer): numpy.copyto and torch copy_."""
    import torch

    src = np.memmap(data, dtype=np.uint8, mode="r")
    chunk = 64 * MiB
    dst = np.empty(chunk, np.uint8)
    dst_t = torch.from_numpy(dst)
    np_times, torch_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for off in range(0, src.size, chunk):
            piece = src[off : off + chunk]
            np.copyto(dst[: piece.size], piece)
        np_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # torch warns that the read-only map is not writable; it is only read
            warnings.simplefilter("ignore", UserWarning)
            for off in range(0, src.size, chunk):
                piece = torch.from_numpy(src[off : off + chunk])
                dst_t[: piece.numel()].copy_(piece)
        torch_times.append(time.perf_counter() - t0)
    del src
    return statistics.median(np_times), statistics.median(torch_times)


def _times(ts: list[float]) -> str:
    return f"best {min(ts):.2f} s, median {statistics.median(ts):.2f} s ({', '.join(f'{t:.2f}' for t in ts)})"


def transpose_seconds(prefix: Path, repeat: int) -> tuple[int, tuple[float, float], tuple[float, float]]:
    """(threads, (wall, CPU) seconds with 1 thread, (wall, CPU) with the default threads), best of `repeat`,
    to transpose every kernel of the bundle (CPU counts all threads of this process)."""
    from ptools.checkpoint.tf.bundle import TFBundleReader
    from ptools.convert import layouts

    reader = TFBundleReader(prefix)
    kernels = [reader.read(t.key) for t in reader.tensors() if len(t.shape) >= 2]
    pool = layouts.BlockPool(6)
    threads = layouts.transpose_threads()
    best = {}
    for n in (1, threads):
        layouts.transpose_threads = lambda n=n: n  # type: ignore[assignment]
        runs = []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            for k in kernels:
                for _block in layouts.swap_chunks(k, pool):
                    pass
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        best[n] = (min(r[0] for r in runs), min(r[1] for r in runs))
    reader.close()
    return threads, best[1], best[threads]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
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
        cp_times, conv_times, rss, cp_cpu, conv_cpu, dd_times, rw_times = [], [], [], [], [], [], []
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
            t, _, _ = run_timed([sys.executable, "-c", READ_WRITE, str(data), str(copy)])
            rw_times.append(t)
            copy.unlink()
            out.unlink(missing_ok=True)  # freeing the old output is not part of either timing
            t, peak, cpu = run_timed([sys.executable, "-m", "ptools", "convert", str(prefix), str(out)])
            conv_times.append(t)
            conv_cpu.append(cpu)
            rss.append(peak)
        peak = max(rss)
        np_t, torch_t = ram_copy_seconds(data, args.repeat)
        tr = transpose_seconds(prefix, args.repeat)
        budget = 1.5 * largest + 200 * 1000**2
        print(f"cp:      {_times(cp_times)}")
        print(f"convert: {_times(conv_times)}")
        print(f"floor:   read+write of the file in Python (16 MiB chunks): {_times(rw_times)}")
        print(f"floor:   one pass over the same bytes in RAM: numpy.copyto {np_t:.2f} s, torch copy_ {torch_t:.2f} s")
        print(
            f"transposes alone, from the page cache (every kernel, swap_chunks): 1 thread {tr[1][0]:.2f} s "
            f"(CPU {tr[1][1]:.2f} s), {tr[0]} threads {tr[2][0]:.2f} s (CPU {tr[2][1]:.2f} s)"
        )
        for label, pick in (("best", min), ("median", statistics.median)):
            cp_t, conv_t, rw = pick(cp_times), pick(conv_times), pick(rw_times)
            floor = rw + np_t
            print(
                f"time ratio ({label} of {args.repeat}): convert/cp {conv_t / cp_t:.2f}x (target <= 3x); "
                f"convert/floor {conv_t / floor:.2f}x (floor = read+write {rw:.2f} s + one RAM pass {np_t:.2f} s); "
                f"floor/cp {floor / cp_t:.2f}x"
            )
        print(f"(context) dd bs=16M, a user-space copy: {_times(dd_times)}")
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
