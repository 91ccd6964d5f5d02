"""`ptools train`: train DefectGAN on a defect dataset (or on the synthetic set it makes itself)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ptools.cli._common import AMP_VALUES, DeviceOpt, complete_from, force_option, json_option
from ptools.defectgan.presets import PRESETS
from ptools.errors import ExitCode, PtoolsError

HELP = (
    "Train DefectGAN (defacement + restoration, WGAN-GP, SPADE control maps). Without --data it writes the "
    "synthetic defect set into the run folder and trains on it. --resume PATH continues exactly from a "
    "checkpoint file or a run folder (its newest of latest.pt / interrupted.pt). Ctrl-C or SIGTERM finishes "
    "the step, saves checkpoints/interrupted.pt and exits 130. Runs under `torchrun --nproc_per_node N -m "
    "ptools train ...` with DDP."
)

DEFAULT_SYNTH_N = 400


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
        str | None,
        typer.Option(
            "--amp",
            help="auto|bf16|fp16|off (auto: bf16 on CUDA, off on CPU).",
            autocompletion=complete_from(*AMP_VALUES),
        ),
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
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="csv, or tensorboard (csv + TensorBoard events).",
            autocompletion=complete_from("csv", "tensorboard"),
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="paper (the defaults) or small (reduced widths at 64 px, for CPUs).",
            autocompletion=complete_from(*PRESETS),
        ),
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
    force: force_option(
        "Start a new run in an --out that holds an earlier one: remove only the files `ptools train` wrote there "
        "(config.toml, metrics.csv, checkpoints/*.pt, samples/step_*.png, tensorboard events; never other files), "
        "and write data/ again if its synthetic set was made with other --synth-n/--image-size/--seed."
    ) = False,
    json_out: json_option("train") = False,
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
    if state is not None:
        # A changed setting is refused now, before the config is printed, so the reason is the first line.
        from ptools.defectgan.trainer import check_resume_config

        check_resume_config(state, config, ckpt_path)
    if run_dir is None:
        run_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")

    # Everything is checked before anything is written or removed: the run folder (writable; with --force,
    # which of its files are ptools'), the data (--data readable, or the synthetic set's settings).
    from ptools.defectgan.rundir import DATA_DIR, claim_run_dir, synth_settings_differ

    # Rank 0 alone checks and writes; under torchrun the other ranks wait for it at the barrier.
    claim = claim_run_dir(run_dir, force) if state is None and master else None
    if state is not None and master:
        from ptools.files import probe_writable

        probe_writable(run_dir)
    if data is None and state is not None and Path(state.get("data_root", "")).is_dir():
        data = Path(state["data_root"])
    synthetic = data is None
    data_checked = False
    make_synth = regenerate = False
    if synthetic:
        data = run_dir / DATA_DIR
        if master and data.exists():
            from ptools.data.synth import MARKER

            if not (data / MARKER).is_file():
                raise PtoolsError(
                    f"{data}: exists and is not a synthetic set written by ptools (no {MARKER})",
                    hint=f"train on it with --data {data}, or choose another --out",
                )
            differ = synth_settings_differ(data, synth_n, config.image_size, config.seed) if state is None else []
            if differ and not force:
                raise PtoolsError(
                    f"{data}: the synthetic set there was made with other settings: " + ", ".join(differ),
                    hint=f"pass --force to make it again, --data {data} to train on it as it is, or another --out",
                )
            make_synth = regenerate = bool(differ)
        else:
            make_synth = master
    elif master:
        from ptools.defectgan.trainer import check_data

        check_data(data)
        data_checked = True
    if claim is not None:
        claim.apply()
    if make_synth:
        from ptools.data import synthesize

        verb = "rewriting" if regenerate else "writing"
        info(f"ptools train: no --data; {verb} {synth_n} synthetic samples to {data}")
        synthesize(data, n=synth_n, size=config.image_size, seed=config.seed, force=regenerate)
    if synthetic:
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
        data_checked=data_checked,
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
