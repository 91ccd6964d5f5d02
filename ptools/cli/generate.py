"""`ptools generate`: synthesize defects (or restore normals) with a trained DefectGAN checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptools.cli._common import DeviceOpt, ForceOpt, JsonOpt, SeedOpt

HELP = (
    "Run a trained DefectGAN generator on an image or a folder of images. --label NAME|INDEX paints that "
    "defect over the whole image (INDEX 1 = the first label), --mask mask.png places it where the mask is "
    "white, --restore turns defect images into normal ones. Writes <name>_<k>.png and its spatial map "
    "<name>_<k>_map.png for k < --n (each sample with its own noise)."
)


def generate_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `ptools train` (e.g. latest.pt).")],
    input_: Annotated[Path, typer.Option("--input", help="An image, or a folder of images.")],
    label: Annotated[
        str | None, typer.Option("--label", help="Defect label name or channel index (1 = first label).")
    ] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="Binary mask: where to put the defect.")] = None,
    restore: Annotated[bool, typer.Option("--restore", help="Restoration: defect image -> normal image.")] = False,
    n: Annotated[int, typer.Option("--n", help="Samples per input, each with different noise.")] = 1,
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")] = Path("generated"),
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    from ptools.cli._output import emit_json, stdout_console
    from ptools.defectgan.generate import generate, list_inputs

    inputs = list_inputs(input_)
    outputs, config = generate(
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
    )
    mode = "restoration" if restore else "defacement"
    if json_out:
        emit_json(
            "generate",
            {
                "checkpoint": str(checkpoint),
                "mode": mode,
                "label": None if restore else (label or config.labels[0]),
                "mask": str(mask) if mask else None,
                "image_size": config.image_size,
                "outputs": [
                    {"input": str(o.input), "sample": o.sample, "image": str(o.image), "map": str(o.map)}
                    for o in outputs
                ],
            },
        )
        return
    console = stdout_console()
    console.print(f"{mode}: {len(outputs)} image(s) and spatial map(s) written to {out}", highlight=False)
    for o in outputs:
        console.print(f"  {o.input.name} #{o.sample} -> {o.image.name}, {o.map.name}", highlight=False)
