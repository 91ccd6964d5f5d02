"""`ptools generate`: synthesize defects (or restore normals) with a trained DefectGAN checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptools.cli._common import DeviceOpt, SeedOpt, force_option, json_option

HELP = (
    "Run a trained DefectGAN generator on an image or a folder of images. CHECKPOINT is a .pt written by "
    "`ptools train` or its run folder (newest checkpoint, as --resume takes it). --label NAME|INDEX (INDEX 1 = "
    "the first label) adds that defect where a placement mask is white: by default one drawn for each sample from "
    "the label's synthetic defect shapes (written as <name>_<k>_mask.png), --mask mask.png for your own, "
    "--whole-image for all of it. --restore turns defect images into normal ones. Writes <name>_<k>.png and its "
    "spatial map <name>_<k>_map.png for k < --n (each sample with its own noise). With --dataset OUT it writes a new "
    "seed-layout dataset instead: --n samples for every label (or only --label), each a normal image from "
    "--input, a placement mask (--masks, or random synthetic shapes), the synthetic defect and its mask (the "
    "generator's spatial map > 0.5); the same --seed writes the same files."
)


def generate_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint written by `ptools train` (latest.pt), or its run folder.")
    ],
    input_: Annotated[Path, typer.Option("--input", help="An image, or a folder of images.")],
    label: Annotated[
        str | None, typer.Option("--label", help="Defect label name or channel index (1 = first label).")
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option("--mask", help="Binary mask: where to put the defect (default: a synthetic shape per sample)."),
    ] = None,
    whole_image: Annotated[
        bool, typer.Option("--whole-image", help="Ask for the defect over the whole image instead of a placement.")
    ] = False,
    restore: Annotated[bool, typer.Option("--restore", help="Restoration: defect image -> normal image.")] = False,
    n: Annotated[
        int, typer.Option("--n", help="Samples per input, each with different noise (with --dataset: per label).")
    ] = 1,
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")] = Path("generated"),
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="Write a new seed-layout dataset here (--input: its normal images)."),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="With --dataset: placement masks from a seed-layout dataset (LABEL/defect_segmentation/) or a "
            "folder of masks (default: random synthetic defect shapes).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: force_option(
        "Overwrite existing outputs (<name>_<k>.png, <name>_<k>_map.png) in --out; with --dataset, replace OUT if an "
        "earlier `generate --dataset` wrote it (its generated.json); any other folder is refused."
    ) = False,
    json_out: json_option("generate") = False,
) -> None:
    from ptools.cli._output import emit_json, stdout_console, warn
    from ptools.cli._progress import item_progress
    from ptools.defectgan.generate import generate, generate_dataset, list_inputs
    from ptools.errors import PtoolsError

    inputs = list_inputs(input_)
    if dataset is not None:
        if restore or mask is not None or whole_image:
            raise PtoolsError(
                "--dataset takes no --restore, --mask or --whole-image", hint="use --masks FOLDER for placement masks"
            )
        with item_progress("generate", 0, enabled=not json_out) as update:  # the total: n x labels, once loaded
            result = generate_dataset(
                checkpoint,
                inputs,
                dataset,
                n=n,
                label=label,
                masks=masks,
                device=device,
                seed=seed,
                force=force,
                progress=update,
            )
        for note in result.notes.items:
            warn(note)
        if json_out:
            emit_json(
                "generate",
                {
                    "checkpoint": str(checkpoint),
                    "mode": "dataset",
                    "dataset": str(result.root),
                    "image_size": result.image_size,
                    "counts": result.labels,
                    "rejected": result.rejected,
                    "mask_source": result.mask_source,
                    "notes": result.notes.items,
                },
            )
            return
        counts = ", ".join(f"{k} {v}" for k, v in result.labels.items())
        stdout_console().print(
            f"dataset: {sum(result.labels.values())} samples ({counts}) at {result.image_size} px written to "
            f"{result.root}; placement masks: {result.mask_source}; check it with `ptools dataset check {result.root}`",
            highlight=False,
            soft_wrap=True,
        )
        return
    if masks is not None:
        raise PtoolsError("--masks is for --dataset", hint="use --mask FILE for one placement mask")
    with item_progress("generate", len(inputs), enabled=not json_out and len(inputs) > 1) as update:
        outputs, config, notes = generate(
            checkpoint,
            inputs,
            out,
            label=label,
            mask=mask,
            restore=restore,
            n=n,
            device=device,
            seed=seed,
            force=force,
            progress=update,
            whole_image=whole_image,
        )
    for note in notes.items:
        warn(note)
    mode = "restoration" if restore else "defacement"
    chosen = None
    if not restore:
        from ptools.defectgan.generate import label_channel

        chosen = config.labels[label_channel(config, label) - 1]
    if json_out:
        emit_json(
            "generate",
            {
                "checkpoint": str(checkpoint),
                "mode": mode,
                "label": chosen,
                "mask": str(mask) if mask else None,
                "placement": "--mask" if mask else "whole image" if whole_image or restore else "synthetic shapes",
                "image_size": config.image_size,
                "notes": notes.items,
                "outputs": [
                    {
                        "input": str(o.input),
                        "sample": o.sample,
                        "image": str(o.image),
                        "map": str(o.map),
                        "placement_mask": str(o.placement) if o.placement else None,
                    }
                    for o in outputs
                ],
            },
        )
        return
    console = stdout_console()
    placed = " and placement mask(s)" if outputs and outputs[0].placement else ""
    console.print(f"{mode}: {len(outputs)} image(s), spatial map(s){placed} written to {out}", highlight=False)
    for o in outputs:
        extra = f", {o.placement.name}" if o.placement else ""
        console.print(f"  {o.input.name} #{o.sample} -> {o.image.name}, {o.map.name}{extra}", highlight=False)
