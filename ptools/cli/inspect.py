"""`ptools inspect`: read any checkpoint safely and fast, from the file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ptools.cli._common import json_option
from ptools.errors import ExitCode, PtoolsError
from ptools.words import counted

HELP = (
    "Show what a checkpoint holds without running it: a tree of module prefixes with tensor, parameter "
    "and byte counts, dtypes, nested structure (model/optimizer/epoch, Lightning), tied storages, and "
    "unsafe pickle globals. Formats are detected by content: torch zip and legacy files, TorchScript, "
    "safetensors, TF checkpoints, Keras. Exit 1 when the pickle names globals outside the allow-list, "
    "when --diff finds differences or --against finds key problems."
)

_NUMERIC_COLUMNS = {
    "tensors",
    "params",
    "buffers",
    "values",
    "bytes",
    "numel",
    "min",
    "max",
    "mean",
    "std",
    "nan",
    "inf",
    "uses",
}
_NUMERIC_COLUMNS |= {"max abs diff", "differing values"}
_MAX_ROWS = 60  # rows per list in human output; --json always has everything


def inspect_command(
    file: Annotated[Path, typer.Argument(help="The checkpoint (format detected by content, not extension).")],
    depth: Annotated[int, typer.Option("--depth", min=0, help="Levels of the module tree to show.")] = 2,
    keys: Annotated[bool, typer.Option("--keys", help="List every tensor key with shape, dtype and numel.")] = False,
    filter_glob: Annotated[
        str | None,
        typer.Option(
            "--filter",
            metavar="GLOB",
            help="Only keys matching GLOB (a plain word matches as a substring); implies --keys.",
        ),
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Add min/max/mean/std/NaN/Inf per tensor (reads data, memory-mapped).")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", metavar="PATH", help="The state_dict inside a nested checkpoint, e.g. model or state_dict."
        ),
    ] = None,
    diff: Annotated[
        Path | None, typer.Option("--diff", metavar="B", help="Compare with checkpoint B (any format).")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="SPEC",
            help="Check strict loading into a model: package.module:Factory or torchvision:NAME (imports torch).",
        ),
    ] = None,
    atol: Annotated[
        float,
        typer.Option(
            "--atol", min=0.0, help="With --diff: values equal when |a-b| <= atol + rtol*|b| (implies --stats)."
        ),
    ] = 0.0,
    rtol: Annotated[
        float,
        typer.Option("--rtol", min=0.0, help="With --diff: relative tolerance; a dtype change alone then passes."),
    ] = 0.0,
    scan: Annotated[bool, typer.Option("--scan", help="Only the security report of the file's pickles.")] = False,
    unsafe: Annotated[
        bool,
        typer.Option("--unsafe", help="Fully unpickle with torch.load(weights_only=False). RUNS CODE IN THE FILE."),
    ] = False,
    json_output: json_option("inspect") = False,
) -> None:
    from ptools.checkpoint import summary as sm
    from ptools.checkpoint.scan import security_report

    if scan and (diff or against or keys or filter_glob or stats or unsafe):
        raise PtoolsError("--scan is the security report alone: use it without other modes")
    if diff is not None and against:
        raise PtoolsError("use --diff or --against, not both")
    if (atol or rtol) and diff is None:
        raise PtoolsError("--atol/--rtol compare values of two files: use them with --diff B")
    reader = _open(file, unsafe)
    with reader:
        security = security_report(reader)
        if scan:
            payload = {"mode": "scan", "file": str(file), "format": reader.format, "security": security}
            _finish(payload, json_output, _render_scan, security["findings"] != [])
            return
        selection = sm.select(reader, key)
        base = {"file": str(file), "format": reader.format, "selection": _selection_json(selection)}
        if diff is not None:
            tolerance = (atol, rtol)
            _diff_mode(reader, selection, diff, key, stats, filter_glob, base, security, json_output, tolerance)
            return
        if against:
            from ptools.checkpoint.against import check_against

            result = check_against(reader, selection, against)
            payload = {"mode": "against", **base, "against": result, "security": security}
            _finish(payload, json_output, _render_against, not result["ok"] or bool(security["findings"]))
            return
        if keys or filter_glob or stats:
            rows = sm.key_rows(selection, sm.filter_keys(selection, filter_glob))
            if stats:
                from ptools.checkpoint.stats import tensor_stats

                for row in _progress(rows, "statistics"):
                    try:
                        row["stats"] = tensor_stats(reader, selection.full_keys[row["key"]])
                    except PtoolsError as e:  # e.g. data of a flagged legacy file is never loaded
                        row["stats"] = {"skipped": e.message}
            payload = {
                "mode": "stats" if stats else "keys",
                **base,
                "filter": filter_glob,
                "filter_note": sm.filter_miss(filter_glob) if filter_glob and not rows else None,
                "keys": rows,
                "security": security,
            }
            _finish(payload, json_output, _render_keys, bool(security["findings"]))
            return
        report = sm.summarize(reader, selection, depth, _file_size(file, reader))
        payload = {"mode": "summary", **report, "selection": _selection_json(selection), "security": security}
        _finish(payload, json_output, _render_summary, bool(security["findings"]))


# ----------------------------------------------------------------------------------------------- modes


def _open(path: Path, unsafe: bool) -> Any:
    from ptools.checkpoint import open_checkpoint

    if not unsafe:
        return open_checkpoint(path)
    from ptools.checkpoint.torch.objects import open_unsafe
    from ptools.cli._output import warn

    if not path.is_file():
        raise PtoolsError(f"{path}: no such file")
    # Scan first so the report still lists what the pickle names (and the user sees it before it runs).
    from ptools.checkpoint.scan import PICKLE_FORMATS

    scanned: list[dict[str, Any]] = []
    try:
        safe = open_checkpoint(path)
    except PtoolsError:
        safe = None  # the user asked for torch.load; let it try
    if safe is not None:
        if safe.format not in PICKLE_FORMATS:
            warn(f"--unsafe has no effect on {safe.format} files: they hold no pickle")
            return safe
        scanned = safe.pickle_globals()
        safe.close()
    unsafe_names = [f"{g['module']}.{g['name']}" for g in scanned if g["grade"] != "safe"]
    listed = f" It names {', '.join(unsafe_names)}." if unsafe_names else ""
    warn(
        f"--unsafe: fully unpickling {path} with torch.load(weights_only=False). Any code in the file RUNS NOW, "
        f"with your permissions. Only do this for files you trust.{listed}"
    )
    reader = open_unsafe(path)
    reader.scanned_globals = scanned
    return reader


def _diff_mode(
    reader: Any,
    selection: Any,
    other: Path,
    key: str | None,
    stats: bool,
    filter_glob: str | None,
    base: dict[str, Any],
    security: dict[str, Any],
    json_output: bool,
    tolerance: tuple[float, float] = (0.0, 0.0),
) -> None:
    from ptools.checkpoint import open_checkpoint
    from ptools.checkpoint import summary as sm
    from ptools.checkpoint.diff import diff_selections
    from ptools.checkpoint.scan import security_report

    with open_checkpoint(other) as reader_b:
        security_b = security_report(reader_b)
        try:
            sel_b = sm.select(reader_b, key)
        except PtoolsError:
            sel_b = sm.select(reader_b, None)  # --key names A's state_dict; B may be flat
        by_names = None
        if sm.has_roles(selection.infos.values()) or sm.has_roles(sel_b.infos.values()):
            # A TF checkpoint's keys are object paths; the same model's Keras file or another TF checkpoint
            # may only agree on the variable names. Pair the weights by name when that pairs more.
            na, nb = sm.named(selection, {sm.WEIGHT_ROLE}), sm.named(sel_b, {sm.WEIGHT_ROLE})
            if len(na.infos.keys() & nb.infos.keys()) > len(selection.infos.keys() & sel_b.infos.keys()):
                left_out = len(selection.infos) - len(na.infos) + len(sel_b.infos) - len(nb.infos)
                by_names, selection, sel_b = left_out, na, nb
        wanted = None
        if filter_glob:
            wanted = set(sm.filter_keys(selection, filter_glob)) | set(sm.filter_keys(sel_b, filter_glob))
        atol, rtol = tolerance
        values = stats or bool(atol or rtol)
        keys = None if wanted is None else list(wanted)
        result = diff_selections(reader, selection, reader_b, sel_b, values=values, keys=keys, atol=atol, rtol=rtol)
    if filter_glob and not wanted:
        result["filter_note"] = sm.filter_miss(filter_glob)
    result["paired_by"] = "variable names (weights only)" if by_names is not None else "keys"
    if by_names is not None:
        note = f"weights paired by variable name, not checkpoint key ({by_names} optimizer/EMA/other tensors left out)"
        result["hint"] = f"{note}; {result['hint']}" if result["hint"] else note
    payload = {"mode": "diff", **base, "diff": result, "security": security, "security_b": security_b}
    unsafe_any = bool(security["findings"] or security_b["findings"])
    _finish(payload, json_output, _render_diff, result["differ"] or unsafe_any)


def _progress(items: list[Any], what: str) -> Any:
    """A transient progress bar on stderr for people at a terminal; a plain iterator otherwise."""
    from ptools.cli._output import stderr_console

    console = stderr_console()
    if not console.is_terminal or len(items) < 20:
        return items
    from rich.progress import track

    return track(items, description=what, console=console, transient=True)


def _finish(payload: dict[str, Any], json_output: bool, render: Any, findings: bool) -> None:
    from ptools.cli._output import set_verdict

    set_verdict(findings)
    if json_output:
        from ptools.cli._output import emit_json

        emit_json("inspect", payload)
    else:
        payload = _escape_markup(payload)  # names come from the file: `[link=...]` must print as text
        render(payload)
        if payload.get("mode") != "scan":
            _render_security(payload["security"], label=payload.get("file", ""))
            if payload.get("security_b"):
                _render_security(payload["security_b"], label=payload["diff"]["b"]["file"])
    if findings:
        raise typer.Exit(ExitCode.FINDINGS)


def _escape_markup(value: Any) -> Any:
    """Every string in the payload with rich markup escaped (a copy; dict keys the renderers use are kept)."""
    from rich.markup import escape

    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (undecodable file names, pickled strings) print as escapes
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return escape(value)
    if isinstance(value, dict):
        return {k: _escape_markup(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_markup(v) for v in value]
    return value


def _selection_json(selection: Any) -> dict[str, Any]:
    return {
        "path": selection.path,
        "how": selection.how,
        "tensors": len(selection.infos),
        "candidates": selection.candidates,
        "note": selection.note,
    }


def _file_size(path: Path, reader: Any = None) -> int | None:
    files = getattr(reader, "files", None)
    if files is not None:  # a sharded checkpoint: the index and every shard
        try:
            return sum(p.stat().st_size for p in files)
        except OSError:
            return None
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------------- render


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _values(n: int) -> str:
    return f"{human_count(n)} value" + ("" if n == 1 else "s")


def human_count(n: int) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)


def _console() -> Any:
    from ptools.cli._output import stdout_console

    return stdout_console()


def _table(*columns: str, title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None, header_style="bold")
    for i, col in enumerate(columns):
        numeric = i > 0 and col in _NUMERIC_COLUMNS
        # Names are kept whole (print_table gives the first column its longest cell), numbers never wrap
        # ("193.0 / KiB"), shapes fold; the rest gives way with an ellipsis.
        overflow = "fold" if i == 0 or col == "shape" else "ellipsis"
        table.add_column(col, justify="right" if numeric else "left", overflow=overflow, no_wrap=numeric)
    return table


def _print_table(table: Any) -> None:
    from ptools.cli._output import print_table

    print_table(table, _console())


def _header(payload: dict[str, Any]) -> None:
    console = _console()
    meta = payload.get("metadata", {})
    size = f", {human_bytes(payload.get('file_size'))}" if payload.get("file_size") is not None else ""
    console.print(f"[bold]{payload['file']}[/bold]  ({payload['format']}{size})", highlight=False, soft_wrap=True)
    if meta.get("reader"):
        console.print(f"  read with: {meta['reader']}", highlight=False, soft_wrap=True)
    extras = {
        k: v
        for k, v in meta.items()
        if k not in ("reader", "user_metadata", "pickle_error") and v not in (None, "", [])
    }
    if extras:
        text = ", ".join(f"{k}={_clip(v)}" for k, v in extras.items())
        console.print("  " + text, highlight=False, soft_wrap=True)
    user = meta.get("user_metadata")
    if user:
        text = ", ".join(f"{k}={_clip(v)}" for k, v in user.items())
        console.print("  metadata: " + text, highlight=False, soft_wrap=True)


def _clip(value: Any, limit: int = 200) -> str:
    """A metadata value for a person: the file decides its length (--json has it whole)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _selection_line(sel: dict[str, Any]) -> str:
    if sel["path"]:
        return f"state_dict: '{sel['path']}' ({sel['how']}, {counted(sel['tensors'], 'tensor')})"
    return f"tensors: {sel['how']} ({counted(sel['tensors'], 'tensor')})"


def _render_summary(p: dict[str, Any]) -> None:
    console = _console()
    _header(p)
    console.print(f"  kind: {p['kind']}", highlight=False, soft_wrap=True)
    for row in p.get("training_state", []):
        if row["role"] == "untagged":  # e.g. the TF2 object graph: format metadata, not a variable
            console.print(
                f"  not variables (left out of the tree): {', '.join(row['names'])} ({human_bytes(row['bytes'])})",
                highlight=False,
                soft_wrap=True,
            )
    if p["top_level"]:
        table = _table("key", "holds", title="\nTop-level structure")
        rows, more = _limited(p["top_level"])
        for row in rows:
            table.add_row(row["key"], row["summary"])
        _print_table(table)
        _print_more(console, more)
    if p.get("lightning"):
        console.print("\n[bold]Lightning[/bold]")
        for k, v in p["lightning"].items():
            console.print(f"  {k}: {v}", highlight=False, soft_wrap=True)
    console.print("\n" + _selection_line(p["selection"]), highlight=False, soft_wrap=True)
    if p["selection"].get("note"):
        console.print(f"  [yellow]{p['selection']['note']}[/yellow]", highlight=False, soft_wrap=True)
    for w in p["wrapper_prefixes"]:
        scope = "every key" if w["all"] else counted(w["keys"], "key")
        console.print(
            f"  [yellow]prefix '{w['prefix']}' on {scope}[/yellow] "
            f"({w['meaning']}; strip it to load into the bare model)",
            highlight=False,
            soft_wrap=True,
        )
    state = [r for r in p.get("training_state", []) if r["role"] != "untagged"]  # untagged: in the header
    if state and not p["totals"]["tensors"]:
        # e.g. a bare optimizer.state_dict() or Hugging Face's rng_state.pth: no model to draw a tree of
        what = ", ".join(_ROLE_LABELS.get(r["role"], r["role"]) for r in state)
        console.print(f"  no model weights here: {what} only", highlight=False, soft_wrap=True)
    else:
        _render_tree(p)
    _render_state_and_rest(p, state)


def _render_tree(p: dict[str, Any]) -> None:
    by_names = p.get("tree_by", "keys") != "keys"
    title = f"\nModules (depth {p['depth']}" + (f"; {p['tree_by']})" if by_names else ")")
    buffers = bool(p["totals"].get("buffers"))  # the column only where there are buffers
    counts = ("params", "buffers") if buffers else ("params",)
    rows = list(_walk_tree(p["tree"])) or [({**p["tree"], "name": "(all)"}, 1)]  # --depth 0: one row
    # One dtype throughout: said once in the totals, not on every row (room for names and shapes).
    mixed = len({",".join(node["dtypes"]) for node, _ in rows}) > 1
    table = _table("module", "tensors", *counts, "bytes", *(["dtypes"] if mixed else []), "shape", title=title)
    for node, level in rows:
        name = "  " * (level - 1) + node["name"] + ("/" if node.get("collapsed") else "")
        table.add_row(
            name,
            str(node["tensors"]),
            *(human_count(node.get(c, 0)) for c in counts),
            human_bytes(node["bytes"]),
            *([",".join(node["dtypes"])] if mixed else []),
            shape_text(node["shape"]) if "shape" in node else "",
        )
    _print_table(table)
    _render_totals(
        p["totals"], "Totals (weights)" if by_names else "Totals (selection)" if p["selection"]["path"] else "Totals"
    )


def _render_state_and_rest(p: dict[str, Any], state: list[dict[str, Any]]) -> None:
    console = _console()
    if state:
        title = "\nTraining state" + (" (not counted above)" if p["totals"]["tensors"] else "")
        table = _table("state", "tensors", "values", "bytes", "names", title=title)
        for row in state:
            table.add_row(
                _ROLE_LABELS.get(row["role"], row["role"]),
                str(row["tensors"]),
                human_count(row["params"]),
                human_bytes(row["bytes"]),
                _state_names(row),
            )
        _print_table(table)
    if p["selection"]["path"] or p["file_totals"]["tensors"] != p["totals"]["tensors"]:
        t = p["file_totals"]
        console.print(
            f"whole file: {counted(t['tensors'], 'tensor')}, {_values(t['params'] + t.get('buffers', 0))}, "
            f"{human_bytes(t['bytes'])}",
            highlight=False,
            soft_wrap=True,
        )
    if p["shared_storages"]:
        table = _table("storage", "bytes", "kind", "keys", title="\nShared storages (counted once)")
        rows, more = _limited(p["shared_storages"])
        for g in rows:
            keys = ", ".join(g["keys"][:6]) + (f" ... and {len(g['keys']) - 6} more" if len(g["keys"]) > 6 else "")
            table.add_row(str(g["storage"]), human_bytes(g["bytes"]), g["kind"], keys)
        _print_table(table)
        _print_more(console, more)


_ROLE_LABELS = {
    "slot": "optimizer slots",
    "optimizer": "optimizer",
    "counter": "counters",
    "ema": "EMA weights",
    "metric": "metric state",
    "rng": "RNG state",
    "scheduler": "scheduler",
    "scaler": "loss scaler",
}


def _state_names(row: dict[str, Any]) -> str:
    if row["role"] == "slot" and row.get("slot_names"):
        return f"{', '.join(row['slot_names'])} for {row['weights']} weights"
    names = row.get("parts") or row["names"]
    return ", ".join(names[:6]) + (f", ... ({len(names) - 6} more)" if len(names) > 6 else "")


_RUN = 6  # numbered siblings (blocks.0 ... blocks.N) beyond this many are folded into one row


def _walk_tree(root: dict[str, Any]) -> Any:
    """Depth-first rows; long runs of numbered siblings show the first one and one row for the rest."""
    stack: list[tuple[dict[str, Any], int]] = [(c, 1) for c in reversed(_fold(root.get("children", [])))]
    count = 0
    while stack:
        node, level = stack.pop()
        count += 1
        if count > 400:
            return
        yield node, level
        stack.extend((c, level + 1) for c in reversed(_fold(node.get("children", []))))


def _fold(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(children) <= _RUN or not all(c["name"].isdigit() for c in children):
        return children
    rest = children[1:]
    folded = {
        "name": f"{rest[0]['name']}…{rest[-1]['name']} ({len(rest)} more like {children[0]['name']})",
        "tensors": sum(c["tensors"] for c in rest),
        "params": sum(c["params"] for c in rest),
        "buffers": sum(c.get("buffers", 0) for c in rest),
        "bytes": sum(c["bytes"] for c in rest),
        "dtypes": sorted({d for c in rest for d in c["dtypes"]}),
    }
    return [children[0], folded]


def _render_totals(t: dict[str, Any], title: str) -> None:
    counts = ("params", "buffers") if t.get("buffers") else ("params",)
    table = _table("dtype", "tensors", *counts, "bytes", title=f"\n{title}")
    for dtype, row in sorted(t["by_dtype"].items(), key=lambda kv: -kv[1]["bytes"]):
        cells = (human_count(row.get(c, 0)) for c in counts)
        table.add_row(dtype, str(row["tensors"]), *cells, human_bytes(row["bytes"]))
    cells = (human_count(t.get(c, 0)) for c in counts)
    table.add_row("[bold]total[/bold]", str(t["tensors"]), *cells, human_bytes(t["bytes"]))
    _print_table(table)
    if t.get("buffers"):
        _console().print(
            f"{counted(t['params'], 'parameter', ',')}; {counted(t['buffers'], 'value', ',')} in "
            f"{counted(t['buffer_tensors'], 'buffer')} "
            f"({t.get('buffers_by', 'by name and dtype: running statistics, counters')}), not trained",
            highlight=False,
            soft_wrap=True,
        )
    elif t["tensors"]:  # the exact figure too (the table rounds: 524.76K)
        _console().print(counted(t["params"], "parameter", ","), highlight=False, soft_wrap=True)


def shape_text(shape: list[int] | tuple[int, ...] | None) -> str:
    """The one way a shape is printed everywhere (keys, tree, diff, against): 3×64×7×7, or "scalar"."""
    if shape is None:
        return "-"
    return "×".join(map(str, shape)) or "scalar"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _render_keys(p: dict[str, Any]) -> None:
    console = _console()
    console.print(
        f"[bold]{p['file']}[/bold]  ({p['format']})  " + _selection_line(p["selection"]),
        highlight=False,
        soft_wrap=True,
    )
    tagged = any("role" in row for row in p["keys"])
    named = any("name" in row for row in p["keys"])
    stat_cols = ["min", "max", "mean", "std", "nan", "inf"] if p["mode"] == "stats" else []
    cols = ["key"] + (["name"] if named else []) + (["role"] if tagged else []) + ["shape", "dtype", "numel"]
    rows = []
    for row in p["keys"]:
        cells = [row["key"]] + ([row.get("name", "")] if named else [])
        if tagged:
            cells.append(row["role"] + (f" {row['slot_name']}" if row.get("slot_name") else ""))
        cells += [shape_text(row["shape"]), row["dtype"], f"{row['numel']:,}"]
        if stat_cols:
            s = row.get("stats", {})
            cells += ["-"] * 6 if "skipped" in s else [_fmt(s.get(k)) for k in stat_cols]
        rows.append(cells)
    table = _table(*cols, *stat_cols)
    for cells in rows:
        table.add_row(*cells)
    if not _fits(table, console):
        _print_stacked(cols, stat_cols, rows, console)
    else:
        _print_table(table)
    by_role = ""
    if tagged:
        from collections import Counter

        counts = Counter(row["role"] for row in p["keys"])
        by_role = " (" + ", ".join(f"{n} {role}" for role, n in counts.items()) + ")"
    console.print(
        counted(len(p["keys"]), "key") + (f" matching {p['filter']!r}" if p.get("filter") else "") + by_role,
        highlight=False,
        soft_wrap=True,
    )
    if p.get("filter_note"):
        console.print(f"[yellow]{p['filter_note']}[/yellow]", highlight=False, soft_wrap=True)


def _fits(table: Any, console: Any) -> bool:
    """Whether a table fits the terminal as it is (piped output always does: it is printed at full width)."""
    if not console.is_terminal:
        return True
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update(max_width=10_000), table).maximum <= console.width


def _print_stacked(cols: list[str], stat_cols: list[str], rows: list[list[str]], console: Any) -> None:
    """A terminal too narrow for one line per key (80 columns and --stats): each key on its own line, whole,
    its values on the next, in columns under one header. Nothing is folded or cut."""
    names = cols[1:] + stat_cols
    values = [r[1:] for r in rows]
    # NaN/Inf counts that are 0 everywhere are said once, not given two columns on every line.
    drop = {c for c in ("nan", "inf") if c in names and all(v[names.index(c)] == "0" for v in values)}
    keep = [i for i, c in enumerate(names) if c not in drop]
    widths = {i: max(len(names[i]), *(len(v[i]) for v in values)) for i in keep}

    def line(cells: list[str]) -> str:
        parts = [cells[i].rjust(widths[i]) if names[i] in _NUMERIC_COLUMNS else cells[i].ljust(widths[i]) for i in keep]
        return ("  " + "  ".join(parts)).rstrip()

    console.print(line(names), style="bold", highlight=False, soft_wrap=True, markup=False)
    for key_cell, cells in zip((r[0] for r in rows), values, strict=True):
        console.print(key_cell, highlight=False, soft_wrap=True)  # escaped already: markup prints it as it is
        console.print(line(cells), highlight=False, soft_wrap=True, markup=False)
    if drop:
        console.print(f"({' and '.join(sorted(drop))}: 0 in every tensor)", highlight=False)


def _limited(items: list[Any]) -> tuple[list[Any], str]:
    if len(items) <= _MAX_ROWS:
        return items, ""
    return items[:_MAX_ROWS], f"  ... and {len(items) - _MAX_ROWS} more (--json lists all)"


def _print_more(console: Any, more: str) -> None:
    if more:
        console.print(more, highlight=False, soft_wrap=True)


def _print_key_list(console: Any, label: str, keys: list[str]) -> None:
    """A titled list of keys, cut at _MAX_ROWS; nothing when empty."""
    if not keys:
        return
    rows, more = _limited(keys)
    console.print(f"\n[bold]{label}[/bold] ({len(keys)})", soft_wrap=True)
    for k in rows:
        console.print(f"  {k}", highlight=False, soft_wrap=True)
    if more:
        console.print(more)


def _render_diff(p: dict[str, Any]) -> None:
    console = _console()
    d = p["diff"]
    console.print(
        f"[bold]A[/bold] {d['a']['file']} ({d['a']['format']}, {counted(d['a']['tensors'], 'tensor')})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"[bold]B[/bold] {d['b']['file']} ({d['b']['format']}, {counted(d['b']['tensors'], 'tensor')})",
        highlight=False,
        soft_wrap=True,
    )
    _print_key_list(console, "only in A", d["only_in_a"])
    _print_key_list(console, "only in B", d["only_in_b"])
    if d["shape_changed"]:
        table = _table("key", "A", "B", title=f"\nShape changed ({len(d['shape_changed'])})")
        rows, more = _limited(d["shape_changed"])
        for r in rows:
            table.add_row(r["key"], shape_text(r["a"]), shape_text(r["b"]))
        _print_table(table)
        _print_more(console, more)
    tolerant = bool(d.get("atol") or d.get("rtol"))
    if d["dtype_changed"]:
        note = " (values compared within the tolerance)" if tolerant else ""
        table = _table("key", "A", "B", title=f"\nDtype changed ({len(d['dtype_changed'])}){note}")
        rows, more = _limited(d["dtype_changed"])
        for r in rows:
            table.add_row(r["key"], r["a"], r["b"])
        _print_table(table)
        _print_more(console, more)
    if d["value_changed"]:
        within = f", beyond atol {d['atol']:g} + rtol {d['rtol']:g}·|b|" if tolerant else ""
        title = f"\nValues differ ({len(d['value_changed'])}; largest first{within})"
        table = _table("key", "max abs diff", "differing values", title=title)
        rows, more = _limited(d["value_changed"])
        for r in rows:
            table.add_row(r["key"], _fmt(r["max_abs"]), f"{r['differing']:,}")
        _print_table(table)
        _print_more(console, more)
    if d.get("filter_note"):
        console.print(f"\n[yellow]{d['filter_note']}[/yellow]", highlight=False, soft_wrap=True)
    if d["hint"]:
        console.print(f"\n[yellow]hint:[/yellow] {d['hint']}", highlight=False, soft_wrap=True)
    if d["differ"]:
        reasons = [
            f"{len(d[k])} {label}"
            for k, label in (
                ("only_in_a", "only in A"),
                ("only_in_b", "only in B"),
                ("renamed", "paired only after stripping a prefix"),
                ("shape_changed", "shape changed"),
                ("dtype_changed", "dtype changed"),
                ("value_changed", "values differ"),
            )
            if d.get(k) and not (k == "dtype_changed" and tolerant)
        ]
        console.print(
            f"\n[red]differ[/red] ({', '.join(reasons)}): {d['identical']} tensors identical"
            + (" in value" if d["values_compared"] else " in shape and dtype"),
            highlight=False,
            soft_wrap=True,
        )
    else:
        what = (
            "shapes, dtypes and values" if d["values_compared"] else "shapes and dtypes (add --stats to compare values)"
        )
        if tolerant:
            what = f"shapes, and values within atol {d['atol']:g} + rtol {d['rtol']:g}·|b|"
        console.print(f"\n[green]same keys, {what}[/green]", highlight=False, soft_wrap=True)


def _render_against(p: dict[str, Any]) -> None:
    console = _console()
    r = p["against"]
    console.print(
        f"[bold]{p['file']}[/bold]  ({p['format']})  " + _selection_line(p["selection"]),
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"model: {r['model_class']} from {r['spec']} ({counted(r['model_keys'], 'key')}; file: {r['file_keys']})",
        highlight=False,
        soft_wrap=True,
    )
    c = r.get("counts")
    if c:
        extra = f"; {counted(c['not_in_model'], 'key')} the model does not have" if c["not_in_model"] else ""
        console.print(
            f"file values as the model names them: {c['params']:,} parameters, {c['buffers']:,} in "
            f"{c['buffer_tensors']} buffers{extra}",
            highlight=False,
            soft_wrap=True,
        )
    _print_key_list(console, "missing in the file", r["missing"])
    _print_key_list(console, "unexpected in the file", r["unexpected"])
    if r["shape_mismatch"]:
        table = _table("key", "model", "file", title=f"\nShape mismatch ({len(r['shape_mismatch'])})")
        for m in _limited(r["shape_mismatch"])[0]:
            table.add_row(m["key"], shape_text(m["model"]), shape_text(m["file"]))
        _print_table(table)
    if r["ok"]:
        console.print("\n[green]load_state_dict(strict=True) would accept this state_dict[/green]")
        return
    if r["fixes"]:
        console.print("\n[bold]likely fixes[/bold]")
        for f in r["fixes"]:
            console.print(
                f"  {f['fix']}: {f['problems_after']} problems left "
                f"({f['matched_after']} of {r['model_keys']} keys match)",
                highlight=False,
                soft_wrap=True,
            )


_MAX_FINDINGS = 30  # findings listed one per line; the rest counted (--json lists all)


def _render_scan(p: dict[str, Any]) -> None:
    console = _console()
    s = p["security"]
    console.print(f"[bold]{p['file']}[/bold]  ({p['format']})", highlight=False, soft_wrap=True)
    if not s["pickle"]:
        console.print(f"[green]{s['note']}[/green]", highlight=False, soft_wrap=True)
        return
    colour = {"safe": "green", "suspicious": "yellow", "dangerous": "red"}
    table = _table("global", "grade", "uses", "why", "where / calls")
    grouped = {name for group in s.get("groups", []) for name in group["globals"]}
    for group in s.get("groups", []):
        table.add_row(
            f"{group['family']}.* ({group['classes']} stock classes)",
            f"[{colour[group['grade']]}]{group['grade']}[/{colour[group['grade']]}]",
            str(group["uses"]),
            group["reason"],
            ", ".join(group["names"][:6]) + (", ..." if len(group["names"]) > 6 else ""),
        )
    rows = [g for g in s["globals"] if f"{g['module']}.{g['name']}" not in grouped]
    for g in rows[:_MAX_ROWS]:
        where = "; ".join((g["calls"][:2] if g["grade"] != "safe" else []) or g["where"][:3])
        table.add_row(
            f"{g['module']}.{g['name']}",
            f"[{colour[g['grade']]}]{g['grade']}[/{colour[g['grade']]}]",
            str(g["count"]),
            g["reason"],
            where,
        )
    _print_table(table)
    if len(rows) > _MAX_ROWS:
        console.print(f"  ... and {len(rows) - _MAX_ROWS} more globals (--json lists all)", highlight=False)
    c = s["counts"]
    console.print(
        f"\n{c['safe']} safe, {c['suspicious']} suspicious, {c['dangerous']} dangerous", highlight=False, soft_wrap=True
    )
    _render_security(s, label=p["file"])


def _render_security(s: dict[str, Any], label: str) -> None:
    console = _console()
    if not s["pickle"]:
        return
    if s.get("error"):
        console.print(f"[yellow]no reader could open it: {s['error']}[/yellow]", highlight=False, soft_wrap=True)
    for view in s.get("other_loaders", []):
        console.print(f"[yellow]also read by {view['loader']}: {view['how']}[/yellow]", highlight=False, soft_wrap=True)
    for note in s.get("notes", [])[:5]:
        console.print(f"[yellow]not scanned: {note}[/yellow]", highlight=False, soft_wrap=True)
    if s.get("pickle_error"):
        console.print(
            f"[yellow]pickle stream ended early: {s['pickle_error']}[/yellow]", highlight=False, soft_wrap=True
        )
    if not s["findings"]:
        console.print(
            f"\n[green]pickle in {label}: only allow-listed globals ({s['counts']['safe']})[/green]",
            highlight=False,
            soft_wrap=True,
        )
        return
    colour = "red" if s["grade"] == "dangerous" else "yellow"
    console.print(
        f"\n[bold {colour}]UNSAFE {s.get('source', 'pickle')} in {label}: {len(s['findings'])} global(s) "
        "outside the allow-list "
        f"({s['grade']}); nothing was loaded or run[/bold {colour}]",
        highlight=False,
        soft_wrap=True,
    )
    grouped = {name for group in s.get("groups", []) for name in group["globals"]}
    for group in s.get("groups", []):
        names = ", ".join(group["names"][:8]) + (", ..." if len(group["names"]) > 8 else "")
        console.print(
            f"  [yellow]{group['grade']}[/yellow] {group['family']}: {group['classes']} stock classes "
            f"({names}): {group['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    rest = [g for g in s["findings"] if f"{g['module']}.{g['name']}" not in grouped]
    # Dangerous ones first, so a cap never hides them behind a long list of suspicious classes.
    rest.sort(key=lambda g: g["grade"] != "dangerous")
    for g in rest[:_MAX_FINDINGS]:
        c = "red" if g["grade"] == "dangerous" else "yellow"
        console.print(
            f"  [{c}]{g['grade']}[/{c}] {g['module']}.{g['name']}: {g['reason']}",
            highlight=False,
            soft_wrap=True,
        )
        for call in g["calls"][:3]:
            console.print(f"      would call: {call}", highlight=False, soft_wrap=True)
        if g["where"]:
            console.print(f"      in: {', '.join(g['where'][:5])}", highlight=False, soft_wrap=True)
    if len(rest) > _MAX_FINDINGS:
        console.print(f"  ... and {len(rest) - _MAX_FINDINGS} more (--json lists all)", highlight=False)
