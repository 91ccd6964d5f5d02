"""Train DefectGAN: the whole loop in one readable function, nanoGPT-style (setup, resume, loop, save).

One step = one G update, preceded by `d_steps` D updates, each on a fresh batch (StarGAN's n_critic).
A batch holds paired normal images x_n, defect images x_d, and the defect's control map A. G runs both
directions at once on a doubled batch: defacement (x_n, A) -> fake defect, restoration (x_d, A_normal)
-> fake normal, then each result is translated back for the cycle and map-cycle losses. Where the data
has masks and pairs, the map is supervised by the mask and each result by its real partner.
"""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ptools.defectgan import losses
from ptools.defectgan.checkpoint import (
    CKPT_DIR,
    INTERRUPTED,
    LATEST,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    rotate,
    save_checkpoint,
    step_name,
)
from ptools.defectgan.config import DefectGANConfig, cpu_threads, diff_fields, to_toml
from ptools.defectgan.models import build_models
from ptools.defectgan.monitor import (
    SAMPLE_COLUMNS,
    MetricsLog,
    Progress,
    colorize_control,
    require_tensorboard,
    save_sample_grid,
)
from ptools.defectgan.rundir import write_marker
from ptools.devices import resolve_device
from ptools.errors import PtoolsError
from ptools.files import atomic_path

SAMPLE_SEED = 1234  # the fixed noise of the sample grids
SAMPLE_MAX_ROWS = 12  # one grid row per label, up to this many labels


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    step: int
    interrupted: bool
    checkpoint: Path | None
    losses: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    steps_per_s: float = 0.0
    device: str = "cpu"
    world_size: int = 1
    amp: str = "off"


@dataclass
class StepInfo:
    """What an `on_step` callback sees after each completed iteration (the raw, unwrapped modules)."""

    step: int
    row: dict[str, Any]
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    rank: int
    generator_ema: torch.nn.Module | None = None  # the averaged G (config.ema > 0), else None


def lr_at(step: int, total: int, lr: float, lr_end: float, schedule: str) -> float:
    """Learning rate for iteration `step` of `total`: lr at 0, lr_end at the last step."""
    if schedule == "constant" or total <= 1:
        return lr
    progress = min(step / (total - 1), 1.0)
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr_end + (lr - lr_end) * shape


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, saves interrupted.pt and returns.

    A second Ctrl-C raises KeyboardInterrupt at once (for a step that hangs).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32: auto = bf16 on CUDA, off elsewhere."""
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if mode == "off":
        return None
    if mode == "fp16":
        if device.type != "cuda":
            raise PtoolsError(f"--amp fp16 needs a CUDA device (running on {device})", hint="use --amp bf16 or off")
        return torch.float16
    return torch.bfloat16


def check_data(root: Path) -> None:
    """Run `ptools dataset check` on the data; errors stop the run before anything is built."""
    from ptools.data import check_dataset

    report = check_dataset(root)
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        shown = "; ".join(f"{p.kind}: {p.path}: {p.detail}" for p in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise PtoolsError(
            f"{root}: the dataset has {len(errors)} problem(s): {shown}{more}",
            hint=f"run `ptools dataset check {root}` for the full list",
        )


def check_resume_config(state: dict[str, Any], config: DefectGANConfig, source: str | Path) -> None:
    """Refuse to resume a checkpoint with settings that change the model or the run (one line, all of them)."""
    if not config.labels:  # a config built without the data takes the checkpoint's label order
        config.labels = list(state["config"].get("labels", []))
    differing = diff_fields(state["config"], config)
    if differing:
        raise PtoolsError(
            f"{source}: checkpoint was trained with another config: " + "; ".join(differing),
            hint="resume with the same settings (steps, logging and runtime flags may change)",
        )


def init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Joins the process group when WORLD_SIZE > 1: NCCL on CUDA, gloo on CPU; each rank takes the GPU
    of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return 0, 1, dev
    rank = int(os.environ.get("RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def train(
    config: DefectGANConfig,
    *,
    data_root: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    resume_from: str | Path | dict[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
    data_checked: bool = False,
) -> TrainResult:
    """Train (or resume) a DefectGAN run in `run_dir`; returns where it stopped and the last losses.

    `resume_from` is a checkpoint path or an already loaded checkpoint dict. `on_step` is called on
    every rank after each iteration (benchmarks use it to measure the models as training goes).
    `data_checked`: the caller already ran the dataset check on `data_root` (the CLI does, before it writes).
    """
    run_dir, data_root = Path(run_dir), Path(data_root)
    own_group = not dist.is_initialized()
    rank, world, dev = init_distributed(device)
    own_group = own_group and dist.is_initialized()
    master = rank == 0
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    try:
        result = _train(
            config, data_root, run_dir, dev, resume_from, progress and master, rank, world, on_step, data_checked
        )
        if own_group:
            # Leave together: rank 0 still writes the last checkpoint and samples when the others are done,
            # and a rank that tears gloo down and exits while its peer is busy was seen to abort (SIGABRT,
            # "terminate called without an active exception") in its interpreter shutdown.
            dist.barrier()
        return result
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.utils.deterministic.fill_uninitialized_memory = fill_before
        if own_group:
            dist.destroy_process_group()


def _train(
    config: DefectGANConfig,
    data_root: Path,
    run_dir: Path,
    dev: torch.device,
    resume_from: str | Path | dict[str, Any] | None,
    show_progress: bool,
    rank: int,
    world: int,
    on_step: Callable[[StepInfo], None] | None,
    data_checked: bool = False,
) -> TrainResult:
    from ptools.data import DefectDataset, denormalize, make_loader
    from ptools.data.preview import label_colours

    ddp = world > 1
    master = rank == 0
    cuda = dev.type == "cuda"

    # ---- resume state and config check: refuse a checkpoint of another model ----
    state = load_checkpoint(resume_from) if isinstance(resume_from, (str, Path)) else resume_from
    if state is not None:
        check_resume_config(state, config, resume_from if isinstance(resume_from, (str, Path)) else "--resume")

    if config.log == "tensorboard":
        require_tensorboard()

    # ---- determinism ----
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Filling every torch.empty with NaN (the deterministic-mode default) costs ~4x on small CPU models
        # and changes no result: our kernels write every element they allocate.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    elif cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data: checked first, so a broken dataset fails before any model is built ----
    if not data_checked:
        check_data(data_root)
    dataset = DefectDataset(data_root, image_size=config.image_size, seed=config.seed, labels=config.labels or None)
    if not config.labels:
        config.labels = list(dataset.labels)
    loader = make_loader(
        dataset, batch_size=config.batch_size, workers=config.workers, shuffle=True, seed=config.seed, drop_last=True
    )
    sampler = loader.sampler
    if sampler.num_samples < config.batch_size:
        raise PtoolsError(
            f"{data_root}: {len(dataset)} samples over {world} process(es) cannot fill a batch of {config.batch_size}",
            hint="lower --batch-size or add samples",
        )

    # CPU threads as the config says (the small preset: the cores idle at the start, shared among the
    # processes of a CPU torchrun, which all measure at the same moment; see cpu_threads).
    if dev.type == "cpu" and config.threads:
        threads = cpu_threads(config.threads)
        torch.set_num_threads(max(1, threads // world) if config.threads < 0 else threads)

    # ---- models: the same init on every rank (seeded), init -> spectral norm -> device ----
    seed_everything(config.seed)
    g_raw, d_raw = build_models(config, dev)
    if cuda and config.channels_last:
        g_raw = g_raw.to(memory_format=torch.channels_last)
        d_raw = d_raw.to(memory_format=torch.channels_last)
    betas = (config.beta1, config.beta2)
    # Fused Adam: one kernel over all of a model's parameters instead of a Python-level loop over its
    # tensors (small preset, G + D, one CPU thread: 12 -> 3 ms per update). The same update rule.
    fused = True if dev.type in ("cpu", "cuda") else None
    opt_g = torch.optim.Adam(g_raw.parameters(), lr=config.lr_g, betas=betas, fused=fused)
    opt_d = torch.optim.Adam(d_raw.parameters(), lr=config.lr_d, betas=betas, fused=fused)
    amp_dtype = resolve_amp(config.amp, dev)
    fp16 = amp_dtype == torch.float16
    scaler_g = torch.amp.GradScaler(dev.type, enabled=fp16)
    scaler_d = torch.amp.GradScaler(dev.type, enabled=fp16)

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    # The averaged generator (config.ema > 0): a copy that follows G's weights; it samples and is saved.
    g_ema = copy.deepcopy(g_raw).eval().requires_grad_(False) if config.ema > 0 else None

    # ---- resume: weights, optimizers, scalers, data position, every RNG ----
    start_step = 0
    if state is not None:
        g_raw.load_state_dict(state["generator"])
        d_raw.load_state_dict(state["discriminator"])
        if g_ema is not None:
            g_ema.load_state_dict(state.get("generator_ema") or state["generator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if fp16 and state.get("scaler_g"):
            scaler_g.load_state_dict(state["scaler_g"])
            scaler_d.load_state_dict(state["scaler_d"])
        start_step = int(state["step"])
        if int(state.get("world_size", 1)) == world:
            sampler.load_state_dict(state["sampler"][rank])
            restore_rng_state(state["rng"][rank])
        else:  # another world size: the data order cannot continue exactly; start the next epoch cleanly
            sampler.set_epoch(int(state["sampler"][0]["epoch"]) + 1)
            seed_everything(config.seed + 1000 * start_step + rank)
    else:
        seed_everything(config.seed + rank)  # different noise per rank, the same run for a seed

    # ---- fast paths: compile (optional), DDP; keep the raw modules for saving and the GP ----
    g_fast = torch.compile(g_raw) if config.compile else g_raw
    d_fast = torch.compile(d_raw) if config.compile else d_raw
    g_train, d_train = g_fast, d_fast
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.index] if cuda else None
        g_train = DDP(g_fast, device_ids=ids)
        d_train = DDP(d_fast, device_ids=ids)

    # ---- outputs (rank 0 alone writes) ----
    ckpt_dir = run_dir / CKPT_DIR
    metrics = None
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_marker(run_dir)
        with atomic_path(run_dir / "config.toml", force=True) as tmp:
            tmp.write_text(to_toml(config))
        metrics = MetricsLog(run_dir, start_step if state is not None else None, config.log == "tensorboard")

    # Fixed inputs for the sample grids: one row per label, its first sample in the set (epoch 0).
    rows_by_label = {}
    for i, sample in enumerate(dataset.samples):
        for name in sample.labels:
            rows_by_label.setdefault(name, i)
    row_names = [n for n in config.labels if n in rows_by_label][:SAMPLE_MAX_ROWS]
    fixed = [dataset[(rows_by_label[n], 0)] for n in row_names]
    fixed_x = torch.stack([s["normal"] for s in fixed]).to(dev)
    fixed_d = torch.stack([s["defect"] for s in fixed]).to(dev)
    fixed_a = torch.stack([s["control"] for s in fixed]).to(dev)
    colours = label_colours(config.labels)  # the control column's colours, as `dataset preview` shows them

    def write_samples(step: int) -> None:
        """One row per label: input | control | map | synthetic defect | real defect | restored.

        "restored" is the real defect image translated to the normal map; the same noise every time.
        """
        g_show = g_ema if g_ema is not None else g_raw  # the averaged G when there is one
        g_show.eval()  # eval: spectral norm does not advance its power iteration, so training is unaffected
        cuda_devices = [dev.index or 0] if cuda else []
        with torch.no_grad(), autocast(), torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(SAMPLE_SEED)
            fake, m = g_show(fixed_x, fixed_a)
            normal_map = torch.zeros_like(fixed_a)
            normal_map[:, 0] = 1
            restored, _ = g_show(fixed_d, normal_map)
        g_raw.train()
        columns = [
            denormalize(fixed_x),
            colorize_control(fixed_a),
            m.expand(-1, 3, -1, -1),
            denormalize(fake),
            denormalize(fixed_d),
            denormalize(restored),
        ]
        save_sample_grid(
            run_dir / "samples" / f"step_{step:08d}.png",
            [c.float() for c in columns],
            list(SAMPLE_COLUMNS),
            row_names,
            f"step {step}/{config.steps}",
            [colours[n] for n in row_names],
        )

    def save(step: int, batches_done: int, name: str | None) -> Path | None:
        """Collective (every rank sends its RNG and sampler state); rank 0 writes."""
        local = {"rng": capture_rng_state(), "sampler": sampler.state_dict(consumed=batches_done * config.batch_size)}
        gathered: list[Any] = [local]
        if ddp:
            gathered = [None] * world
            dist.all_gather_object(gathered, local)
        if not master:
            return None
        payload = {
            "step": step,
            "config": config.to_dict(),
            "data_root": str(data_root.resolve()),
            "world_size": world,
            "generator": g_raw.state_dict(),
            "discriminator": d_raw.state_dict(),
            # `ptools generate` loads this one when present (same keys as "generator")
            "generator_ema": g_ema.state_dict() if g_ema is not None else {},
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "scaler_g": scaler_g.state_dict() if fp16 else {},
            "scaler_d": scaler_d.state_dict() if fp16 else {},
            "rng": [g["rng"] for g in gathered],
            "sampler": [g["sampler"] for g in gathered],
        }
        if name is not None:  # interrupted.pt
            return save_checkpoint(ckpt_dir / name, payload)
        latest = save_checkpoint(ckpt_dir / LATEST, payload)
        numbered = ckpt_dir / step_name(step)
        numbered.unlink(missing_ok=True)
        try:  # the numbered copy shares latest's bytes; latest.pt is later replaced, never rewritten
            os.link(latest, numbered)
        except OSError:
            save_checkpoint(numbered, payload)
        rotate(ckpt_dir, config.keep)
        return latest

    # ---- the loop ----
    result = TrainResult(run_dir, start_step, start_step, False, None, device=str(dev), world_size=world)
    result.amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
    if start_step >= config.steps:
        if metrics is not None:
            metrics.close()
        return result
    n = torch.get_num_threads()
    shown_device = f"cpu ({n} thread{'' if n == 1 else 's'})" if dev.type == "cpu" else str(dev)
    bar = Progress(config.steps, start_step, config.log_every, enabled=show_progress, device=shown_device)
    epoch = sampler.epoch
    batch_iter = None
    batches_done = 0  # batches taken in the current loader iteration (for the sampler's state)
    B = config.batch_size
    t_start = time.perf_counter()
    last: dict[str, float] = {}
    step = start_step
    paired = bool(dataset.paired)  # the seed layout: each defect has its own normal, pixel for pixel

    def next_batch() -> dict[str, torch.Tensor]:
        """The next batch on the device: an endless walk over epochs that the sampler can restart mid-epoch."""
        nonlocal batch_iter, batches_done, epoch
        batch = None
        while batch is None:
            if batch_iter is None:
                sampler.set_epoch(epoch)
                batch_iter, batches_done = iter(loader), 0
            try:
                batch = next(batch_iter)
                batches_done += 1
            except StopIteration:
                batch_iter, epoch = None, epoch + 1
        out = {k: batch[k].to(dev, non_blocking=True) for k in ("normal", "defect", "control", "mask", "has_mask")}
        out["defect_labels"] = batch["defect_labels"].to(dev, non_blocking=True)
        out["normal_labels"] = batch["normal_labels"].to(dev, non_blocking=True)
        if cuda and config.channels_last:
            for k in ("normal", "defect", "control"):
                out[k] = out[k].contiguous(memory_format=torch.channels_last)
        return out

    with StopRequest() as stop:
        try:
            while step < config.steps:
                t0 = time.perf_counter()
                t_data = 0.0
                lr_g = lr_at(step, config.steps, config.lr_g, config.lr_end, config.lr_schedule)
                lr_d = lr_at(step, config.steps, config.lr_d, config.lr_end, config.lr_schedule)
                for group in opt_g.param_groups:
                    group["lr"] = lr_g
                for group in opt_d.param_groups:
                    group["lr"] = lr_d

                # -- d_steps D updates, each on a fresh batch: real normals and defects (adv + cls), fakes
                #    (adv), WGAN-GP --
                for _ in range(config.d_steps):
                    t_batch = time.perf_counter()
                    b = next_batch()
                    t_data += time.perf_counter() - t_batch
                    x_n, x_d, a_d = b["normal"], b["defect"], b["control"]
                    y_d, y_n = b["defect_labels"], b["normal_labels"]
                    a_n = torch.zeros_like(a_d)
                    a_n[:, 0] = 1.0  # restoration target: the uniform normal map
                    # Both directions in one doubled batch: [x_n; x_d] with targets [A_d; A_n].
                    x_in = torch.cat([x_n, x_d])
                    a_fwd = torch.cat([a_d, a_n])
                    a_back = torch.cat([a_n, a_d])
                    with torch.no_grad(), autocast():
                        fake, _ = g_fast(x_in, a_fwd)  # [fake defect; fake normal]
                    fake_d, fake_n = fake[:B].detach(), fake[B:].detach()
                    with autocast():
                        src, cls = d_train(torch.cat([x_n, x_d, fake_d, fake_n]))
                        d_adv = losses.d_adversarial(src[: 2 * B], src[2 * B :])
                        d_cls = losses.classification(cls[: 2 * B], torch.cat([y_n, y_d]))
                        d_gp = losses.gradient_penalty(
                            d_raw,
                            torch.cat([x_d, x_n]),
                            torch.cat([fake_d, fake_n]),  # each real paired with a fake of its own domain
                            scale=scaler_d.scale if fp16 else None,
                            inv_scale=1.0 / scaler_d.get_scale() if fp16 else 1.0,
                        )
                        d_loss = d_adv + config.w_cls_d * d_cls + config.w_gp * d_gp
                        if config.w_cls_gp > 0:
                            # on the images G's class term is taken at (fakes, their target labels) and reals
                            d_cls_gp = losses.class_gradient_penalty(
                                d_raw, torch.cat([x_n, x_d, fake_d, fake_n]), torch.cat([y_n, y_d, y_d, y_n])
                            )
                            d_loss = d_loss + config.w_cls_gp * d_cls_gp
                    opt_d.zero_grad(set_to_none=True)
                    scaler_d.scale(d_loss).backward()
                    scaler_d.step(opt_d)
                    scaler_d.update()
                row: dict[str, Any] = {"step": step + 1, "lr_g": lr_g, "lr_d": lr_d}
                scalars = {"d_loss": d_loss, "d_adv": d_adv, "d_cls": d_cls, "d_gp": d_gp}

                # -- one G update on the last batch, on a graph built after D's update --
                warm = min(1.0, (step + 1) / config.sparsity_warmup) if config.sparsity_warmup else 1.0
                w_sparsity = config.w_sparsity * warm
                mask = b["mask"].float()
                has_mask = b["has_mask"].float()
                d_raw.requires_grad_(False)
                with autocast():
                    out, m1, logit1, fg1 = g_train(x_in, a_fwd, with_parts=True)  # defacement and restoration
                    rec, m2 = g_train(out, a_back)  # and back again
                    src, cls = d_fast(out)
                    g_adv = losses.g_adversarial(src)
                    g_cls = losses.classification(cls, torch.cat([y_d, y_n]))
                    g_cycle = losses.cycle(rec, x_in)
                    g_map_cycle = losses.map_cycle(m1, m2)
                    g_sparsity = losses.sparsity(torch.cat([m1, m2]))
                    g_loss = (
                        g_adv
                        + config.w_cls_g * g_cls
                        + config.w_cycle * g_cycle
                        + config.w_map_cycle * g_map_cycle
                        + w_sparsity * g_sparsity
                    )
                    both_masks, both_weights = torch.cat([mask, mask]), torch.cat([has_mask, has_mask])
                    if config.w_mask > 0:
                        # Defacement must paint the requested mask; restoration must repaint the defect's.
                        mask_term = losses.mask_dice if config.mask_loss == "dice" else losses.mask_bce
                        g_mask = mask_term(logit1, both_masks, both_weights)
                        g_loss = g_loss + config.w_mask * g_mask
                        scalars["g_mask"] = g_mask
                    # The real partners: defaced x_n -> its real defect, restored x_d -> its real normal.
                    partners = torch.cat([x_d, x_n])
                    if config.w_pair > 0 and paired:
                        if config.pair_loss in ("mean", "mean_fg"):
                            g_pair = losses.paired_l1_mean(out, partners, torch.ones_like(both_weights))
                        else:
                            g_pair = losses.paired_l1(out, partners, both_masks, both_weights)
                        g_loss = g_loss + config.w_pair * g_pair
                        scalars["g_pair"] = g_pair
                    # F itself, inside the mask, to the real partner: the output's L1 reaches F only through
                    # M, and a thin defect's few pixels through a half-open M teach it little ("mean_fg"
                    # is "mean" plus this term at w_pair).
                    w_fg = config.w_fg + (config.w_pair if config.pair_loss == "mean_fg" else 0.0)
                    if w_fg > 0 and paired:
                        g_fg = losses.masked_l1(fg1, partners, both_masks, both_weights)
                        g_loss = g_loss + w_fg * g_fg
                        scalars["g_fg"] = g_fg
                opt_g.zero_grad(set_to_none=True)
                scaler_g.scale(g_loss).backward()
                scaler_g.step(opt_g)
                scaler_g.update()
                d_raw.requires_grad_(True)
                if g_ema is not None:
                    decay = min(config.ema, (1.0 + step) / (10.0 + step))
                    with torch.no_grad():
                        for p_avg, p_now in zip(g_ema.parameters(), g_raw.parameters(), strict=True):
                            p_avg.lerp_(p_now, 1.0 - decay)
                        for b_avg, b_now in zip(g_ema.buffers(), g_raw.buffers(), strict=True):
                            b_avg.copy_(b_now)
                scalars.update(
                    g_loss=g_loss,
                    g_adv=g_adv,
                    g_cls=g_cls,
                    g_cycle=g_cycle,
                    g_map_cycle=g_map_cycle,
                    g_sparsity=g_sparsity,
                )

                # One device sync per step for all the scalars.
                values = torch.stack([v.detach().float() for v in scalars.values()]).tolist()
                row.update(zip(scalars, values, strict=True))
                row["data_s"], row["step_s"] = t_data, time.perf_counter() - t0
                step += 1
                last.update({k: v for k, v in row.items() if k in scalars})
                if not all(math.isfinite(v) for v in values):
                    shown = ", ".join(f"{k}={v}" for k, v in zip(scalars, values, strict=True))
                    raise PtoolsError(
                        f"step {step}: a loss is not finite ({shown})",
                        hint="lower the learning rate, or use --amp off / bf16 instead of fp16",
                    )
                if metrics is not None:
                    metrics.write(row)
                bar.update(step, row)
                if master and config.sample_every and step % config.sample_every == 0:
                    write_samples(step)
                if on_step is not None:
                    on_step(StepInfo(step, row, g_raw, d_raw, rank, g_ema))

                # All ranks agree on stopping, so they save the same step and none waits forever.
                stop_now = stop.requested
                if ddp:
                    flag = torch.tensor([1.0 if stop_now else 0.0], device=dev if cuda else "cpu")
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop_now = bool(flag.item())
                if stop_now and step < config.steps:
                    result.checkpoint = save(step, batches_done, INTERRUPTED)
                    result.interrupted = True
                    break
                if step == config.steps or (config.ckpt_every and step % config.ckpt_every == 0):
                    result.checkpoint = save(step, batches_done, None)
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
    if (
        master
        and not result.interrupted
        and step > start_step
        and (not config.sample_every or step % config.sample_every)
    ):
        write_samples(step)  # the final state, whatever the interval (0: only this one)
    elapsed = time.perf_counter() - t_start
    result.step = step
    result.losses = last
    result.elapsed_s = elapsed
    result.steps_per_s = (step - start_step) / elapsed if elapsed > 0 else 0.0
    return result
