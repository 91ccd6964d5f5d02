"""Does the README quick start end with a generator that does what it is asked? Judged independently.

The judge is a small CNN classifier (normal + one class per defect label) trained here on *real* images
of a synthetic set made with its own seed: it never sees a generated image, and it shares nothing with
ptools' discriminator. On held-out real pairs (a third seed) the benchmark asks the generator to

  - deface each normal image with the sample's label, at the sample's mask:
      * judged as the requested label          (target >= 90%)
      * IoU of the changed pixels with the mask (target >= 0.5); a pixel is "changed" when
        max over RGB of |out - in| > CHANGE_THRESHOLD on the [-1, 1] scale (0.1 = 12.75 / 255)
  - restore each defect image (uniform normal control map):
      * judged normal                           (target >= 80%)
      * L1 to the paired real normal, as a ratio of the defect image's own L1 to it (target <= 0.8)

per label and overall. The judge's accuracy on the held-out real images is printed as the ceiling.

    python benchmarks/train_quality.py                        # the quick start, seeds 0 and 1, judged
    python benchmarks/train_quality.py --seeds 0 --steps 300  # a shorter proxy run
    python benchmarks/train_quality.py --judge runs/demo      # judge an existing run folder or .pt
    python benchmarks/train_quality.py --set w_pair=0         # a config field changed (a TOML --config)

Training runs the real command (`python -m ptools train --preset small --steps N --out DIR --seed S`)
in a subprocess and reports its wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptools.data import DefectDataset, synthesize

SIZE = 64
JUDGE_SEED = 424242  # the judge's training images
EVAL_SEED = 777  # held-out pairs the generator is evaluated on (the quick start trains on seed 0 / 1)
CHANGE_THRESHOLD = 0.1
TARGETS = {"deface_label": 0.90, "restore_normal": 0.80, "iou": 0.5, "l1_ratio": 0.8}
JUDGE_VERSION = 2  # bump when the judge's recipe changes (the cache key)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ptools-bench"
QUICK_START_STEPS = 1500


class Judge(nn.Module):
    """Conv stages (BN, ReLU) at 64, 32, 16, 8 px and a head on global average + max pooling (max sees
    thin cracks). Small on purpose: it trains in a minute or two on one CPU thread."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.MaxPool2d(2),
            *block(4 * w, 8 * w),
        )
        self.head = nn.Linear(16 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))


def real_images(root: Path, labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every defect image (class = its label's channel) and every normal image (class 0) of a seed-layout set."""
    data = DefectDataset(root, image_size=SIZE, labels=labels)
    xs, ys = [], []
    for i in range(len(data)):
        s = data[(i, 0)]
        xs += [s["defect"], s["normal"]]
        ys += [int(s["defect_labels"].argmax()), 0]
    return torch.stack(xs), torch.tensor(ys)


def train_judge(labels: list[str], n: int = 1200, epochs: int = 8, work: Path | None = None) -> Judge:
    """Train (or load from the cache) the judge on real images of a set made with JUDGE_SEED."""
    key = hashlib.sha256(json.dumps([JUDGE_VERSION, labels, n, epochs, JUDGE_SEED, SIZE]).encode()).hexdigest()[:16]
    cached = CACHE / f"judge-{key}.pt"
    judge = Judge(len(labels) + 1)
    if cached.is_file():
        judge.load_state_dict(torch.load(cached, weights_only=True))
        return judge.eval()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        synthesize(Path(tmp) / "judge", n=n, size=SIZE, labels=labels, seed=JUDGE_SEED)
        x, y = real_images(Path(tmp) / "judge", labels)
    # Class weights: half the images are normal; each class counts the same in the loss.
    counts = torch.bincount(y, minlength=len(labels) + 1).float()
    weight = counts.sum() / (len(counts) * counts)
    gen = torch.Generator().manual_seed(JUDGE_SEED)
    torch.manual_seed(JUDGE_SEED)
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
    batches = epochs * (len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=batches)
    judge.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - 63, 64):
            idx = order[start : start + 64]
            xb = x[idx]
            # Flips and 90-degree turns: defects have no preferred orientation.
            if torch.rand(1, generator=gen).item() < 0.5:
                xb = xb.flip(3)
            xb = torch.rot90(xb, int(torch.randint(4, (1,), generator=gen)), dims=(2, 3))
            loss = F.cross_entropy(judge(xb), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    judge.eval()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(judge.state_dict(), cached)
    print(f"judge trained on {len(x)} real images in {time.perf_counter() - t0:.0f}s (cached: {cached})")
    return judge


@torch.no_grad()
def judge_run(
    checkpoint: Path, eval_root: Path, judge: Judge, batch: int = 50, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per label (and "all"): the four measures, plus the judge on the real images of the same pairs."""
    from ptools.defectgan.generate import load_generator

    g, config = load_generator(checkpoint, "cpu")
    data = DefectDataset(eval_root, image_size=SIZE, labels=config.labels)
    sums: dict[str, dict[str, float]] = {}
    torch.manual_seed(seed)
    for start in range(0, len(data), batch):
        items = [data[(i, 0)] for i in range(start, min(start + batch, len(data)))]
        x_n = torch.stack([s["normal"] for s in items])
        x_d = torch.stack([s["defect"] for s in items])
        mask = torch.stack([s["mask"] for s in items])[:, 0] > 0.5
        control = torch.stack([s["control"] for s in items])
        label = torch.stack([s["defect_labels"] for s in items]).argmax(1)
        normal_map = torch.zeros_like(control)
        normal_map[:, 0] = 1
        defaced, _ = g(x_n, control)
        restored, _ = g(x_d, normal_map)
        changed = (defaced - x_n).abs().amax(1) > CHANGE_THRESHOLD
        changed_r = (restored - x_d).abs().amax(1) > CHANGE_THRESHOLD
        iou = (changed & mask).flatten(1).sum(1) / (changed | mask).flatten(1).sum(1).clamp_min(1)
        iou_r = (changed_r & mask).flatten(1).sum(1) / (changed_r | mask).flatten(1).sum(1).clamp_min(1)
        per = {
            "deface_label": (judge(defaced).argmax(1) == label).float(),
            "restore_normal": (judge(restored).argmax(1) == 0).float(),
            "iou": iou.float(),
            "restore_iou": iou_r.float(),
            "l1_restored": (restored - x_n).abs().mean(dim=(1, 2, 3)),
            "l1_defect": (x_d - x_n).abs().mean(dim=(1, 2, 3)),
            "real_defect_ok": (judge(x_d).argmax(1) == label).float(),
            "real_normal_ok": (judge(x_n).argmax(1) == 0).float(),
        }
        for i in range(len(items)):
            for group in (config.labels[int(label[i]) - 1], "all"):
                acc = sums.setdefault(group, {"n": 0.0})
                acc["n"] += 1
                for k, v in per.items():
                    acc[k] = acc.get(k, 0.0) + float(v[i])
    out: dict[str, dict[str, float]] = {}
    for group, acc in sums.items():
        n = acc.pop("n")
        row = {k: v / n for k, v in acc.items()}
        row["l1_ratio"] = row["l1_restored"] / row["l1_defect"]
        row["n"] = n
        out[group] = row
    return out


COLUMNS = (
    ("deface_label", "defaced=label", "{:.0%}"),
    ("restore_normal", "restored=normal", "{:.0%}"),
    ("iou", "IoU(changed,mask)", "{:.2f}"),
    ("l1_ratio", "L1 restored/defect", "{:.2f}"),
    ("restore_iou", "restore IoU", "{:.2f}"),
    ("real_defect_ok", "judge real defect", "{:.0%}"),
    ("real_normal_ok", "judge real normal", "{:.0%}"),
)


def table(results: dict[str, dict[str, float]]) -> str:
    head = f"  {'label':8s} {'n':>4s} " + " ".join(f"{title:>18s}" for _, title, _ in COLUMNS)
    lines = [head]
    for group in sorted(results, key=lambda g: (g == "all", g)):
        row = results[group]
        cells = " ".join(f"{fmt.format(row[k]):>18s}" for k, _, fmt in COLUMNS)
        lines.append(f"  {group:8s} {int(row['n']):4d} {cells}")
    return "\n".join(lines)


def verdict(all_row: dict[str, float]) -> str:
    checks = [
        f"deface {all_row['deface_label']:.0%} >= 90%: {all_row['deface_label'] >= TARGETS['deface_label']}",
        f"restore {all_row['restore_normal']:.0%} >= 80%: {all_row['restore_normal'] >= TARGETS['restore_normal']}",
        f"IoU {all_row['iou']:.2f} >= 0.5: {all_row['iou'] >= TARGETS['iou']}",
        f"L1 ratio {all_row['l1_ratio']:.2f} <= 0.8: {all_row['l1_ratio'] <= TARGETS['l1_ratio']}",
    ]
    return "  targets: " + "; ".join(checks)


def checkpoint_labels(checkpoint: Path) -> list[str]:
    """The label order of a checkpoint (read weights_only), so the judge's classes match its channels."""
    from ptools.defectgan.checkpoint import load_checkpoint

    return list(load_checkpoint(checkpoint)["config"]["labels"])


def find_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in (path / "checkpoints" / "latest.pt", path / "latest.pt"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{path}: no checkpoint (a .pt file, or a run folder with checkpoints/latest.pt)")


def quick_start_command(out: Path, steps: int, seed: int, overrides: dict[str, Any]) -> list[str]:
    """The README's command (plus --seed, and a TOML --config for `--set` overrides)."""
    cmd = [sys.executable, "-m", "ptools", "train", "--preset", "small", "--steps", str(steps), "--out", str(out)]
    cmd += ["--seed", str(seed), "--device", "cpu", "--force"]
    if overrides:
        toml = out.parent / f"{out.name}.overrides.toml"
        toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in overrides.items()))
        cmd += ["--config", str(toml)]
    return cmd


def run_quick_starts(commands: list[list[str]], parallel: bool) -> list[tuple[float, float]]:
    """Run the commands (all at once with `parallel`: one torch thread each, one core each on 2 cores);
    returns each one's wall time and CPU time (user + sys of it and its data workers) in seconds.

    On a shared machine the CPU time is the better estimate of the wall time on free cores.
    """
    times: list[tuple[float, float]] = []
    batches = [commands] if parallel else [[c] for c in commands]
    for batch in batches:
        procs = []
        for cmd in batch:
            print("$ " + " ".join(cmd), flush=True)
            procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL), time.perf_counter()))
        for proc, t0 in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                raise SystemExit(f"{' '.join(proc.args)} exited with {proc.returncode}")
            times.append((time.perf_counter() - t0, usage.ru_utime + usage.ru_stime))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", type=Path, nargs="*", default=None, metavar="RUN", help="judge these runs/.pt only")
    parser.add_argument("--steps", type=int, default=QUICK_START_STEPS, help="--steps of the quick start")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (one run each)")
    parser.add_argument("--eval-n", type=int, default=200, help="held-out pairs (labels in turn)")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"), help="where the runs are written")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--serial", action="store_true", help="train the seeds one after the other")
    args = parser.parse_args()
    torch.set_num_threads(1)

    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    runs: list[tuple[str, Path, tuple[float, float] | None]] = []
    if args.judge is not None:
        runs = [(str(p), find_checkpoint(p), None) for p in args.judge]
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        dirs = [args.out / f"seed{seed}" for seed in args.seeds]
        commands = [quick_start_command(args.out / f"seed{s}", args.steps, s, overrides) for s in args.seeds]
        all_times = run_quick_starts(commands, parallel=not args.serial)
        for seed, run_dir, times in zip(args.seeds, dirs, all_times, strict=True):
            runs.append((f"seed {seed}", find_checkpoint(run_dir), times))

    labels = checkpoint_labels(runs[0][1])
    judge = train_judge(labels)
    report: dict[str, Any] = {"threshold": CHANGE_THRESHOLD, "targets": TARGETS, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        eval_root = synthesize(Path(tmp) / "eval", n=args.eval_n, size=SIZE, labels=labels, seed=EVAL_SEED)
        mean: dict[str, dict[str, float]] = {}
        for name, ckpt, times in runs:
            results = judge_run(ckpt, eval_root, judge)
            timing = f", wall {times[0] / 60:.1f} min, CPU {times[1] / 60:.1f} min" if times is not None else ""
            print(f"\n{name}: {ckpt}{timing}")
            print(table(results))
            print(verdict(results["all"]))
            wall_s, cpu_s = times if times is not None else (None, None)
            entry = {"name": name, "checkpoint": str(ckpt), "wall_s": wall_s, "cpu_s": cpu_s, "results": results}
            report["runs"].append(entry)
            for group, row in results.items():
                acc = mean.setdefault(group, {k: 0.0 for k in row})
                for k, v in row.items():
                    acc[k] += v / len(runs)
        if len(runs) > 1:
            print(f"\nmean of {len(runs)} runs")
            print(table(mean))
            print(verdict(mean["all"]))
            report["mean"] = mean
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
