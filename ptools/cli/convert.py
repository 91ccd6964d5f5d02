"""`ptools convert`: a TF/Keras checkpoint to a PyTorch state_dict (.safetensors or .pt), without TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ptools.cli._common import force_option, json_option
from ptools.errors import ExitCode, PtoolsError
from ptools.words import counted

HELP = (
    "Convert a TensorFlow checkpoint (prefix, .index, folder) or Keras file (.h5, .keras, .weights.h5) to a "
    "PyTorch state_dict (.safetensors streamed, or .pt), without TensorFlow. Names: --map rules, then "
    "heuristics (kernel->weight, /->.), then --model/--template matching by order, role and shape. "
    "Exit 1 if a target key is unfilled, a shape mismatches or --check-output exceeds the tolerance."
)


def convert_command(
    src: Annotated[Path, typer.Argument(help="TF prefix/.index/folder, or a Keras .h5/.keras/.weights.h5 file.")],
    dst: Annotated[
        Path | None, typer.Argument(help="Output .safetensors or .pt (omit with --dry-run).", show_default=False)
    ] = None,
    map_file: Annotated[
        Path | None, typer.Option("--map", help="Rules file (.json/.toml): regex on source names -> PyTorch names.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Target model factory package.module:Factory (or file.py:Factory).")
    ] = None,
    template: Annotated[
        Path | None, typer.Option("--template", help="Reference state_dict (.pt/.safetensors) to match against.")
    ] = None,
    include_optimizer: Annotated[
        bool, typer.Option("--include-optimizer", help="Also write optimizer slots and counters.")
    ] = False,
    ema: Annotated[bool, typer.Option("--ema", help="Use ExponentialMovingAverage shadows where present.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check every tensor's CRC32C (TF bundles).")] = False,
    check_output: Annotated[
        bool, typer.Option("--check-output", help="Run --model on --input and compare with --expected.")
    ] = False,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="Input activations (.npy, or .npz for several inputs), NHWC ok.")
    ] = None,
    expected: Annotated[
        Path | None, typer.Option("--expected", help="Reference outputs from TF (.npy, or .npz for several).")
    ] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Max abs error for --check-output.")] = 1e-4,
    forget_bias: Annotated[
        float, typer.Option("--forget-bias", help="TF1 LSTMCell forget_bias folded into the f-gate bias.")
    ] = 1.0,
    input_size: Annotated[
        str | None,
        typer.Option(
            "--input-size",
            help="Input CxHxW to trace --model with (which Linear takes a flattened map); default: the "
            "model's example_input_array.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only, write nothing.")] = False,
    force: force_option("Overwrite DST if it exists.") = False,
    json_out: json_option("convert") = False,
) -> None:
    from ptools.convert.api import ConvertOptions, plan, report, source_metadata
    from ptools.convert.writer import write_state_dict
    from ptools.files import check_output_path

    if model and template:
        raise PtoolsError("--model and --template are exclusive", hint="pick one target")
    dims = None
    if input_size is not None:
        if not model:
            raise PtoolsError("--input-size belongs to --model (it traces the target)")
        dims = _parse_input_size(input_size)
    if check_output and (not model or input_file is None or expected is None):
        raise PtoolsError("--check-output needs --model, --input and --expected")
    if dst is None and not dry_run:
        raise PtoolsError("missing DST", hint="give an output .safetensors/.pt path, or pass --dry-run")
    if dst is not None and not dry_run:
        if dst.suffix.lower() not in (".safetensors", ".pt", ".pth", ".bin"):
            raise PtoolsError(f"{dst}: unknown output type {dst.suffix or '(none)'}", hint="use .safetensors or .pt")
        check_output_path(dst, force)
    opts = ConvertOptions(map_file, model, template, include_optimizer, ema, verify, forget_bias, dims)
    p = plan(src, opts)
    check: dict[str, Any] | None = None
    if check_output:  # before writing: a conversion that fails its check leaves no file behind
        from ptools.convert.verify import check_model_output

        assert input_file is not None and expected is not None
        check = check_model_output(p, input_file, expected, tolerance)
    written = False
    if dst is not None and not dry_run and p.ok and (check is None or check["ok"]):
        write_state_dict(dst, p.out_tensors(), force=force, metadata=source_metadata(src))
        written = True
    doc = report(p, dst if not dry_run else None, written)
    if check is not None:
        doc["check_output"] = check
    failed = not p.ok or (check is not None and not check["ok"])
    from ptools.cli._output import set_verdict

    set_verdict(failed)
    if json_out:
        from ptools.cli._output import emit_json

        emit_json("convert", doc)
    else:
        _render(doc)
    if failed:
        raise typer.Exit(ExitCode.FINDINGS)


def _parse_input_size(text: str) -> tuple[int, ...]:
    """`CxHxW` (or `CxL`, `CxDxHxW`): one sample's shape without the batch axis."""
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not 1 <= len(dims) <= 4 or any(d < 1 for d in dims):
        raise PtoolsError(f"--input-size {text!r}: expected positive sizes like 3x224x224 (CxHxW)")
    return dims


def _shape(s: list[int]) -> str:
    return "(" + ",".join(str(d) for d in s) + ")"


_SKIPPED_USE = {
    "optimizer": "--include-optimizer",
    "counter": "--include-optimizer",
    "ema": "--ema",
    "metric": "never written: compiled metrics' running totals, not weights",
    "rule-skip": "--map skip",
}


def _render(doc: dict[str, Any]) -> None:
    """Tables for people. Piped (CI logs, files) each row stays one unwrapped line (print_table)."""
    from rich.markup import escape
    from rich.table import Table

    from ptools.cli._output import print_check_output, print_table, stdout_console

    con = stdout_console()
    src = doc["source"]
    con.print(
        f"{src['path']} ({src['format']}, {counted(src['tensors'], 'tensor')})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    table = Table()
    for col in ("source", "target", "transform", "before", "after", "match"):
        table.add_column(col, overflow="fold")
    for row in doc["tensors"]:
        source = escape(", ".join(row["source"]) or "-")
        target = escape(row["target"]) if row["target"] else f"[red]{escape(row['proposed'])}[/red]"
        match = row["match"] or ""
        style = "red" if match in ("unmatched", "shape-mismatch") or row.get("undetermined") else None
        if row.get("undetermined"):
            match = f"{match}, layout undetermined" if match else "layout undetermined"
        elif row.get("decided_by") and row["decided_by"] not in ("config",):
            match = f"{match} ({row['decided_by']})"
        table.add_row(
            source,
            target,
            escape(row["transform"]),
            _shape(row["shape_before"]),
            _shape(row["shape_after"]),
            escape(match),
            style=style,
        )
    print_table(table, con)
    if doc["notes"]:
        con.print("settings to change on the PyTorch side", highlight=False, soft_wrap=True)
        notes = Table()
        notes.add_column("layer")
        notes.add_column("setting")
        notes.add_column("what to do", overflow="fold")
        for n in doc["notes"]:
            notes.add_row(escape(n["layer"]), escape(n["setting"]), escape(n["message"]))
        print_table(notes, con)
    for r in doc.get("renames", []):
        con.print(f"renamed to match the target: {r['message']}", highlight=False, markup=False, soft_wrap=True)
    for title, rows in (
        (
            "layout undetermined (nothing is written until it is settled)",
            [f"{', '.join(u['source'])}: {u['why']}. Settle it with {u['settle']}" for u in doc["undetermined"]],
        ),
        ("unfilled target keys", [f"{u['key']} {_shape(u['shape'])}" for u in doc["unfilled_target"]]),
        ("unmatched source tensors", [", ".join(s) for s in doc["unmatched_source"]]),
        (
            "shape mismatches",
            [
                f"{', '.join(m['source'])} -> {m['target']}: converted {_shape(m['converted_shape'])}"
                f", target {_shape(m['target_shape'])}"
                for m in doc["shape_mismatch"]
            ],
        ),
        (
            "ambiguous",
            [
                f"{', '.join(a.get('source', []))}: {a.get('reason')}; candidates {', '.join(a.get('candidates', []))}"
                for a in doc["ambiguous"]
            ],
        ),
        ("duplicate target names", [f"{d['target']} <- {d['sources']}" for d in doc["duplicates"]]),
    ):
        if rows:
            con.print(f"[bold]{title}[/bold] ({len(rows)}):", highlight=False, soft_wrap=True)
            for r in rows[:50]:
                con.print(f"  {r}", highlight=False, markup=False, soft_wrap=True)
            if len(rows) > 50:
                con.print(f"  ... {len(rows) - 50} more", highlight=False, soft_wrap=True)
    if doc["skipped"]:
        roles: dict[str, int] = {}
        for s in doc["skipped"]:
            roles[s["role"]] = roles.get(s["role"], 0) + 1
        parts = [f"{n} {r}" + (f" ({_SKIPPED_USE[r]})" if r in _SKIPPED_USE else "") for r, n in roles.items()]
        con.print("skipped: " + ", ".join(parts), highlight=False, markup=False, soft_wrap=True)
    print_check_output(con, doc.get("check_output"))
    if doc["written"]:
        con.print(
            f"wrote {doc['output']} ({counted(sum(1 for r in doc['tensors'] if r['target']), 'tensor')})",
            highlight=False,
            soft_wrap=True,
        )
    elif doc["output"] and doc["undetermined"]:
        con.print(
            f"[red]not written[/red]: {doc['output']} (a tensor's layout is undetermined: see above)", soft_wrap=True
        )
    elif doc["output"] and not doc["ok"]:
        con.print(
            f"[red]not written[/red]: {doc['output']} (fix the mapping: --map rules, or a matching --model)",
            soft_wrap=True,
        )
    elif doc["output"]:
        con.print(f"[red]not written[/red]: {doc['output']} (--check-output failed)", soft_wrap=True)
