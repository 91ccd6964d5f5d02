"""Benchmark `ptools inspect` against a fresh `torch.load(weights_only=True, mmap=True)` on the same files.

Generates, in a temporary folder under /tmp (removed at the end), checkpoints shaped like a training
checkpoint: {"model": state_dict, "optimizer": Adam state (step, exp_avg, exp_avg_sq per parameter),
"epoch"} with ~1,000 tensors and ~1 GiB of data, saved as .pt and .safetensors (flattened keys); then the
same tensor count with twice the bytes, and twice the tensors with the same bytes. Every command runs in a
fresh interpreter (as users run them); times are medians, peak RSS comes from wait4() of each child.

    python benchmarks/inspect_speed.py            # the sizes from the issue (needs ~7 GiB of free disk in /tmp)
    python benchmarks/inspect_speed.py --scale 0.1
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

GIB = 1 << 30
# Children run as an installed tool would: with cached bytecode (some CI shells disable writing it, which
# would charge ptools, and not torch, whose files are precompiled in site-packages, for compiling sources).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def make_checkpoint(folder: Path, name: str, n_layers: int, total_bytes: int) -> tuple[Path, Path, int]:
    """n_layers Linear-like layers (weight + bias); model + exp_avg + exp_avg_sq hold total_bytes."""
    import torch
    from safetensors.torch import save_file

    width = 1024
    param_elems = total_bytes // 4 // 3  # float32, three copies (param, exp_avg, exp_avg_sq)
    rows = max(1, param_elems // n_layers // (width + 1))
    torch.manual_seed(0)
    model: dict[str, torch.Tensor] = {}
    for i in range(n_layers):
        model[f"blocks.{i}.proj.weight"] = torch.empty(rows, width).normal_()
        model[f"blocks.{i}.proj.bias"] = torch.zeros(rows)
    state = {
        i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        for i, p in enumerate(model.values())
    }
    groups = [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": list(range(len(model)))}]
    ckpt = {"model": model, "optimizer": {"state": state, "param_groups": groups}, "epoch": 7}
    pt = folder / f"{name}.pt"
    torch.save(ckpt, pt)
    flat = {f"model.{k}": v for k, v in model.items()}
    for i, s in state.items():
        flat.update({f"optimizer.state.{i}.{k}": v for k, v in s.items()})
    st = folder / f"{name}.safetensors"
    save_file(flat, str(st))
    return pt, st, len(flat)


def generate(folder: Path, name: str, n_layers: int, total_bytes: int) -> tuple[Path, Path, int]:
    """Write the files from a child process: the parent must stay small, because a forked child's peak
    RSS (what wait4 reports) starts from the parent's size."""
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if not p.endswith('benchmarks')];"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "import importlib.util as u; spec = u.spec_from_file_location('bench', sys.argv[1]);"
        "m = u.module_from_spec(spec); spec.loader.exec_module(m);"
        "pt, st, n = m.make_checkpoint(m.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]));"
        "print(n)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, __file__, str(folder), name, str(n_layers), str(total_bytes)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return folder / f"{name}.pt", folder / f"{name}.safetensors", int(out.strip().splitlines()[-1])


def run(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss / 1024  # Linux reports KiB


def measure_interleaved(cmds: list[list[str]], repeats: int) -> list[tuple[float, float]]:
    """Median time and max peak RSS per command, running them in rounds (one of each per round) so a
    busy machine slows every command alike instead of whichever happened to run during the busy spell."""
    for cmd in cmds:
        run(cmd)  # warm the page cache and the interpreter's files
    samples: list[list[tuple[float, float]]] = [[] for _ in cmds]
    for _ in range(repeats):
        for i, cmd in enumerate(cmds):
            samples[i].append(run(cmd))
    return [(statistics.median(t for t, _ in s), max(r for _, r in s)) for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the data size (1.0 = 1 GiB)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    python = sys.executable
    ptools = [python, "-m", "ptools", "inspect"]
    torch_load = [python, "-c", "import sys, torch; torch.load(sys.argv[1], weights_only=True, mmap=True)"]
    st_load = [python, "-c", "import sys; from safetensors.torch import load_file; load_file(sys.argv[1])"]
    base_bytes = int(GIB * args.scale)
    # 125 layers x (weight, bias) = 250 parameters -> 250 model tensors + 750 optimizer tensors = 1,000.
    configs = [("1x", 125, base_bytes), ("2x bytes", 125, 2 * base_bytes), ("2x tensors", 250, base_bytes)]

    tmp = Path(tempfile.mkdtemp(prefix="ptools-bench-", dir="/tmp"))
    rows = []
    try:
        for label, layers, nbytes in configs:
            print(f"generating {label}: {layers * 8} tensors, {nbytes / GIB:.2f} GiB ...", file=sys.stderr)
            pt, st, n = generate(tmp, label.replace(" ", "_"), layers, nbytes)
            size = pt.stat().st_size
            (t_pt, rss_pt), (t_st, rss_st), (t_torch, rss_torch), (t_stl, rss_stl) = measure_interleaved(
                [[*ptools, str(pt)], [*ptools, str(st)], [*torch_load, str(pt)], [*st_load, str(st)]], args.repeats
            )
            rows.append((label, n, size, t_pt, rss_pt, t_st, rss_st, t_torch, rss_torch, t_stl, rss_stl))
            pt.unlink()
            st.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        "\nptools inspect vs a fresh python -c 'torch.load(f, weights_only=True, mmap=True)'"
        f" (median of {args.repeats})"
    )
    head = (
        f"{'file':<11}{'tensors':>8}{'size':>10}  {'inspect .pt':>12}{'RSS':>8}  {'inspect .st':>12}{'RSS':>8}"
        f"  {'torch.load':>11}{'RSS':>8}  {'st load_file':>13}{'RSS':>8}  {'speedup':>8}"
    )
    print(head)
    for label, n, size, t_pt, rss_pt, t_st, rss_st, t_torch, rss_torch, t_stl, rss_stl in rows:
        print(
            f"{label:<11}{n:>8}{size / GIB:>8.2f}Gi  {t_pt:>11.3f}s{rss_pt:>6.0f}Mi  {t_st:>11.3f}s{rss_st:>6.0f}Mi"
            f"  {t_torch:>10.3f}s{rss_torch:>6.0f}Mi  {t_stl:>12.3f}s{rss_stl:>6.0f}Mi  {t_torch / t_pt:>7.1f}x"
        )
    one, two_b, two_t = rows
    print("\nratios")
    print(f"  speedup over torch.load (.pt, 1x):        {one[7] / one[3]:.1f}x   (target >= 5x)")
    print(
        f"  peak RSS of inspect (max over runs):      {max(r[4] for r in rows):.0f} MiB .pt, "
        f"{max(r[6] for r in rows):.0f} MiB .safetensors   (target < 150 MiB)"
    )
    print(f"  inspect time, 2x bytes / 1x (.pt):        {two_b[3] / one[3]:.2f}   (flat in bytes: ~1.0)")
    print(f"  inspect time, 2x bytes / 1x (.st):        {two_b[5] / one[5]:.2f}")
    print(f"  inspect time, 2x tensors / 1x (.pt):      {two_t[3] / one[3]:.2f}   (only the count can move it)")
    print(f"  torch.load time, 2x bytes / 1x:           {two_b[7] / one[7]:.2f}")


if __name__ == "__main__":
    main()
