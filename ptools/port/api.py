"""`ptools port`: a Keras model file -> a readable torch module (model.py), its weights and a report."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptools.errors import ExitCode, PtoolsError
from ptools.port.graph import Graph, parse_config
from ptools.port.layers import Value, Weights
from ptools.port.module import ClassBuilder, LayerRow, PortState, class_name_of, render
from ptools.port.weights import FileWeights, from_reader, from_saved_model


@dataclass
class Port:
    source: Path
    keras_version: str | None
    model_name: str
    class_name: str
    code: str  # model.py
    state: dict[str, np.ndarray]
    rows: list[LayerRow]
    unsupported: list[dict[str, Any]]
    inputs: list[Value]
    outputs: list[Value]

    @property
    def ok(self) -> bool:
        return not self.unsupported


def _open(path: Path) -> Any:
    from ptools.checkpoint.keras.h5 import KerasReader

    if not path.exists():
        raise PtoolsError(f"{path}: no such file")
    if not path.is_file() and not path.is_dir():  # opening a FIFO would block until a writer comes
        raise PtoolsError(f"{path}: not a regular file (a FIFO, socket or device), not a Keras model")
    _sniff(path)
    reader = KerasReader(path)
    if not reader.model_config:
        reader.close()
        raise PtoolsError(
            f"{path}: the file holds weights but no model architecture (no Keras config)",
            hint="port needs a full model (.keras or model.save('x.h5')); for weights only use `ptools convert`",
        )
    return reader


_VAR_ORDER = {
    name: i
    for i, name in enumerate(
        ["depthwise_kernel", "pointwise_kernel", "kernel", "recurrent_kernel", "bias", "gamma", "beta"]
        + ["moving_mean", "moving_variance", "embeddings"]
    )
}


def _sniff(path: Path) -> None:
    """Say what a file is when it is not a Keras model, before a reader reports a confusing detail."""
    import zipfile

    from ptools.checkpoint.keras.h5 import HDF5_MAGIC

    with path.open("rb") as f:
        head = f.read(2048)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as e:
            raise PtoolsError(f"{path}: corrupt zip archive ({e})") from None
        if "config.json" not in names:
            torch_like = any(n.endswith("data.pkl") for n in names)
            raise PtoolsError(
                f"{path}: not a Keras model (a zip archive without config.json"
                + ("; it looks like a PyTorch checkpoint)" if torch_like else ")"),
                hint="port reads .keras archives, full-model .h5 files and tf_keras SavedModel folders",
            )
    elif not any(head[o : o + 8] == HDF5_MAGIC for o in (0, 512, 1024)) and not path.name.endswith(".json"):
        raise PtoolsError(
            f"{path}: not a Keras model file (neither a .keras zip archive nor HDF5)",
            hint="port reads .keras archives, full-model .h5 files and tf_keras SavedModel folders",
        )


def _saved_model(path: Path) -> tuple[dict[str, Any], FileWeights, str | None]:
    """A tf_keras SavedModel folder: the model config from keras_metadata.pb (the root object's metadata),
    the weights from variables/ (a TF bundle, read without TensorFlow), by layer (see from_saved_model)."""
    from ptools.checkpoint.base import open_checkpoint
    from ptools.checkpoint.keras.saved_model import keras_metadata
    from ptools.convert.api import config_errors

    if not (path / "keras_metadata.pb").is_file():
        raise PtoolsError(
            f"{path}: no keras_metadata.pb, so no Keras architecture (not saved by tf_keras model.save)",
            hint="port needs a Keras model; for the weights alone use `ptools convert`",
        )
    meta = keras_metadata(path)
    if meta is None:
        raise PtoolsError(f"{path / 'keras_metadata.pb'}: no metadata for the root model")
    cfg, version = meta
    reader = open_checkpoint(path)
    try:
        with config_errors(path):
            weights = from_saved_model(reader, cfg)
        if weights is None:
            weights = FileWeights({(layer,): ws for layer, ws in _by_name_scope(reader).items()}, "leaf")
    finally:
        reader.close()
    return cfg, weights, version


def _by_name_scope(reader: Any) -> dict[str, Weights]:
    """Variables grouped by the first scope of their names (`conv/kernel`): SavedModels whose object graph
    does not list layers."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for info in reader.tensors():
        name = info.extra.get("name")
        if info.extra.get("role") != "weight" or not isinstance(name, str) or "/" not in name:
            continue
        layer, rest = name.split("/", 1)
        grouped.setdefault(layer, []).append((rest, info.key))
    weights: dict[str, Weights] = {}
    for layer, items in grouped.items():
        # Bundle keys are sorted by name, not by variable order: restore Keras' order per sub-layer.
        items.sort(
            key=lambda it: (
                it[0].rsplit("/", 1)[0] if "/" in it[0] else "",
                _VAR_ORDER.get(it[0].rsplit("/", 1)[-1], 99),
            )
        )
        weights[layer] = [(rest, np.asarray(reader.read(key))) for rest, key in items]
    return weights


def build(path: str | Path, class_name: str | None = None) -> Port:
    """Everything `port` writes, computed in memory; nothing touches the disk."""
    path = Path(path)
    if path.is_dir():
        config, weights, version = _saved_model(path)
    else:
        reader = _open(path)
        try:
            config, weights, version = reader.model_config, from_reader(reader), reader.keras_version
        finally:
            reader.close()
    graph = parse_config(config, str(path))
    keras3 = bool(version and version.split(".")[0] == "3") or path.suffix == ".keras"
    return _generate(path, graph, weights, version, keras3, class_name)


def _class_name(graph: Graph, given: str | None) -> str:
    if given:
        if not re.fullmatch(r"[A-Za-z_]\w*", given):
            raise PtoolsError(f"--name {given!r} is not a Python class name")
        return given
    return class_name_of(graph.name)


def _generate(
    path: Path, graph: Graph, weights: FileWeights, version: str | None, keras3: bool, cls: str | None
) -> Port:
    st = PortState(path, weights, keras3)
    name = _class_name(graph, cls)
    st.class_taken |= {name, *_PTOOLS_NN}
    top = ClassBuilder(st, graph, (), "", name).build()
    if not st.unsupported:
        unused = weights.unused()
        if unused:
            raise PtoolsError(
                f"{path}: weights stored for {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''} are not "
                "used by any layer of the model config",
                hint="the file's weights and architecture do not belong together",
            )
    text = "" if st.unsupported else render(path, top, st, version)
    return Port(path, version, graph.name, name, text, st.state, st.rows, st.unsupported, top.inputs, top.outputs)


# Names `from ptools.nn import ...` may bring into model.py: no emitted class may take them.
_PTOOLS_NN = ("Conv2dSame", "ConvTranspose2dSame", "MaxPool2dSame", "AvgPool2dSame", "KerasRNN")


# -- writing and checking ------------------------------------------------------------------------------


def _import_module(py: Path, class_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_ptools_port_{abs(hash(str(py)))}", py)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    return getattr(mod, class_name)()


def instantiate(p: Port, folder: Path) -> Any:
    """Import model.py from `folder`, build the module and load the weights strictly (torch)."""
    import torch

    model = _import_module(folder / "model.py", p.class_name)
    # load_state_dict copies into the module's own tensors, so the arrays can be shared (no extra copy).
    sd = {k: torch.from_numpy(a if a.flags.writeable else a.copy()) for k, a in p.state.items()}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise PtoolsError(f"{p.source}: internal error: the emitted module does not take its weights ({e})") from None
    return model.eval()


def _smoke(p: Port, model: Any) -> None:
    """Run the module once on zeros and compare output shapes with Keras' (static shapes only)."""
    import torch

    if any(d is None for v in p.inputs for d in v.shape):
        return
    xs = []
    for v in p.inputs:
        shape = _torch_shape(v)
        xs.append(torch.zeros((1, *shape), dtype=torch.long if v.integer else torch.float32))
    with torch.no_grad():
        try:
            ys = model(*xs)
        except Exception as e:  # noqa: BLE001 - a bug in an emitter; say which model triggered it
            raise PtoolsError(
                f"{p.source}: internal error: the emitted module fails ({type(e).__name__}: {e})"
            ) from None
    ys = ys if isinstance(ys, tuple) else (ys,)
    for v, y in zip(p.outputs, ys, strict=True):
        want = _torch_shape(v)
        if all(d is not None for d in want) and tuple(y.shape[1:]) != want:
            raise PtoolsError(
                f"{p.source}: internal error: output {v.name} has shape {tuple(y.shape[1:])}, Keras says {want}"
            )


def _torch_shape(v: Value) -> tuple[int | None, ...]:
    s = tuple(v.shape)
    return (s[-1], *s[:-1]) if v.cf and v.rank > 2 else s


def check_output(p: Port, model: Any, input_path: Path, expected_path: Path, tolerance: float) -> dict[str, Any]:
    """Run the module on Keras-layout inputs and compare with Keras' outputs (max abs error)."""
    import torch

    from ptools.convert.verify import load_arrays

    xs, ys = load_arrays(input_path, "input"), load_arrays(expected_path, "expected output")
    if len(xs) != len(p.inputs):
        raise PtoolsError(f"{input_path}: {len(xs)} arrays, the model takes {len(p.inputs)} inputs")
    if len(ys) != len(p.outputs):
        raise PtoolsError(f"{expected_path}: {len(ys)} arrays, the model returns {len(p.outputs)} outputs")
    tensors = []
    for x, v in zip(xs, p.inputs, strict=True):
        if x.ndim != v.rank:
            raise PtoolsError(f"{input_path}: input {v.name} has {x.ndim} dims, expected {v.rank} (Keras layout)")
        if v.cf and v.rank > 2:
            x = np.moveaxis(x, -1, 1)
        t = torch.from_numpy(np.ascontiguousarray(x))
        tensors.append(t.long() if v.integer else t.float())
    with torch.no_grad():
        out = model(*tensors)
    outs = out if isinstance(out, tuple) else (out,)
    errors = []
    for o, y, v in zip(outs, ys, p.outputs, strict=True):
        o = o.detach().float().numpy()
        if v.cf and v.rank > 2:
            o = np.moveaxis(o, 1, -1)
        if o.shape != y.shape:
            raise PtoolsError(f"{expected_path}: output {v.name} is {y.shape}, the port gives {o.shape} (Keras layout)")
        errors.append(float(np.abs(o - y.astype(np.float32)).max()) if o.size else 0.0)
    worst = max(errors, default=0.0)
    return {"ok": worst <= tolerance, "max_abs_error": worst, "per_output": errors, "tolerance": tolerance}


def write(
    p: Port,
    out_dir: Path,
    force: bool = False,
    check: tuple[Path, Path] | None = None,
    tolerance: float = 1e-4,
) -> dict[str, Any] | None:
    """Verify the port in a scratch folder (import, strict load, a forward pass, the optional output check),
    then write model.py, weights.safetensors and report.json into `out_dir`. Nothing is written when a
    check fails; returns the --check-output result."""
    from ptools.convert.writer import OutTensor, write_state_dict
    from ptools.files import atomic_write_bytes

    if not p.ok:
        raise PtoolsError(f"{p.source}: {len(p.unsupported)} layer(s) cannot be ported", exit_code=ExitCode.FINDINGS)
    if out_dir.exists() and not out_dir.is_dir():
        raise PtoolsError(f"{out_dir}: exists and is not a folder")
    targets = [out_dir / n for n in ("model.py", "weights.safetensors", "report.json")]
    if not force:
        for t in targets:
            if t.exists():
                raise PtoolsError(f"{t}: already exists", hint="pass --force to overwrite it")
    scratch = Path(tempfile.mkdtemp(prefix="ptools-port-"))
    try:
        (scratch / "model.py").write_text(p.code, encoding="utf-8")
        model = instantiate(p, scratch)
        _smoke(p, model)
        result = check_output(p, model, check[0], check[1], tolerance) if check else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result is not None and not result["ok"]:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = [OutTensor(k, str(a.dtype), tuple(a.shape), lambda a=a: a) for k, a in p.state.items()]
    meta = {"format": "pt", "converted_by": "ptools port", "source": p.source.name}
    write_state_dict(targets[1], tensors, force=True, metadata=meta)
    atomic_write_bytes(targets[0], p.code.encode("utf-8"), force=True)
    doc = report(p, out_dir, result)
    atomic_write_bytes(targets[2], (json.dumps(doc, indent=2) + "\n").encode("utf-8"), force=True)
    return result


def report(p: Port, out_dir: Path | None, check: dict[str, Any] | None = None) -> dict[str, Any]:
    """The --json document (schema ptools.port/1) and report.json."""
    return {
        "source": str(p.source),
        "keras_version": p.keras_version,
        "model": p.model_name,
        "class_name": p.class_name,
        "output_dir": str(out_dir) if out_dir is not None else None,
        "ok": p.ok,
        "inputs": [{"name": v.name, "shape": list(_torch_shape(v)), "channels_first": v.cf} for v in p.inputs],
        "outputs": [{"name": v.name, "shape": list(_torch_shape(v)), "channels_first": v.cf} for v in p.outputs],
        "layers": [
            {
                "layer": r.layer,
                "class": r.class_name,
                "inputs": r.inputs,
                "modules": r.modules,
                "forward": r.forward,
                "settings": r.settings,
                "weights": r.weights,
            }
            for r in p.rows
        ],
        "unsupported": p.unsupported,
        "parameters": int(sum(a.size for k, a in p.state.items() if not k.endswith("num_batches_tracked"))),
        "check_output": check,
    }
