"""`ptools port`: a Keras model file -> OUT_DIR/model.py (a readable nn.Module) + weights.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ptools.cli._common import force_option, json_option
from ptools.errors import ExitCode

HELP = (
    "Port a Keras model (.keras, a full-model .h5 from Keras 2.x/tf_keras, or a tf_keras SavedModel folder) to "
    "PyTorch without TensorFlow: "
    "writes OUT_DIR/model.py (one nn.Module, a line per Keras layer, NCHW), weights.safetensors and report.json. "
    "Exit 1 if a layer has no exact PyTorch form (listed) or --check-output exceeds the tolerance."
)


def port_command(
    model: Annotated[
        Path, typer.Argument(help="Keras model: .keras, a full-model .h5, or a tf_keras SavedModel folder.")
    ],
    out_dir: Annotated[Path, typer.Argument(help="Folder for model.py, weights.safetensors and report.json.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Class name of the module (default: from the Keras model name).")
    ] = None,
    check_output: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            "--check-output",
            help="IN OUT: Keras inputs and outputs (.npy, or .npz for several, Keras layout); compare the port.",
            show_default=False,
        ),
    ] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Max abs error for --check-output.")] = 1e-4,
    force: force_option(
        "Overwrite model.py, weights.safetensors and report.json in OUT_DIR (other files there are kept)."
    ) = False,
    json_out: json_option("port") = False,
) -> None:
    from ptools.convert.api import config_errors
    from ptools.port.api import build, report, write

    with config_errors(model):  # the code is generated from the file's config: a damaged one is one line
        p = build(model, name)
    result: dict[str, Any] | None = None
    written = False
    if p.ok:
        with config_errors(model):
            result = write(p, out_dir, force=force, check=check_output, tolerance=tolerance)
        written = result is None or result["ok"]
    doc = report(p, out_dir, result)
    doc["written"] = written
    from ptools.cli._output import set_verdict

    set_verdict(not written)
    if json_out:
        from ptools.cli._output import emit_json

        emit_json("port", doc)
    else:
        _render(doc)
    if not written:
        raise typer.Exit(ExitCode.FINDINGS)


def _render(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from ptools.cli._output import print_check_output, stdout_console

    con = stdout_console()
    if doc["unsupported"]:
        con.print(
            f"[red]cannot port[/red] {doc['source']}: {len(doc['unsupported'])} layer(s) have no exact PyTorch form",
            highlight=False,
            soft_wrap=True,
        )
        for u in doc["unsupported"]:
            con.print(
                f"  {u['layer']} ({u['class']}), layer {u['position']}, after {', '.join(u['inputs']) or '-'}: "
                f"{u['reason']}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        con.print("nothing written", highlight=False)
        return
    wide = not con.is_terminal
    table = Table(title=f"{doc['source']} -> {doc['class_name']}", title_justify="left")
    for col in ("Keras layer", "class", "PyTorch", "settings carried over"):
        table.add_column(col, overflow="ignore" if wide else "fold", no_wrap=wide)
    for r in doc["layers"]:
        code = "\n".join(r["modules"] + r["forward"])
        table.add_row(r["layer"], r["class"], code, "; ".join(r["settings"]))
    if wide:  # piped: one unwrapped, tab-separated line per row (CI logs, grep, cut)
        typer.echo(f"{doc['source']} -> {doc['class_name']}")
        for r in doc["layers"]:
            code = " | ".join(r["modules"] + r["forward"])
            typer.echo(f"{r['layer']}\t{r['class']}\t{code}\t{'; '.join(r['settings'])}")
    else:
        con.print(table)
    print_check_output(con, doc.get("check_output"))
    out = doc["output_dir"]
    if doc["written"]:
        con.print(
            f"wrote {out}/model.py ({doc['class_name']}), {out}/weights.safetensors ({doc['parameters']} parameters), "
            f"{out}/report.json",
            highlight=False,
            soft_wrap=True,
        )
    else:
        con.print("[red]nothing written[/red] (--check-output failed)", highlight=False)
