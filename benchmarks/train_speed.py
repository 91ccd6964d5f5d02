"""Training speed: `ptools train`'s loop vs a plain fp32 eager loop over the same nets, in one run.

CPU (always): steps/s at 64 px, batch 4, for
  - ptools: the real trainer (data loader with workers, metrics.csv, progress, LR schedule), timed
    between consecutive iterations through its on_step hook, so data waiting and logging are included;
  - plain: the same G/D/losses/optimisers in a bare loop over one preloaded batch (no data, no logging),
    fp32, eager: the floor any wrapper adds to.
  It also prints the data-loading share of ptools' step time (time blocked on the loader / step time).
GPU (only when CUDA is available): the same comparison at 128 px, batch 16, with ptools' bf16 autocast +
  channels_last (+ torch.compile with --compile) against plain fp32 eager, and the largest batch that fits.

Runs alternate (ptools, plain, ptools, plain) and the medians are compared, so load changes on a shared
machine hit both sides.

    python benchmarks/train_speed.py                  # reduced widths (the quality benchmark's)
    python benchmarks/train_speed.py --paper-widths   # the paper's widths (slow on CPU)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ptools.data import DefectDataset, synthesize
from ptools.defectgan import losses
from ptools.defectgan.config import DefectGANConfig
from ptools.defectgan.models import build_models
from ptools.defectgan.presets import preset_fields
from ptools.defectgan.trainer import StepInfo, train

# The `--preset small` widths (its 64 px image size is what this benchmark uses anyway).
REDUCED = {k: v for k, v in preset_fields("small").items() if k != "image_size"}
# The plain loop computes the paper's losses only: the ptools side is run without the additions (mask and
# pair supervision, the generator EMA), so both do the same work and the ratio is the loop's overhead.
SAME_WORK = {"w_mask": 0.0, "w_pair": 0.0, "ema": 0.0}


def ptools_step_times(
    config: DefectGANConfig, data: Path, run_dir: Path, device: str, warmup: int
) -> tuple[list[float], float]:
    """Per-iteration wall times of the real trainer after `warmup` iterations, and its data share."""
    stamps: list[float] = []
    rows: list[dict] = []

    def stamp(info: StepInfo) -> None:
        if torch.cuda.is_available() and device != "cpu":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        rows.append(info.row)

    train(config, data_root=data, run_dir=run_dir, device=device, progress=False, on_step=stamp)
    times = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    data_s = sum(r["data_s"] for r in rows[warmup + 1 :])
    return times, data_s / sum(times)


def plain_step_times(
    config: DefectGANConfig, batch: dict, device: torch.device, steps: int, warmup: int
) -> list[float]:
    """The same computation as the trainer's iteration, fp32 eager, on one preloaded batch."""
    torch.manual_seed(0)
    g, d = build_models(config, device)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr_d, betas=(config.beta1, config.beta2))
    x_n, x_d, a_d = (batch[k].to(device) for k in ("normal", "defect", "control"))
    y_d, y_n = batch["defect_labels"].to(device), batch["normal_labels"].to(device)
    a_n = torch.zeros_like(a_d)
    a_n[:, 0] = 1
    B = x_n.shape[0]
    x_in, a_fwd, a_back = torch.cat([x_n, x_d]), torch.cat([a_d, a_n]), torch.cat([a_n, a_d])
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            fake, _ = g(x_in, a_fwd)
        src, cls = d(torch.cat([x_n, x_d, fake[:B], fake[B:]]))
        gp = losses.gradient_penalty(d, torch.cat([x_d, x_n]), torch.cat([fake[:B], fake[B:]]))
        d_cls = losses.classification(cls[: 2 * B], torch.cat([y_n, y_d]))
        d_loss = losses.d_adversarial(src[: 2 * B], src[2 * B :]) + 2 * d_cls + 10 * gp
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if (step + 1) % config.d_steps == 0:
            d.requires_grad_(False)
            out, m1 = g(x_in, a_fwd)
            rec, m2 = g(out, a_back)
            src, cls = d(out)
            g_loss = (
                losses.g_adversarial(src)
                + 5 * losses.classification(cls, torch.cat([y_d, y_n]))
                + 5 * losses.cycle(rec, x_in)
                + 5 * losses.map_cycle(m1, m2)
                + losses.sparsity(torch.cat([m1, m2]))
            )
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d.requires_grad_(True)
        torch.stack([d_loss.detach()]).tolist()  # the trainer syncs once per step for its metrics too
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def compare(config: DefectGANConfig, data: Path, work: Path, device: str, steps: int, rounds: int) -> dict[str, float]:
    warmup = config.d_steps  # whole D/G cycles on both sides
    cfg = DefectGANConfig(**{**config.to_dict(), "steps": warmup + steps + 1})
    dataset = DefectDataset(data, image_size=cfg.image_size)
    items = [dataset[(i, 0)] for i in range(cfg.batch_size)]
    batch = {
        k: torch.stack([s[k] for s in items]) for k in ("normal", "defect", "control", "defect_labels", "normal_labels")
    }
    cfg_plain = DefectGANConfig(**{**cfg.to_dict(), "labels": list(dataset.labels)})
    ours, plain, shares = [], [], []
    for r in range(rounds):
        times, share = ptools_step_times(cfg, data, work / f"run{r}", device, warmup)
        ours.append(sum(times) / len(times))
        shares.append(share)
        times = plain_step_times(cfg_plain, batch, torch.device(device), steps, warmup)
        plain.append(sum(times) / len(times))
    return {
        "ptools_steps_s": 1 / statistics.median(ours),
        "plain_steps_s": 1 / statistics.median(plain),
        "data_share": statistics.median(shares),
    }


def max_batch(config: DefectGANConfig, data: Path, work: Path, device: str) -> int:
    """Largest power-of-two batch whose training iteration fits in GPU memory (bf16 trainer)."""
    best, batch = 0, 16
    while batch <= 1024:
        try:
            cfg = DefectGANConfig(**{**config.to_dict(), "batch_size": batch, "steps": config.d_steps})
            ptools_step_times(cfg, data, work / f"mb{batch}", device, 0)
            best, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed iterations per round (after a warm-up cycle)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--paper-widths", action="store_true")
    parser.add_argument("--compile", action="store_true", help="GPU: also torch.compile the ptools side")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU comparison (benchmarks/gpu_check.sh)")
    args = parser.parse_args()
    widths = {} if args.paper_widths else REDUCED
    base = {"batch_size": 4, "image_size": 64, "workers": args.workers, "sample_every": 0, "ckpt_every": 0}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        which = "paper widths" if args.paper_widths else "reduced widths (G 16, D 16 x 4)"
        if not args.gpu_only:
            synthesize(work / "data64", n=64, size=64, seed=0)
            cpu_cfg = DefectGANConfig(**{**base, **widths, **SAME_WORK}, amp="off").validate()
            cpu = compare(cpu_cfg, work / "data64", work, "cpu", args.steps, args.rounds)
            print(f"CPU, 64 px, batch 4, {which}, {torch.get_num_threads()} threads, {args.workers} loader workers:")
            print(f"  ptools train loop : {cpu['ptools_steps_s']:.3f} step/s")
            print(f"  plain fp32 eager  : {cpu['plain_steps_s']:.3f} step/s")
            print(f"  ratio ptools/plain: {cpu['ptools_steps_s'] / cpu['plain_steps_s']:.3f}")
            print(f"  data-loading share of ptools step time: {cpu['data_share']:.1%} (target < 10%)")

        if not torch.cuda.is_available():
            print("GPU: no CUDA device in this environment; GPU figures skipped.")
            return
        synthesize(work / "data128", n=64, size=128, seed=0)
        gpu_base = {**base, **widths, **SAME_WORK, "image_size": 128, "batch_size": 16}
        fast = DefectGANConfig(**gpu_base, amp="bf16", channels_last=True, compile=args.compile).validate()
        gpu = compare(fast, work / "data128", work, "cuda", args.steps, args.rounds)
        name = torch.cuda.get_device_name()
        extra = " + compile" if args.compile else ""
        print(f"GPU {name}, 128 px, batch 16, {which}:")
        print(f"  ptools bf16 + channels_last{extra}: {gpu['ptools_steps_s']:.2f} step/s")
        print(f"  plain fp32 eager                 : {gpu['plain_steps_s']:.2f} step/s")
        print(f"  ratio                            : {gpu['ptools_steps_s'] / gpu['plain_steps_s']:.2f}")
        print(f"  data-loading share               : {gpu['data_share']:.1%}")
        print(f"  max batch at 128 px (bf16)       : {max_batch(fast, work / 'data128', work, 'cuda')}")


if __name__ == "__main__":
    main()
