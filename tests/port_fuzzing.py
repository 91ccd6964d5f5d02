"""Random Keras models through `ptools port` and `ptools convert`, judged against Keras' own outputs.

    python benchmarks/port_fuzz.py --seed 9001 --n 200                 # models 0..199 of seed 9001
    python benchmarks/port_fuzz.py --seed 9001 --start 57 --n 1 --keep /tmp/m57   # replay one model

CI (tests/port/test_fuzz_corpus.py) judges a committed set of generated models the same way
(tests/fixtures/fuzz/, written by tests/fixtures/make_fuzz_fixtures.py): TensorFlow is not installed there.

The Keras side (benchmarks/port_fuzz_keras.py) runs in a TensorFlow environment (`--tf-python`, default
/work/tfvenv/bin/python or $PTOOLS_TF_PYTHON): it draws each model, saves it in every format of its family
(Keras 3: .keras, legacy .h5, .weights.h5, TF checkpoint; tf_keras: .h5, SavedModel, legacy weights .h5,
TF checkpoint) and Keras' outputs on random inputs. This side runs ptools (no TensorFlow) in-process through
the CLI, exactly as a user calls it, on every file:

- `port FILE OUT --json` (files with an architecture), then the emitted model.py with weights.safetensors
  on Keras' inputs;
- `convert FILE OUT.safetensors --model OUT/model.py:Class` (the port's module as the target), the module
  loaded with the converted weights and run on Keras' inputs;
- `convert FILE OUT.safetensors` (no target): every written tensor compared with the port's tensor of the
  same layer and role (the documented NCHW row order of a Dense after a Flatten taken into account).

Verdicts: `exact` (max abs error <= --rtol x max(1, output scale) plus Keras' own float32 round-off, against
Keras' float64 twin of the model where the Keras side could build one: see output_errors), `WRONG` (exit 0
with a larger error or a different tensor: the one forbidden outcome), `refused` (exit 1, each refusal naming
its layers / tensors), `refused-unnamed`, `rejected` (exit 2 on a genuine Keras file), `crash` (an exception
or "internal error"), `hang` (over --timeout), and for convert without a target `unjudged` (no port tensor to
compare with).
Prints a summary table and every failure with the command that replays it; `--jsonl` keeps all results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KERAS_SIDE = ROOT / "benchmarks" / "port_fuzz_keras.py"
DEFAULT_TF_PYTHON = os.environ.get("PTOOLS_TF_PYTHON", "/work/tfvenv/bin/python")
FAILURES = ("WRONG", "crash", "hang", "rejected", "refused-unnamed")


class Timeout(Exception):
    pass


def _alarm(_sig: int, _frame: Any) -> None:
    raise Timeout


def invoke(args: list[str], timeout: float) -> tuple[int, str, str, BaseException | None]:
    """Run one ptools command in-process as the CLI does: (exit code, stdout, stderr, uncaught exception)."""
    from typer.testing import CliRunner

    from ptools.cli import app

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(timeout))
    try:
        r = CliRunner().invoke(app, args)
    finally:
        signal.alarm(0)
    exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    if isinstance(exc, Timeout):
        raise Timeout
    return r.exit_code, r.stdout, r.stderr, exc


def _import_class(py: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_fuzz_port_{abs(hash(str(py)))}_{time.monotonic_ns()}", py)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return getattr(mod, name)


def run_module(model: Any, io: dict[str, np.ndarray], inputs: list[dict], outputs: list[dict]) -> list[np.ndarray]:
    """The port's module on Keras' inputs (NHWC -> NCHW where the port says), outputs back in Keras layout."""
    import torch

    xs = []
    for i, spec in enumerate(inputs):
        x = io[f"in{i}"]
        if spec["channels_first"] and x.ndim > 2:
            x = np.moveaxis(x, -1, 1)
        t = torch.from_numpy(np.ascontiguousarray(x))
        xs.append(t.long() if t.dtype in (torch.int32, torch.int64) else t.float())
    with torch.no_grad():
        out = model(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    res = []
    for o, spec in zip(outs, outputs, strict=True):
        a = o.detach().float().numpy()
        if spec["channels_first"] and a.ndim > 2:
            a = np.moveaxis(a, 1, -1)
        res.append(a)
    return res


def output_errors(got: list[np.ndarray], io: dict[str, np.ndarray], rtol: float) -> dict[str, Any]:
    """How far the port's outputs are from Keras', and whether that is within the judge's tolerance.

    The reference of output i is `ref<i>` (Keras' float64 twin, see port_fuzz_keras.float64_outputs) where the
    Keras side recorded one, else `out<i>` (Keras in float32). Allowed: rtol x max(1, output scale), plus, for a
    float64 reference, Keras' own float32 round-off on that output (max |out<i> - ref<i>|): a port is judged
    exact when it is as close to the exact result as Keras' float32 run is. Without this, a model that
    amplifies round-off (LayerNormalization over one feature: the round-off of x - mean times 1/sqrt(eps))
    judged a port that returns the exact result wrong. A shape difference is an infinite error."""
    err, scale, noise, ok = 0.0, 1.0, 0.0, True
    pairs = []
    for i, a in enumerate(got):
        y = io[f"out{i}"].astype(np.float32)
        if a.shape != y.shape:
            return {"max_err": float("inf"), "scale": scale, "ok": False}
        if y.size:
            scale = max(scale, float(np.abs(y).max()))
            pairs.append((a, y, io.get(f"ref{i}")))
    for a, y, ref in pairs:
        e = float(np.abs(a - (y if ref is None else ref)).max())
        r = 0.0 if ref is None else float(np.abs(y - ref).max())
        err, noise = max(err, e), max(noise, r)
        ok = ok and e <= rtol * scale + r
    res = {"max_err": err, "scale": scale, "ok": ok}
    if any(ref is not None for *_, ref in pairs):
        res["keras_f32_err"] = noise  # reported: the round-off the tolerance allowed for
    return res


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ptools: error:")]
    return _short(lines[-1] if lines else stderr)


def _classify_exit(code: int, stderr: str, exc: BaseException | None) -> str | None:
    if exc is not None:
        return "crash"
    if code == 2:
        return "crash" if "internal error" in stderr else "rejected"
    return None


def _run_json(args: list[str], res: dict[str, Any], opts: argparse.Namespace) -> tuple[int, dict] | dict[str, Any]:
    """Run a ptools command with --json: (its exit code, its document), or `res` finished with the verdict
    (hang, crash, rejected) when there is no document to judge."""
    try:
        code, stdout, stderr, exc = invoke(args, opts.timeout)
    except Timeout:
        return res | {"verdict": "hang"}
    res["exit"] = code
    bad = _classify_exit(code, stderr, exc)
    if bad:
        return res | {"verdict": bad, "message": _short(repr(exc)) if exc else _error_line(stderr)}
    return code, json.loads(stdout)


def judge_port(src: Path, out: Path, io: dict, case: dict, opts: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"tool": "port"}
    ran = _run_json(["port", str(src), str(out), "--json", "--force"], res, opts)
    if isinstance(ran, dict):
        return ran
    code, doc = ran
    if code == 1:
        un = doc.get("unsupported", [])
        named = bool(un) and all(u.get("layer") and u.get("class") for u in un)
        return res | {
            "verdict": "refused" if named else "refused-unnamed",
            "refused": sorted({f"{u.get('class')}: {_short(u.get('reason', ''), 90)}" for u in un}),
        }
    try:
        cls = _import_class(out / "model.py", doc["class_name"])
        model = cls().eval()
        from safetensors.torch import load_file

        model.load_state_dict(load_file(out / "weights.safetensors"), strict=True)
        got = run_module(model, io, doc["inputs"], doc["outputs"])
    except Exception as e:  # noqa: BLE001 - the written module fails: exit 0 with a broken port
        return res | {"verdict": "WRONG", "message": f"written module fails: {type(e).__name__}: {_short(str(e))}"}
    judged = output_errors(got, io, opts.rtol)
    res |= {k: v for k, v in judged.items() if k != "ok"} | {"class_name": doc["class_name"], "doc": doc}
    res["verdict"] = "exact" if judged["ok"] else _torch_or_wrong(model, io, doc, opts, res)
    return res


def _torch_or_wrong(model: Any, io: dict, doc: dict, opts: argparse.Namespace, res: dict[str, Any]) -> str:
    """ "torch-bug" when the module is exact with PyTorch's oneDNN (mkldnn) CPU kernels off: the emitted code is
    right and torch miscomputes it (seen: a conv on a (N, 1, H, 1) view whose strides make it look
    channels-last, the class of pytorch#82060 / #120547); else "WRONG"."""
    import torch

    was = torch._C._get_mkldnn_enabled()  # not mkldnn.flags(): it also sets TF32 knobs, with a warning each time
    torch._C._set_mkldnn_enabled(False)
    try:
        got = run_module(model, io, doc["inputs"], doc["outputs"])
    finally:
        torch._C._set_mkldnn_enabled(was)
    judged = output_errors(got, io, opts.rtol)
    if judged["ok"]:
        res["message"] = (
            f"exact ({judged['max_err']:.1e}) with torch.backends.mkldnn off: PyTorch's CPU kernel miscomputes it"
        )
        return "torch-bug"
    return "WRONG"


def judge_convert_model(src: Path, port: dict, out: Path, io: dict, opts: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"tool": "convert --model"}
    dst = out / "convert_model.safetensors"
    target = f"{port['dir'] / 'model.py'}:{port['class_name']}"
    ran = _run_json(["convert", str(src), str(dst), "--model", target, "--json", "--force"], res, opts)
    if isinstance(ran, dict):
        return ran
    code, doc = ran
    if code == 1 and _needs_input_size(doc) and port["doc"]["inputs"] and len(port["doc"]["inputs"]) == 1:
        # What a user does next: the refusal asks for --input-size, the port's docstring gives it.
        size = "x".join(str(d) for d in port["doc"]["inputs"][0]["shape"])
        res["input_size"] = size
        args = ["convert", str(src), str(dst), "--model", target, "--input-size", size, "--json", "--force"]
        ran = _run_json(args, res, opts)
        if isinstance(ran, dict):
            return ran
        code, doc = ran
    if code == 1:
        return res | _convert_refusal(doc)
    try:
        from safetensors.torch import load_file

        model = _import_class(port["dir"] / "model.py", port["class_name"])().eval()
        model.load_state_dict(load_file(dst), strict=True)
        got = run_module(model, io, port["doc"]["inputs"], port["doc"]["outputs"])
    except Exception as e:  # noqa: BLE001
        return res | {"verdict": "WRONG", "message": f"converted weights fail: {type(e).__name__}: {_short(str(e))}"}
    judged = output_errors(got, io, opts.rtol)
    res |= {k: v for k, v in judged.items() if k != "ok"}
    res["verdict"] = "exact" if judged["ok"] else _torch_or_wrong(model, io, port["doc"], opts, res)
    if res["verdict"] == "WRONG":
        res["message"] = _wrong_tensors(load_file(dst), port)
    return res


def _needs_input_size(doc: dict) -> bool:
    return any("--input-size" in (u.get("settle") or "") for u in doc.get("undetermined", [])) and all(
        u.get("kind") in ("flatten", "norm_axes") for u in doc.get("undetermined", [])
    )


def _convert_refusal(doc: dict) -> dict[str, Any]:
    named: list[str] = []
    for u in doc.get("undetermined", []):
        named.append(f"undetermined {u.get('kind')}: {'/'.join(u.get('source') or [])}")
    for u in doc.get("unfilled_target", []):
        named.append(f"unfilled {u.get('key')}")
    for u in doc.get("shape_mismatch", []):
        named.append(f"shape {'/'.join(u.get('source') or [])} -> {u.get('target')}")
    for u in doc.get("duplicates", []):
        named.append(f"duplicate {u.get('target')}")
    for u in doc.get("unmatched_source", []):
        named.append(f"unmatched {'/'.join(u)}")
    co = doc.get("check_output")
    if co and not co.get("ok"):
        named.append("check-output")
    return {"verdict": "refused" if named else "refused-unnamed", "refused": sorted(set(named))[:6]}


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _wrong_tensors(sd: dict, port: dict) -> str:
    """Which converted tensors differ from the port's own (the port reproduced Keras)."""
    ref = port.get("state") or {}
    diffs = [
        k
        for k, t in sd.items()
        if k in ref and (ref[k].shape != tuple(t.shape) or not np.allclose(ref[k], t.numpy(), atol=1e-6))
    ]
    return "differ from the port's tensors: " + ", ".join(diffs[:6]) if diffs else "same tensors as the port"


def nchw_features(a: np.ndarray, segments: list) -> np.ndarray:
    """`a` with its last axis (features in TF's flatten order) reordered as torch.flatten of NCHW maps would
    give them, segment by segment ([pre-Flatten shape | None, length] each; None: not from a map)."""
    perm, start = [], 0
    for shape, n in segments:
        if shape and len(shape) >= 2:
            c, hw = shape[-1], n // shape[-1]
            perm += [start + (u % hw) * c + u // hw for u in range(n)]  # torch u = c*HW + s <- TF s*C + c
        else:
            perm += list(range(start, start + n))
        start += n
    if a.shape[-1] != start:
        return a
    return a[..., np.asarray(perm, dtype=np.int64)]


def _flat_segments(key: str, flat_fed: dict[str, list]) -> list | None:
    for layer, segments in flat_fed.items():
        if key.startswith((layer + ".", layer + "_")) and not key.endswith("num_batches_tracked"):
            return segments
    return None


def judge_convert_plain(
    src: Path, port: dict | None, out: Path, opts: argparse.Namespace, flat_fed: dict[str, list] | None = None
) -> dict[str, Any]:
    flat_fed = flat_fed or {}
    res: dict[str, Any] = {"tool": "convert"}
    dst = out / "convert_plain.safetensors"
    ran = _run_json(["convert", str(src), str(dst), "--json", "--force"], res, opts)
    if isinstance(ran, dict):
        return ran
    code, doc = ran
    if code == 1:
        return res | _convert_refusal(doc)
    if port is None or not port.get("state"):
        return res | {"verdict": "unjudged", "message": "no exact port to compare with"}
    from safetensors.numpy import load_file

    sd = load_file(dst)
    ref = {_norm_key(k): (k, v) for k, v in port["state"].items()}
    wrong, unjudged, judged = [], [], 0
    for key, a in sd.items():
        hit = ref.get(_norm_key(key))
        if hit is None:
            unjudged.append(key)
            continue
        b = hit[1]
        segments = _flat_segments(key, flat_fed)
        if segments:  # Keras' own record: these features are a Flatten's, so NCHW order is documented
            b = nchw_features(b, segments)
        if a.shape != b.shape and [d for d in a.shape if d != 1] == [d for d in b.shape if d != 1]:
            b = b.reshape(a.shape)  # a per-channel vector and the port's (1, C, 1, 1) buffer, or () and (1,)
        if a.shape != b.shape:
            unjudged.append(f"{key} {a.shape} vs port {b.shape}")
            continue
        judged += 1
        if not np.allclose(a, b, atol=1e-6, rtol=1e-5):
            wrong.append(key)
    res |= {"judged": judged, "unjudged_keys": unjudged[:8]}
    if wrong:
        return res | {"verdict": "WRONG", "message": "differ from the port's tensors: " + ", ".join(wrong[:6])}
    if unjudged:
        return res | {"verdict": "unjudged", "message": "no port tensor for: " + ", ".join(unjudged[:6])}
    return res | {"verdict": "exact"}


def judge_model(folder: Path, opts: argparse.Namespace, out_root: Path | None = None) -> list[dict[str, Any]]:
    """Every verdict for one generated model folder; ptools' outputs go to `out_root` (default: the folder)."""
    case = json.loads((folder / "case.json").read_text())
    work = out_root or folder
    base = {"seed": case["seed"], "index": case["index"], "family": case["family"]}
    if "keras_error" in case:
        return [base | {"format": "-", "tool": "keras", "verdict": "keras-error", "message": case["keras_error"]}]
    io = dict(np.load(folder / "io.npz"))
    results: list[dict[str, Any]] = []
    ref_port: dict[str, Any] | None = None
    files = case["files"]
    ordered = sorted(files, key=lambda f: case["kinds"][f] != "model")  # ports first: they are the targets
    for fmt in ordered:
        rel = files[fmt]
        row = base | {"format": fmt}
        if rel.startswith("error:"):
            results.append(row | {"tool": "keras", "verdict": "keras-error", "message": rel})
            continue
        src = folder / rel
        out = work / f"out_{fmt.replace('.', '_')}"
        port: dict[str, Any] | None = None
        if case["kinds"][fmt] == "model":
            r = judge_port(src, out, io, case, opts)
            doc = r.pop("doc", None)
            results.append(row | r)
            if r["verdict"] == "exact":
                from safetensors.numpy import load_file

                port = {
                    "dir": out,
                    "class_name": r["class_name"],
                    "doc": doc,
                    "state": load_file(out / "weights.safetensors"),
                }
                if ref_port is None:
                    ref_port = port
        target = port or ref_port
        if target is not None:
            results.append(row | judge_convert_model(src, target, out if port else _scratch(work, fmt), io, opts))
        scratch = out if port else _scratch(work, fmt)
        results.append(row | judge_convert_plain(src, target, scratch, opts, case.get("flat_fed")))
    for r in results:
        r["extras"] = case.get("extras", [])
        r["layers"] = case.get("layers", [])
    return results


def _scratch(folder: Path, fmt: str) -> Path:
    p = folder / f"out_{fmt.replace('.', '_')}"
    p.mkdir(parents=True, exist_ok=True)
    return p


def keras_side(opts: argparse.Namespace, start: int, n: int, work: Path) -> subprocess.Popen:
    cmd = [opts.tf_python, str(KERAS_SIDE), "--seed", str(opts.seed), "--start", str(start), "--n", str(n)]
    cmd += ["--out", str(work), "--savedmodel-rate", str(opts.savedmodel_rate), "--extra-rate", str(opts.extra_rate)]
    log = open(work.parent / f"keras_{start}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def summarize(results: list[dict[str, Any]], opts: argparse.Namespace, seconds: float) -> int:
    from rich.console import Console
    from rich.table import Table

    con = Console(soft_wrap=True, width=160)
    models = {(r["seed"], r["index"]) for r in results}
    k_err = {(r["seed"], r["index"]) for r in results if r["tool"] == "keras" and r["format"] == "-"}
    verdicts = sorted({r["verdict"] for r in results})
    table = Table(title=f"port/convert fuzz: seed {opts.seed}, models {opts.start}..{opts.start + opts.n - 1}")
    table.add_column("tool / format", no_wrap=True)
    for v in verdicts:
        table.add_column(v, justify="right")
    rows: dict[str, Counter] = {}
    for r in results:
        rows.setdefault(f"{r['tool']} {r['format']}", Counter())[r["verdict"]] += 1
    for key in sorted(rows):
        table.add_row(key, *[str(rows[key].get(v, 0) or "") for v in verdicts])
    total = Counter(r["verdict"] for r in results)
    table.add_row("all", *[str(total.get(v, 0)) for v in verdicts])
    con.print(table)
    con.print(
        f"{len(models)} models ({len(k_err)} Keras could not build), {len(results)} runs in {seconds:.0f} s; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    refusals = Counter(x for r in results if r["verdict"] == "refused" and r["tool"] == "port" for x in r["refused"])
    if refusals:
        con.print("port refusals (reason: runs):")
        for reason, n in refusals.most_common(15):
            con.print(f"  {n:5d}  {reason}")
    errs = [r for r in results if r["verdict"] in ("exact",) and "max_err" in r]
    if errs:
        worst = max(errs, key=lambda r: r["max_err"] / r["scale"])
        con.print(
            f"worst exact run: {worst['max_err']:.2e} (output scale {worst['scale']:.2g}), model {worst['index']}"
        )
    slack = [r for r in errs if r["max_err"] > opts.rtol * r["scale"]]
    if slack:  # exact only thanks to Keras' own float32 round-off on the model: shown, not hidden
        worst = max(slack, key=lambda r: r["max_err"] / r["scale"])
        con.print(
            f"{len(slack)} exact runs over rtol within Keras' float32 round-off; worst: model {worst['index']} "
            f"{worst['format']} {worst['tool']}, error {worst['max_err']:.2e} against float64 Keras, whose float32 "
            f"run is {worst['keras_f32_err']:.2e} off"
        )
    failures = [r for r in results if r["verdict"] in FAILURES]
    if failures:
        con.print(f"[red]{len(failures)} failures[/red]:")
        for r in failures:
            con.print(
                f"  seed {r['seed']} model {r['index']} {r['family']} {r['format']} {r['tool']}: {r['verdict']}"
                f" {r.get('max_err', '')} {r.get('message', '')}",
                highlight=False,
            )
            con.print(
                f"    replay: python benchmarks/port_fuzz.py --seed {r['seed']} --start {r['index']} --n 1 --keep "
                f"/tmp/fuzz-{r['seed']}-{r['index']}",
                highlight=False,
            )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True, help="the run's seed; model i is drawn from (seed, i) alone")
    ap.add_argument("--start", type=int, default=0, help="first model index")
    ap.add_argument("--n", type=int, default=20, help="number of models")
    ap.add_argument("--chunk", type=int, default=10, help="models generated per Keras process")
    ap.add_argument("--tf-python", default=DEFAULT_TF_PYTHON, help="a Python with tensorflow, tf_keras and keras")
    ap.add_argument("--keep", type=Path, help="keep the generated files and ports in this folder")
    ap.add_argument("--jsonl", type=Path, help="append every result as a JSON line to this file")
    ap.add_argument(
        "--rtol",
        type=float,
        default=1e-4,
        help="exact: max abs error <= rtol * max(1, |Keras output|) (+ Keras' f32 round-off)",
    )
    ap.add_argument("--timeout", type=float, default=300, help="seconds per ptools command")
    ap.add_argument("--savedmodel-rate", type=float, default=0.35)
    ap.add_argument("--extra-rate", type=float, default=0.25, help="share of steps drawing ops outside the zoo")
    opts = ap.parse_args(argv)
    if not Path(opts.tf_python).exists():
        print(f"skipped: no TensorFlow Python at {opts.tf_python} (set --tf-python or PTOOLS_TF_PYTHON)")
        return 0
    import torch

    torch.set_num_threads(1)
    root = opts.keep or Path(tempfile.mkdtemp(prefix="ptools-port-fuzz-"))
    work = root / "models"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: list[dict[str, Any]] = []
    chunks = [(s, min(opts.chunk, opts.start + opts.n - s)) for s in range(opts.start, opts.start + opts.n, opts.chunk)]
    pending = keras_side(opts, *chunks[0], work) if chunks else None
    try:
        for ci, (s, n) in enumerate(chunks):
            assert pending is not None
            pending.wait()
            current = pending
            pending = keras_side(opts, *chunks[ci + 1], work) if ci + 1 < len(chunks) else None
            del current
            for i in range(s, s + n):
                folder = work / f"m{i}"
                if not (folder / "case.json").exists():
                    results.append(
                        {
                            "seed": opts.seed,
                            "index": i,
                            "family": "?",
                            "format": "-",
                            "tool": "keras",
                            "verdict": "keras-error",
                            "message": "no case.json (Keras side died)",
                        }
                    )
                    continue
                rs = judge_model(folder, opts)
                results += rs
                line = " ".join(f"{r['format']}/{r['tool']}={r['verdict']}" for r in rs)
                print(f"[ptools] model {i}: {line}", file=sys.stderr, flush=True)
                if opts.jsonl:
                    with opts.jsonl.open("a") as f:
                        for r in rs:
                            f.write(json.dumps(r, default=str) + "\n")
                if not opts.keep:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        if pending is not None:
            pending.kill()
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
    return summarize(results, opts, time.time() - t0)


if __name__ == "__main__":
    sys.exit(main())
