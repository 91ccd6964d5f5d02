"""`ptools train`: train DefectGAN on a defect dataset (or on the synthetic set it makes itself)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ptools.cli._common import DeviceOpt, ForceOpt, JsonOpt
from ptools.errors import ExitCode, PtoolsError

HELP = (
    "Train DefectGAN (defacement + restoration, WGAN-GP, SPADE control maps). Without --data it writes the "
    "synthetic defect set into the run folder and trains on it. --resume PATH continues exactly from a "
    "checkpoint file or a run folder (its newest of latest.pt / interrupted.pt). Ctrl-C or SIGTERM finishes "
    "the step, saves checkpoints/interrupted.pt and exits 130. Runs under `torchrun --nproc_per_node N -m "
    "ptools train ...` with DDP."
)

DEFAULT_SYNTH_N = 400
_RUN_FILES = ("metrics.csv", "config.toml")


def train_command(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset root (seed layout, label folders or CSV). Default: synthesize one."),
    ] = None,
    device: DeviceOpt = "auto",
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="G updates, each after d_steps D updates (paper: 100000 = 500k iterations)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch per process (paper: 4).")] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Square size in px, divisible by 2**d_layers (default 128).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/<time>; with --resume, its run folder).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue from a checkpoint .pt, or a run folder (newest checkpoint in it)."),
    ] = None,
    amp: Annotated[
        str | None, typer.Option("--amp", help="auto|bf16|fp16|off (auto: bf16 on CUDA, off on CPU).")
    ] = None,
    compile_: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile G and D.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Data-loading worker processes (default 2).")] = None,
    sample_every: Annotated[
        int | None, typer.Option("--sample-every", help="Write a sample grid every K steps (0: only at the end).")
    ] = None,
    ckpt_every: Annotated[
        int | None, typer.Option("--ckpt-every", help="Checkpoint every K steps (always at the end).")
    ] = None,
    keep: Annotated[int | None, typer.Option("--keep", help="Numbered checkpoints kept besides latest.pt.")] = None,
    log: Annotated[str | None, typer.Option("--log", help="csv, or tensorboard (csv + TensorBoard events).")] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="paper (the defaults) or small (reduced widths at 64 px, for CPUs)."),
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML file of config fields (flags override it).")
    ] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option("--deterministic/--no-deterministic", help="Deterministic kernels (exact resume on GPU too)."),
    ] = None,
    synth_n: Annotated[
        int, typer.Option("--synth-n", help="Samples in the synthetic set made when --data is not given.")
    ] = DEFAULT_SYNTH_N,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    from ptools.cli._output import emit_json, info, stdout_console
    from ptools.defectgan.config import DefectGANConfig, load_toml, replace_fields, to_toml

    flags = {
        "steps": steps,
        "batch_size": batch_size,
        "image_size": image_size,
        "amp": amp,
        "compile": compile_,
        "seed": seed,
        "workers": workers,
        "sample_every": sample_every,
        "ckpt_every": ckpt_every,
        "keep": keep,
        "log": log,
        "deterministic": deterministic,
    }
    master = int(os.environ.get("RANK", "0")) == 0

    # Config: defaults (or the checkpoint's) < --preset < --config TOML < flags.
    state: dict[str, Any] | None = None
    run_dir = out
    if resume is not None:
        from ptools.defectgan.checkpoint import load_checkpoint, resolve_resume

        ckpt_path, resumed_dir = resolve_resume(resume)
        state = load_checkpoint(ckpt_path)
        config = DefectGANConfig.from_dict(state["config"], source=str(ckpt_path))
        run_dir = run_dir or resumed_dir
    else:
        config = DefectGANConfig()
    if preset is not None:
        from ptools.defectgan.presets import preset_fields

        config = replace_fields(config, preset_fields(preset), f"--preset {preset}")
    if config_file is not None:
        config = replace_fields(config, load_toml(config_file), str(config_file))
    config = replace_fields(config, {k: v for k, v in flags.items() if v is not None}, "flags").validate()

    if config.log == "tensorboard":
        from ptools.defectgan.monitor import require_tensorboard

        require_tensorboard()
    # The device (and an AMP mode it cannot run) is checked before anything is written or printed.
    from ptools.defectgan.trainer import resolve_amp
    from ptools.devices import resolve_device

    resolve_amp(config.amp, resolve_device(device))
    if run_dir is None:
        run_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if state is None:
        _claim_run_dir(run_dir, force, master)

    # Data: --data, else the checkpoint's, else a synthetic set in the run folder.
    if data is None and state is not None and Path(state.get("data_root", "")).is_dir():
        data = Path(state["data_root"])
    if data is None:
        data = run_dir / "data"
        if master and not data.exists():
            from ptools.data import synthesize

            info(f"ptools train: no --data; writing {synth_n} synthetic samples to {data}")
            data.parent.mkdir(parents=True, exist_ok=True)
            synthesize(data, n=synth_n, size=config.image_size, seed=config.seed)
        _barrier(device)

    if master:
        info(f"ptools train: run folder {run_dir}, data {data}" + (f", resuming {resume}" if resume else ""))
        info("ptools train: config\n" + _indent(to_toml(config)))

    from ptools.defectgan.trainer import train

    result = train(
        config,
        data_root=data,
        run_dir=run_dir,
        device=device,
        resume_from=state if state is not None else None,
    )
    if not master:
        raise typer.Exit(ExitCode.INTERRUPTED if result.interrupted else ExitCode.OK)

    payload = {
        "run_dir": str(run_dir),
        "data": str(data),
        "device": result.device,
        "world_size": result.world_size,
        "amp": result.amp,
        "start_step": result.start_step,
        "step": result.step,
        "steps": config.steps,
        "interrupted": result.interrupted,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "losses": result.losses,
        "elapsed_s": round(result.elapsed_s, 3),
        "steps_per_s": round(result.steps_per_s, 4),
        "config": config.to_dict(),
    }
    if json_out:
        emit_json("train", payload)
    else:
        console = stdout_console()
        what = "interrupted at" if result.interrupted else "finished at"
        console.print(
            f"train {what} step {result.step}/{config.steps} ({result.steps_per_s:.2f} step/s, {result.device})"
        )
        if result.losses:
            console.print("  " + " ".join(f"{k}={v:.4f}" for k, v in result.losses.items()), highlight=False)
        if result.checkpoint:
            console.print(f"  checkpoint: {result.checkpoint}", highlight=False)
        console.print(f"  run folder: {run_dir}", highlight=False)
    if result.interrupted:
        raise typer.Exit(ExitCode.INTERRUPTED)


def _claim_run_dir(run_dir: Path, force: bool, master: bool) -> None:
    """A new run must not mix its files with an older run's: refuse, or with --force clear ptools' own files."""
    from ptools.defectgan.checkpoint import CKPT_DIR

    existing = [run_dir / n for n in (*_RUN_FILES, CKPT_DIR, "samples") if (run_dir / n).exists()]
    if not existing:
        return
    if not force:
        raise PtoolsError(
            f"{run_dir}: already holds a training run ({', '.join(p.name for p in existing)})",
            hint=f"continue it with --resume {run_dir}, choose another --out, or pass --force to start over",
        )
    if master:
        import shutil

        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if (run_dir / "tensorboard").is_dir():
            shutil.rmtree(run_dir / "tensorboard")


def _barrier(device: str) -> None:
    """Under torchrun, the other ranks wait for rank 0 to finish writing the synthetic set."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch.distributed as dist

    from ptools.defectgan.trainer import init_distributed

    init_distributed(device)
    dist.barrier()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines())
