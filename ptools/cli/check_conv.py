"""`ptools check-conv`: TF SAME/VALID arithmetic for one op or a range of sizes, or a scan of a whole model."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Annotated, Any

import typer

from ptools import padding as tfpad
from ptools.cli._common import json_option
from ptools.errors import ExitCode, PtoolsError

HELP = (
    "Check conv/pool padding against TensorFlow's SAME/VALID rule. Arithmetic: --input 299 --kernel 3 "
    "--stride 2 prints TF's output size and pads, the symmetric PyTorch layer that reproduces it (if any) and "
    "what common recipes give; --input 1..64 prints a table. Model scan: --model torchvision:resnet18 "
    "--input-size 3x224x224 runs one forward pass and exits 1 when a conv/pool layer differs from TF."
)

MAX_RANGE = 4096


class Op(str, Enum):
    conv = "conv"
    transpose = "transpose"
    maxpool = "maxpool"
    avgpool = "avgpool"


class Mode(str, Enum):
    same = "same"
    valid = "valid"


def parse_dims(text: str, flag: str, count: int = 2) -> tuple[int, ...]:
    """`N` or `HxW` (with count=3: `CxHxW`) as positive integers; `N` repeats for every dimension."""
    parts = text.strip().lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        forms = "N or HxW" if count == 2 else "CxHxW"
        raise PtoolsError(f"{flag} {text!r}: expected {forms}") from None
    if len(values) == 1 and count == 2:
        values = values * 2
    if len(values) != count:
        forms = "N or HxW" if count == 2 else "CxHxW"
        raise PtoolsError(f"{flag} {text!r}: expected {forms}")
    if any(v < 1 for v in values):
        raise PtoolsError(f"{flag} {text!r}: sizes must be positive integers")
    return values


def parse_range(text: str) -> range | None:
    """`A..B` (inclusive) or None when `text` is not a range."""
    if ".." not in text:
        return None
    start, _, stop = text.partition("..")
    try:
        a, b = int(start), int(stop)
    except ValueError:
        raise PtoolsError(f"--input {text!r}: expected a range A..B of integers") from None
    if a < 1 or b < a:
        raise PtoolsError(f"--input {text!r}: the range needs 1 <= A <= B")
    if b - a + 1 > MAX_RANGE:
        raise PtoolsError(f"--input {text!r}: at most {MAX_RANGE} sizes per table")
    return range(a, b + 1)


def check_conv_command(
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Input size: N, HxW, or a range A..B (prints a table).")
    ] = None,
    kernel: Annotated[str | None, typer.Option("--kernel", "-k", help="Kernel size: N or HxW.")] = None,
    stride: Annotated[
        str | None, typer.Option("--stride", "-s", help="Stride: N or HxW (default 1; pools: the kernel).")
    ] = None,
    dilation: Annotated[str, typer.Option("--dilation", "-d", help="Dilation: N or HxW.")] = "1",
    op: Annotated[Op, typer.Option("--op", help="Which TF op to compute.")] = Op.conv,
    output_padding: Annotated[
        str | None, typer.Option("--output-padding", help="Keras output_padding for --op transpose: N or HxW.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Scan a model: package.module:Factory, file.py:Factory or torchvision:NAME."),
    ] = None,
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="Model input for --model: CxHxW, e.g. 3x224x224.")
    ] = None,
    expect: Annotated[
        Mode,
        typer.Option("--expect", "--padding", help="TF padding to compute (arithmetic) or check against (--model)."),
    ] = Mode.same,
    json_out: json_option("check-conv") = False,
) -> None:
    if model is not None:
        if input is not None or kernel is not None:
            raise PtoolsError("--model scans a model: --input/--kernel belong to the arithmetic mode")
        if input_size is None:
            raise PtoolsError("--model needs --input-size CxHxW", hint="e.g. --input-size 3x224x224")
        _scan(model, parse_dims(input_size, "--input-size", 3), expect.value, json_out)
        return
    if input_size is not None:
        raise PtoolsError("--input-size belongs to --model; use --input for the arithmetic")
    if kernel is None and (stride is not None or input is not None):
        # `check-conv --stride 2`: what TF does at that stride over the common kernels and several sizes
        if op == Op.transpose or output_padding is not None:
            raise PtoolsError("--op transpose needs --kernel", hint="e.g. --op transpose --kernel 3 --stride 2")
        s = parse_dims(stride or "1", "--stride")
        d = parse_dims(dilation, "--dilation")
        if s[0] != s[1] or d[0] != d[1]:
            raise PtoolsError("without --kernel, --stride and --dilation take one number (square windows)")
        sizes = _sizes(input, s[0])
        _stride_table(op.value, s[0], d[0], expect.value, sizes, json_out)
        return
    if input is None or kernel is None:
        if kernel is not None:  # `--kernel 3 --stride 2`: a table over several input sizes
            input = f"{4 * _first(stride)}..{6 * _first(stride) - 1}"
        else:
            raise PtoolsError(
                "check-conv needs --stride (a table over common kernels), --input and --kernel (arithmetic) or "
                "--model and --input-size (model scan)",
                hint="e.g. ptools check-conv --stride 2, or --input 224 --kernel 3 --stride 2",
            )
    args = {
        "op": op.value,
        "kernel": parse_dims(kernel, "--kernel"),
        "stride": None if stride is None else parse_dims(stride, "--stride"),
        "dilation": parse_dims(dilation, "--dilation"),
        "padding": expect.value,
        "output_padding": None if output_padding is None else _parse_output_padding(output_padding),
    }
    sizes = parse_range(input)
    if sizes is None:
        check = tfpad.check_op(input=parse_dims(input, "--input"), **args)
        if json_out:
            _emit(_check_doc(check))
        else:
            _render_check(check)
        return
    rows: list[tuple[int, tfpad.Check | str]] = []
    for n in sizes:
        try:
            rows.append((n, tfpad.check_op(input=n, **args)))
        except PtoolsError as e:
            rows.append((n, e.message))  # e.g. VALID with a kernel wider than the small sizes
    if all(isinstance(row, str) for _, row in rows):
        raise PtoolsError(f"--input {input}: {rows[0][1]}")
    if json_out:
        _emit({"op": op.value, "mode": expect.value, "rows": [_row_doc(r) for r in rows]})
    else:
        _render_range(rows, op.value, expect.value)


def _first(stride: str | None) -> int:
    return parse_dims(stride or "1", "--stride")[0]


def _sizes(text: str | None, stride: int) -> list[int]:
    """--input N or A..B; without it two periods of the pattern (TF's pads repeat every `stride` sizes)."""
    if text is None:
        return list(range(4 * stride, 6 * stride))
    found = parse_range(text)
    if found is not None:
        return list(found)
    h, w = parse_dims(text, "--input")
    if h != w:
        raise PtoolsError("without --kernel, --input takes one number or a range A..B (square inputs)")
    return [h]


def _stride_table(op: str, stride: int, dilation: int, mode: str, sizes: list[int], json_out: bool) -> None:
    kernels = tfpad.COMMON_KERNELS
    rows = tfpad.stride_table(stride, sizes, kernels, op, dilation, mode)
    if all(r["output"] is None for r in rows):
        raise PtoolsError(f"--stride {stride}: {next(iter(rows[0]['errors'].values()))}")
    drift = _drift_summary(rows, stride)
    if json_out:
        doc = {"op": op, "mode": mode, "stride": stride, "dilation": dilation, "kernels": list(kernels)}
        doc["rows"] = [
            {
                "input": r["input"],
                "output": r["output"],
                "pads": {str(k): list(v) for k, v in r["pads"].items()},
                "drift": {str(k): v for k, v in r["drift"].items()},
            }
            for r in rows
        ]
        doc["recipes_drift"] = drift
        _emit(doc)
        return
    from rich.table import Table

    from ptools.cli._output import print_table, stdout_console

    layer = {"maxpool": "nn.MaxPool2d", "avgpool": "nn.AvgPool2d"}.get(op, "nn.Conv2d")
    out_rule = f"ceil(input / {stride})" if mode == "same" else "ceil((input - dilation * (kernel - 1)) / stride)"
    title = f"{op}, stride {stride}" + (f", dilation {dilation}" if dilation != 1 else "")
    table = Table(title=f"{title}, TF {mode.upper()}: output = {out_rule}; pads before,after", title_justify="left")
    table.add_column("input", justify="right")
    if mode == "same":
        table.add_column("TF out", justify="right")
    for k in kernels:
        table.add_column(f"k={k}", justify="left")
    for r in rows:
        cells = []
        for k in kernels:
            if k not in r["pads"]:
                cells.append("-")
                continue
            b, a = r["pads"][k]
            cells.append(f"[red]{b},{a} x[/red]" if "k//2" in r["drift"][k] else f"{b},{a}")
        lead = [str(r["input"])] + ([str(r["output"])] if mode == "same" else [])
        table.add_row(*lead, *cells)
    console = stdout_console()
    print_table(table, console)
    if mode == "same":
        console.print(
            f"x: {layer}(padding=k//2) differs from TF there (TF pads the odd cell after, or another size); the "
            f"pattern repeats every {stride} input sizes",
            highlight=False,
            soft_wrap=True,
        )
    for line in drift:
        console.print(line, highlight=False, soft_wrap=True)
    if op == "conv" and mode == "same":
        console.print(
            "exact: ptools.nn.Conv2dSame (or nn.ZeroPad2d with the pads above, then nn.Conv2d(padding=0)); "
            f"one case in full: ptools check-conv --input N --kernel K --stride {stride}",
            highlight=False,
            soft_wrap=True,
        )


_RECIPES = {
    "k//2": "padding=k//2",
    "'same'": "padding='same'",
    "floor(in/s)": "the floor(in/s) same-padding snippet",
    "padding=0": "padding=0",
}


def _drift_summary(rows: list[dict[str, Any]], stride: int) -> list[str]:
    """One line per recipe: the kernels and inputs (by residue mod stride) where it differs from TF."""
    where: dict[str, dict[int, set[int]]] = {}
    for r in rows:
        for k, keys in r["drift"].items():
            for key in keys:
                where.setdefault(key, {}).setdefault(k, set()).add(r["input"])
    shown = [r["input"] for r in rows]
    kernels = sorted({k for r in rows for k in r["pads"]})
    lines = []
    for key, per_kernel in where.items():
        by_text: dict[str, list[int]] = {}
        for k, inputs in sorted(per_kernel.items()):
            by_text.setdefault(_residues(inputs, stride, shown), []).append(k)
        parts = []
        for text, ks in by_text.items():
            which = "every kernel" if ks == kernels else "k=" + ",".join(map(str, ks))
            parts.append(f"{which} at {text}")
        what = "refused by PyTorch for stride > 1" if key == "'same'" and stride > 1 else "differs from TF"
        lines.append(f"{_RECIPES.get(key, key)}: {what} (" + "; ".join(parts) + ")")
    if not lines:
        lines.append("every common recipe matches TF here")
    return lines


def _residues(inputs: set[int], stride: int, shown: list[int]) -> str:
    """'every input', 'even inputs', 'inputs = 1 mod 3', or the sizes themselves when the table is short."""
    if set(shown) <= inputs:
        return "every input"
    residues = sorted({n % stride for n in inputs})
    if stride > 1 and all((n % stride in residues) == (n in inputs) for n in shown) and len(shown) >= stride:
        if stride == 2:
            return "even inputs" if residues == [0] else "odd inputs"
        return f"inputs = {', '.join(map(str, residues))} mod {stride}"
    return "inputs " + ", ".join(map(str, sorted(inputs)))


def _parse_output_padding(text: str) -> tuple[int, int]:
    try:
        values = tuple(int(p) for p in text.strip().lower().split("x"))
    except ValueError:
        raise PtoolsError(f"--output-padding {text!r}: expected N or HxW") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 0:
        raise PtoolsError(f"--output-padding {text!r}: expected N or HxW, non-negative")
    return (values[0], values[1])


# JSON documents.


def _emit(doc: dict[str, Any]) -> None:
    from ptools.cli._output import emit_json  # the shared writer: schema tag, never through rich

    emit_json("check-conv", doc)


def _check_doc(check: tfpad.Check) -> dict[str, Any]:
    doc = dataclasses.asdict(check)
    return _lists(doc)


def _row_doc(row: tuple[int, tfpad.Check | str]) -> dict[str, Any]:
    n, check = row
    if isinstance(check, str):
        return {"input": [n, n], "output": None, "padding": None, "error": check}
    return _check_doc(check)


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


# Text for people (rich is imported only here, so the JSON path stays light).


def _hw(values: tuple[int, int] | None) -> str:
    return "-" if values is None else f"{values[0]}x{values[1]}"


def _short(values: tuple[int, int]) -> str:
    return str(values[0]) if values[0] == values[1] else _hw(values)


def _pads(pads: tfpad.Pads) -> str:
    (top, bottom), (left, right) = pads
    return f"top {top}, bottom {bottom}, left {left}, right {right}"


def _render_check(check: tfpad.Check) -> None:
    """Plain lines through click (not rich): this is the path `ptools check-conv` users time by feel."""
    import os

    import click

    color = False if os.environ.get("NO_COLOR") else None  # None: click strips styles when not a TTY

    def line(text: str = "") -> None:
        click.echo(text, color=color)

    params = f"kernel {_hw(check.kernel)}, stride {_hw(check.stride)}"
    if check.dilation != (1, 1):
        params += f", dilation {_hw(check.dilation)}"
    if check.output_padding is not None:
        params += f", output_padding {_hw(check.output_padding)}"
    line(f"{check.op} {_hw(check.input)}, {params}, TF {check.mode.upper()} padding")
    line(f"  TF output   {_hw(check.output)}")
    sym = "symmetric" if check.symmetric else "asymmetric"
    if check.op == "transpose":  # TF's transposed conv = the full (padding=0) result, cropped
        line(f"  TF crop     {_pads(check.padding)} ({sym}) of the full transposed conv")
    else:
        line(f"  TF pads     {_pads(check.padding)} ({sym})")
    if check.pytorch:
        line("  PyTorch     " + click.style(check.pytorch, fg="green") + " reproduces it exactly")
    else:
        line("  PyTorch     " + click.style(check.pytorch_note, fg="yellow"))
    if check.mistakes:
        line("common recipes:")
        width = max(len(m.name) for m in check.mistakes)
        for m in check.mistakes:
            note = click.style(m.note, fg="green" if m.matches_tf else "red")
            line(f"  {m.name.ljust(width)}  {_hw(m.output).ljust(9)}  {note}")


def _render_range(rows: list[tuple[int, tfpad.Check | str]], op: str, mode: str) -> None:
    from rich.table import Table

    from ptools.cli._output import print_table

    first = next(c for _, c in rows if not isinstance(c, str))
    title = f"{op}, kernel {_hw(first.kernel)}, stride {_hw(first.stride)}"
    if first.dilation != (1, 1):
        title += f", dilation {_hw(first.dilation)}"
    table = Table(title=f"{title}, TF {mode.upper()}; x = differs from TF", title_justify="left")
    table.add_column("input", justify="right")
    table.add_column("TF out", justify="right")
    table.add_column("TF crop t,b/l,r" if op == "transpose" else "TF pads t,b/l,r")
    table.add_column("torch.nn exact")
    for m in first.mistakes:
        table.add_column(m.key)
    for n, check in rows:
        if isinstance(check, str):
            table.add_row(_hw((n, n)), "-", "[red]no output[/red]", "", *([""] * len(first.mistakes)))
            continue
        (t, b), (le, r) = check.padding
        # The layer string minus its name, kernel and stride: what to pass besides them.
        exact = check.pytorch[check.pytorch.index("padding=") : -1] if check.pytorch else "[yellow]none[/yellow]"
        cells = [_hw(m.output) if m.matches_tf else f"[red]{_hw(m.output)} x[/red]" for m in check.mistakes]
        table.add_row(_hw(check.input), _hw(check.output), f"{t},{b} / {le},{r}", exact, *cells)
    print_table(table)


# Model scan (imports torch).


def _scan(spec: str, input_size: tuple[int, ...], expect: str, json_out: bool) -> None:
    from ptools.nn.scan import load_model, scan_model

    model = load_model(spec)
    result = scan_model(model, (input_size[0], input_size[1], input_size[2]), expect, spec)
    if result.error and not result.drift:
        raise PtoolsError(f"--model {spec}: {result.error}")
    from ptools.cli._output import set_verdict

    set_verdict(not result.ok)
    if json_out:
        doc = _lists(dataclasses.asdict(result))
        doc.update(ok=result.ok, drift=result.drift)
        _emit(doc)
    else:
        _render_scan(result)
    if not result.ok:
        raise typer.Exit(ExitCode.FINDINGS)


def _render_scan(result) -> None:
    from rich.table import Table

    from ptools.cli._output import print_table, stdout_console

    c, h, w = result.input_size
    table = Table(title=f"{result.model} at {c}x{h}x{w}, against TF {result.expect.upper()}", title_justify="left")
    table.add_column("layer", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("input", no_wrap=True)
    table.add_column("k/s/d", no_wrap=True)
    table.add_column("PyTorch", no_wrap=True)
    table.add_column("TF", no_wrap=True)
    table.add_column("vs TF")
    for layer in result.layers:
        ksd = "/".join(_short(v) for v in (layer.kernel, layer.stride, layer.dilation))
        status = "[green]ok[/green]" if layer.ok else f"[red]{layer.problem}[/red]"
        row = (layer.name, layer.type, _hw(layer.input), ksd, _hw(layer.pytorch_output), _hw(layer.tf_output), status)
        table.add_row(*row)
    console = stdout_console()
    print_table(table, console)
    if result.error:
        console.print(f"[red]{result.error}[/red]", highlight=False, soft_wrap=True)
    n = len(result.layers)
    if result.ok:
        console.print(
            f"[green]{n} conv/pool layers, all match TF {result.expect.upper()}[/green]",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"[red]{result.drift} of {n} conv/pool layers differ from TF {result.expect.upper()}[/red]", soft_wrap=True
        )
