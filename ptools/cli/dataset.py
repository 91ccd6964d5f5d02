"""`ptools dataset synth|check|preview`: make, validate and look at defect datasets."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ptools.cli._common import LAYOUT_VALUES, SeedOpt, complete_from, force_option, json_option
from ptools.cli._group import SuggestOnceGroup
from ptools.cli._output import capped, emit_json, info, print_table, set_verdict, stderr_console, stdout_console
from ptools.errors import ExitCode, PtoolsError

if TYPE_CHECKING:
    from ptools.data.check import CheckReport

LAYOUTS_HELP = (
    "Layouts (detected): seed ROOT/LABEL/{normal,defect,defect_segmentation}/NAME.* paired by stem; "
    "folders ROOT/normal/* + ROOT/LABEL/* (masks optional in ROOT/LABEL/masks/); "
    "csv manifest path,labels[,mask] (labels ;-separated)."
)
MAX_TABLE_ROWS = 40

app = typer.Typer(
    cls=SuggestOnceGroup,
    help=f"Defect datasets: synthesize, validate, preview. {LAYOUTS_HELP}",
    no_args_is_help=True,
    rich_markup_mode=None,
)

LayoutOpt = Annotated[
    str, typer.Option("--layout", help="auto|seed|folders|csv.", autocompletion=complete_from(*LAYOUT_VALUES))
]


@app.command("synth")
def synth_command(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to create (seed layout).")],
    n: Annotated[int, typer.Option("--n", help="Number of defect samples (labels in turn).")] = 1000,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    labels: Annotated[str, typer.Option("--labels", help="Comma-separated defect kinds.")] = "scratch,crack,spot,stain",
    seed: SeedOpt = 0,
    image_format: Annotated[str, typer.Option("--format", help="png|jpg for the images (masks are png).")] = "png",
    workers: Annotated[int, typer.Option("--workers", help="Processes (0: this one; output is the same).")] = 0,
    force: force_option(
        "Replace DIR if an earlier `dataset synth` wrote it (its synth.json); any other folder is refused."
    ) = False,
    json_out: json_option("dataset.synth") = False,
) -> None:
    """Generate the built-in synthetic defect set: textured surfaces, defects with exact masks, normals."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ptools.data.synth import resolve_labels, synthesize

    names = resolve_labels(labels.split(","))
    start = time.perf_counter()
    with Progress(
        TextColumn("synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
        disable=json_out or not stderr_console().is_terminal,  # off a terminal rich would print an empty line
    ) as bar:
        task = bar.add_task("synth", total=n)
        root = synthesize(
            directory,
            n=n,
            size=size,
            labels=names,
            seed=seed,
            force=force,
            ext=image_format,
            workers=workers,
            progress=lambda k: bar.advance(task, k),
        )
    seconds = time.perf_counter() - start
    counts = {name: len(range(i, n, len(names))) for i, name in enumerate(names)}
    if json_out:
        emit_json(
            "dataset.synth",
            {
                "root": root,
                "n": n,
                "size": size,
                "labels": names,
                "seed": seed,
                "format": image_format,
                "counts": counts,
                "seconds": round(seconds, 3),
            },
        )
        return
    stdout_console().print(
        f"wrote {n} samples ({', '.join(f'{k} {v}' for k, v in counts.items())}) of {size} px to {root} "
        f"in {seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


@app.command("check")
def check_command(
    root: Annotated[Path, typer.Argument(metavar="ROOT", help="Dataset folder or CSV manifest.")],
    layout: LayoutOpt = "auto",
    json_out: json_option("dataset.check") = False,
) -> None:
    """Validate a dataset (never modifies it). Exit 1 when problems are found, 2 when ROOT is not a dataset."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ptools.data.check import check_dataset

    with Progress(
        TextColumn("check"),
        BarColumn(),
        MofNCompleteColumn(),
        console=stderr_console(),
        transient=True,
        disable=not stderr_console().is_terminal,  # off a terminal rich would print an empty line
    ) as bar:
        task = bar.add_task("check", total=None)
        report = check_dataset(root, layout, progress=lambda done, total: bar.update(task, completed=done, total=total))
    set_verdict(not report.ok)
    if json_out:
        emit_json(
            "dataset.check",
            {
                "root": report.root,
                "layout": report.layout,
                "ok": report.ok,
                "paired": report.paired,
                "labels": report.labels,
                "counts": report.counts,
                "normals": report.normals,
                "samples": report.samples,
                "files_checked": report.files_checked,
                "balance": report.balance,
                "problem_kinds": report.kinds(),
                "problems": report.problems,
            },
        )
    else:
        _print_check(report)
    if not report.ok:
        raise typer.Exit(ExitCode.FINDINGS)


def _print_check(report: CheckReport) -> None:
    from rich.table import Table

    console = stdout_console()
    console.print(
        f"{report.root}: {report.layout} layout, {report.samples} usable defect samples, {report.normals} normal "
        f"images, {report.files_checked} files decoded",
        highlight=False,
        soft_wrap=True,
    )
    counts = Table(title="labels", title_justify="left")
    counts.add_column("channel", justify="right")
    counts.add_column("label")
    counts.add_column("samples", justify="right")
    counts.add_column("share", justify="right")
    total = sum(report.counts.values()) or 1
    counts.add_row("0", "normal", str(report.normals), "")
    for i, (name, count) in enumerate(report.counts.items(), start=1):
        counts.add_row(str(i), name, str(count), f"{100 * count / total:.0f}%")
    print_table(counts, console)
    if report.balance is not None:
        console.print(f"balance (smallest / largest label): {report.balance:.2f}", highlight=False)
    if not report.problems:
        console.print("[green]no problems found[/green]")
        return
    table = Table(title=f"{len(report.problems)} problems", title_justify="left")
    for col in ("severity", "kind", "path", "detail"):
        table.add_column(col, overflow="fold")
    shown, more = capped(report.problems, MAX_TABLE_ROWS)
    for p in shown:
        colour = "red" if p.severity == "error" else "yellow"
        table.add_row(f"[{colour}]{p.severity}[/{colour}]", p.kind, p.path, p.detail)
    print_table(table, console)
    if more:
        console.print(more, highlight=False)
    summary = ", ".join(f"{k} {v}" for k, v in report.kinds().items())
    console.print(f"by kind: {summary}", highlight=False)


_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def preview_target(text: str) -> tuple[Path, str]:
    """Where `--out` writes and in which format: a folder (existing, or written with a trailing slash)
    gets preview.png inside it; otherwise the extension names the format, as PIL knows it."""
    from PIL import Image

    out = Path(text)
    if text.endswith(("/", os.sep)) or out.is_dir():
        out = out / "preview.png"
    formats = Image.registered_extensions()
    image_format = formats.get(out.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        known = ", ".join(ext for ext in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif") if ext in formats)
        what = f"extension {out.suffix!r}" if out.suffix else "no extension"
        raise PtoolsError(f"--out {text}: {what} names no image format", hint=f"use one of {known}, or DIR/")
    return out, image_format


@app.command("preview")
def preview_command(
    root: Annotated[Path, typer.Argument(metavar="ROOT", help="Dataset folder or CSV manifest.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples (rows).")] = 4,
    seed: SeedOpt = 0,
    label: Annotated[str | None, typer.Option("--label", help="Only samples with this label.")] = None,
    out: Annotated[
        str | None,  # a str, not a Path: Path("DIR/") drops the slash that says "a folder"
        typer.Option(
            "--out",
            "-o",
            help="Image to write, format from the extension (.png, .jpg, .webp...); a folder (DIR/) gets "
            "DIR/preview.png. Default preview.png; none with --terminal.",
        ),
    ] = None,
    terminal: Annotated[bool, typer.Option("--terminal", help="Draw the grid in the terminal.")] = False,
    augmented: Annotated[bool, typer.Option("--augmented", help="Show what the augmentation produces.")] = False,
    size: Annotated[int, typer.Option("--size", help="Tile side in pixels.")] = 128,
    layout: LayoutOpt = "auto",
    force: force_option("Overwrite the --out image if it exists.") = False,
    json_out: json_option("dataset.preview") = False,
) -> None:
    """Render samples as rows of normal | defect | mask | overlay | control map."""
    from ptools.files import atomic_path, check_output_path

    target, image_format = None, None
    if out is None and not terminal:
        out = "preview.png"
    if out is not None:
        target, image_format = preview_target(out)
        check_output_path(target, force)  # fail before decoding anything
    if terminal and json_out:
        raise PtoolsError("--terminal and --json both write to stdout; pick one")

    from ptools.data.preview import TerminalPreview, render_preview

    preview = render_preview(root, n=n, seed=seed, label=label, augmented=augmented, image_size=size, layout=layout)
    if target is not None:
        with atomic_path(target, force) as tmp:
            preview.image.save(tmp, format=image_format, **_SAVE_OPTIONS.get(image_format or "", {}))
    if json_out:
        emit_json(
            "dataset.preview",
            {
                "root": root,
                "out": target,
                "size": list(preview.image.size),
                "columns": ["normal", "defect", "mask", "overlay", "control"],
                "labels": preview.labels,
                "augmented": augmented,
                "samples": preview.rows,
            },
        )
        return
    if terminal:
        stdout_console().print(TerminalPreview(preview))
    if target is not None:
        info(f"wrote {target} ({preview.image.width}x{preview.image.height}, {len(preview.indices)} samples)")
