"""Keras call graphs -> nn.Module source: one class for the model and one for each model nested in it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ptools.errors import PtoolsError
from ptools.port import code as pycode
from ptools.port.graph import MODEL_CLASSES, Call, Graph, Ref, nested_input_shapes, parse_config
from ptools.port.layers import (
    MASK_MERGE,
    MASK_PASS,
    MASK_USE,
    SUPPORTED,
    Ctx,
    LayerCode,
    Unsupported,
    Value,
    as_cf,
    as_keras,
    emit,
)
from ptools.port.ops import emit_op
from ptools.port.weights import FileWeights, keras3_group_names

# Layers that want channels-first input: a rank-3 model input feeding one of them is taken as (N, C, L).
_CF_CONSUMERS = ("Conv1D", "MaxPooling1D", "AveragePooling1D", "ZeroPadding1D", "Cropping1D", "SpatialDropout1D")


@dataclass
class LayerRow:
    """One Keras layer call in the report."""

    layer: str  # its path through nested models: "base/block_1_expand"
    class_name: str
    inputs: list[str]
    modules: list[str]  # `self.x = ...` lines
    forward: list[str]
    settings: list[str]
    weights: list[str] = field(default_factory=list)  # state_dict keys it fills


@dataclass
class ClassCode:
    """One emitted class."""

    name: str
    graph: Graph
    ok: bool
    modules: list[tuple[str, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)


@dataclass
class PortState:
    """What every class of one port shares: the file, its weights, and what has been emitted so far."""

    source: Path
    weights: FileWeights
    keras3: bool
    nested: list[ClassCode] = field(default_factory=list)  # in definition order: a class before its users
    class_taken: set[str] = field(default_factory=set)
    state: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[LayerRow] = field(default_factory=list)
    unsupported: list[dict[str, Any]] = field(default_factory=list)
    imports: set[str] = field(default_factory=set)


def class_name_of(keras_name: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", keras_name or "model")
    name = "".join(w[:1].upper() + w[1:] for w in words if w) or "KerasModel"
    return name if not name[0].isdigit() else "Model" + name


class ClassBuilder:
    """Walks one model's graph in topological order and emits its class: a module attribute per layer, a
    forward line per call; a nested model becomes its own class (built first) and one call line here."""

    def __init__(self, st: PortState, graph: Graph, path: tuple[str, ...], key_prefix: str, name: str,
                 groups: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.st = st
        self.graph = graph
        self.path = path  # layer names from the top model down to this one (empty for the top model)
        self.groups = groups  # the same as Keras 3 h5 group names (a fallback for files without names)
        self.key_prefix = key_prefix  # state_dict prefix of this class' attributes ("base.")
        self.name = name
        self.attrs: dict[str, str] = {}
        self.attr_taken: set[str] = set()
        self.var_taken: set[str] = set()
        self.values: dict[Ref, Value] = {}
        self.broken: set[Ref] = set()
        self.nested: dict[str, tuple[ClassCode, list[tuple[int | None, ...]]]] = {}
        first_calls = [c for c in graph.calls if c.class_name != "InputLayer" and c.op is None and c.index == 0]
        self.group_names = keras3_group_names([(c.layer, c.class_name) for c in first_calls])

    def qualified(self, layer: str) -> str:
        return "/".join((*self.path, layer))

    def build(self) -> ClassCode:
        g = self.graph
        cc = ClassCode(self.name, g, True)
        consumers: dict[str, list[str]] = {}
        for c in g.calls:
            for r in c.inputs:
                consumers.setdefault(r[0], []).append(c.class_name)
        n_unsupported = len(self.st.unsupported)
        for c in g.calls:
            if c.class_name == "InputLayer":
                shape = g.input_shapes[c.layer]
                rank = len(shape) + 1
                cf = rank >= 4 or (rank == 3 and any(k in _CF_CONSUMERS for k in consumers.get(c.layer, [])))
                integer = "int" in g.input_dtypes.get(c.layer, "")
                self.values[(c.layer, 0, 0)] = Value(pycode.identifier(c.layer, self.var_taken), shape, cf, integer)
                continue
            self._call(c, cc)
        cc.ok = len(self.st.unsupported) == n_unsupported
        missing = [r for r in g.inputs if r not in self.values]
        if missing:
            raise PtoolsError(f"{self.st.source}: model input {missing[0][0]} is not an input layer of the model")
        cc.inputs = [self.values[r] for r in g.inputs]
        cc.outputs = [self.values[r] for r in g.outputs if r in self.values]
        if cc.ok and len(cc.outputs) != len(g.outputs):
            gone = [r[0] for r in g.outputs if r not in self.values]
            raise PtoolsError(f"{self.st.source}: model output {gone[0]} is not computed by the model's layers")
        return cc

    def _call(self, c: Call, cc: ClassCode) -> None:
        st = self.st
        if any(r in self.broken for r in c.inputs):
            # Shapes are unknown past an unsupported layer: only the class itself can still be checked.
            if (
                c.op is None
                and c.class_name not in SUPPORTED
                and c.class_name not in MODEL_CLASSES
                and self.qualified(c.layer) not in {u["layer"] for u in st.unsupported}
            ):
                self._refuse(c, f"no PyTorch port for Keras layer class {c.class_name}")
            self._break(c)
            return
        missing = [r for r in c.inputs if r not in self.values]
        if missing:
            raise PtoolsError(
                f"{st.source}: layer {self.qualified(c.layer)} uses {missing[0][0]}[{missing[0][1]}], "
                "which has no output"
            )
        ins = [self.values[r] for r in c.inputs]
        # tf_keras names a TF-op layer after the function (`tf.math.truediv_2`): its last part reads better.
        base = c.layer.rsplit(".", 1)[-1] if c.op == "tf" else c.layer
        if c.layer not in self.attrs:
            self.attrs[c.layer] = pycode.identifier(base, self.attr_taken)
        out = pycode.identifier(base if c.index == 0 else f"{base}_{c.index}", self.var_taken)
        ctx = Ctx(self.attrs[c.layer], out, st.keras3, c.layer, c.index, self.var_taken)
        tensor_kwargs = c.tensor_kwargs
        first_row = len(st.rows)  # a nested model's row goes before its layers' rows
        try:
            if c.kwargs.get("training") is True:
                raise Unsupported("called with training=True (Keras then runs it in training mode at inference)")
            if "mask" in c.kwarg_inputs:  # given in the call (Keras 3 writes every mask this way)
                ins, tensor_kwargs = _explicit_mask(c, ins)
            _check_masks(c, ins)
            if c.op is not None:
                lc = emit_op(c, ins, ctx)
            elif c.class_name in MODEL_CLASSES:
                lc = self._nested_call(c, ins, ctx)
                if lc is None:  # its own layers are listed as unsupported
                    self._break(c)
                    return
            else:
                lc = emit(c.class_name, c.config, ins, ctx, tensor_kwargs, c.module, c.kwargs)
                # tf_keras passes masks along implicitly; Keras 3 names them in each call that takes one.
                if st.keras3:
                    for o in lc.outputs:
                        o.mask = None
                elif c.class_name in MASK_PASS and lc.outputs and ins[0].mask and lc.outputs[0].mask is None:
                    lc.outputs[0].mask = ins[0].mask
                elif c.class_name in MASK_MERGE and any(v.mask for v in ins):
                    _merge_masks(lc, ins, ctx)
        except Unsupported as e:
            self._refuse(c, str(e))
            self._break(c)
            return
        for v in lc.outputs:
            self.var_taken.add(v.name)
        for i, v in enumerate(lc.outputs):
            self.values[(c.layer, c.index, i)] = v
        cls = c.class_name if c.op is None else _op_name(c)
        row = LayerRow(self.qualified(c.layer), cls, [r[0] for r in c.inputs], [], list(lc.lines), lc.settings)
        if c.index == 0:
            cc.modules += lc.modules
            row.modules = [f"self.{a} = {ctor}" if a else ctor for a, ctor in lc.modules]
            row.weights = self._fill(c, lc)
        st.imports |= lc.imports
        cc.lines += lc.lines
        st.rows.insert(first_row, row)

    def _break(self, c: Call) -> None:
        for i in range(8):
            self.broken.add((c.layer, c.index, i))

    def _refuse(self, c: Call, reason: str) -> None:
        st = self.st
        st.unsupported.append(
            {
                "layer": self.qualified(c.layer),
                "class": c.class_name if c.op is None else _op_name(c),
                "reason": reason,
                "inputs": [r[0] for r in c.inputs],
                "position": len(st.rows) + len(st.unsupported) + 1,  # 1-based among non-input layers, graph order
            }
        )

    def _fill(self, c: Call, lc: LayerCode) -> list[str]:
        """The layer's state_dict entries from its stored weights (or from its config: constants)."""
        st = self.st
        if c.class_name in MODEL_CLASSES:  # its layers take their own weights, in its class
            return []
        path = (*self.path, c.layer)
        group = self.group_names.get(c.layer)
        groups = (*self.groups, group) if group and len(path) > 1 else None
        if lc.weights is None:
            if c.op is None and st.weights.get(path, groups) is not None:
                raise PtoolsError(
                    f"{st.source}: layer {self.qualified(c.layer)} ({c.class_name}) has weights that the port "
                    "does not use"
                )
            return []
        ws = st.weights.get(path, groups)
        if ws is None and lc.needs_file_weights:
            raise PtoolsError(
                f"{st.source}: layer {self.qualified(c.layer)} has no weights in the file",
                hint="was the model built and saved?",
            )
        try:
            arrays = lc.weights(ws or [])
        except PtoolsError as e:
            raise PtoolsError(f"{st.source}: layer {self.qualified(c.layer)}: {e.message}") from None
        keys = []
        # np.asarray, not ascontiguousarray: that turns a 0-d scalar (num_batches_tracked) into shape (1,)
        for k, a in arrays.items():
            st.state[self.key_prefix + k] = np.asarray(a, order="C")
            keys.append(self.key_prefix + k)
        return keys

    def _nested_call(self, c: Call, ins: list[Value], ctx: Ctx) -> LayerCode | None:
        """A model used as a layer: its own class (built on its first call, for the shapes it is called with),
        and a call of it here."""
        st = self.st
        shapes = [v.shape for v in ins]
        declared = nested_input_shapes({"class_name": c.class_name, "config": c.config})
        if len(declared) != len(ins):
            raise Unsupported(f"called with {len(ins)} inputs, the nested model takes {len(declared)}")
        for have, want in zip(shapes, declared, strict=True):
            if want is not None and len(want) != len(have):
                raise Unsupported(
                    f"called with a rank-{len(have) + 1} input, the nested model takes rank {len(want) + 1}"
                )
        if c.layer in self.nested:
            cc, first_shapes = self.nested[c.layer]
            if shapes != first_shapes:
                raise Unsupported(f"called again with inputs of other shapes ({first_shapes} then {shapes})")
        else:
            graph = parse_config({"class_name": c.class_name, "config": c.config}, str(st.source), shapes)
            name = pycode.identifier(class_name_of(graph.name), st.class_taken)
            # The reader names top-level layers by their config names, deeper ones as their h5 groups.
            groups = (*self.groups, self.group_names.get(c.layer, c.layer)) if self.path else (c.layer,)
            sub = ClassBuilder(st, graph, (*self.path, c.layer), f"{self.key_prefix}{ctx.attr}.", name, groups)
            cc = sub.build()
            if not cc.ok:
                return None
            st.nested.append(cc)
            self.nested[c.layer] = (cc, shapes)
        args = [as_cf(v) if nv.cf else as_keras(v) for v, nv in zip(ins, cc.inputs, strict=True)]
        code = LayerCode(settings=[f"nested {c.class_name} model {cc.graph.name!r}: class {cc.name}"])
        code.modules.append((ctx.attr, f"{cc.name}()"))
        if len(cc.outputs) == 1:
            names = [ctx.out]
        else:
            names = [pycode.identifier(f"{ctx.out}_{i}", set(self.var_taken)) for i in range(len(cc.outputs))]
        code.lines.append(f"{', '.join(names)} = self.{ctx.attr}({', '.join(args)})")
        code.outputs = [Value(n, v.shape, v.cf, v.integer) for n, v in zip(names, cc.outputs, strict=True)]
        code.weights = lambda ws: {}
        code.needs_file_weights = False
        return code


def _explicit_mask(c: Call, ins: list[Value]) -> tuple[list[Value], list[str]]:
    """A `mask=` argument (one (N, T) boolean tensor) moved onto the first input, as Keras applies it."""
    idx = c.kwarg_inputs["mask"]
    if len(idx) != 1 or idx[0] == 0:
        raise Unsupported("called with a mask per input")
    m = ins[idx[0]]
    rest = [v for i, v in enumerate(ins) if i != idx[0]]
    rest[0] = replace(rest[0], mask=m.name)
    return rest, [k for k in c.tensor_kwargs if k != "mask"]


def _merge_masks(lc: LayerCode, ins: list[Value], ctx: Ctx) -> None:
    """tf_keras: a merge's output mask is the AND of its inputs' masks (unmasked inputs count as all-true)."""
    names = list(dict.fromkeys(v.mask for v in ins if v.mask))
    if len(names) == 1:
        lc.outputs[0].mask = names[0]
        return
    mask = ctx.fresh(f"{ctx.out}_mask")
    expr = names[0]
    for m in names[1:]:
        expr = f"torch.logical_and({expr}, {m})"
    lc.lines.append(f"{mask} = {expr}")
    lc.outputs[0].mask = mask


def _check_masks(c: Call, ins: list[Value]) -> None:
    """A Keras mask (from Embedding(mask_zero=True)) may only reach layers that pass it on unchanged or whose
    use of it is ported; anywhere else Keras would compute something this port does not."""
    masked = [v for v in ins if v.mask]
    if not masked:
        return
    ok = c.op is None and (c.class_name in MASK_PASS or c.class_name in MASK_USE) and masked == ins[:1]
    if c.op is None and c.class_name in MASK_MERGE:
        axis = c.config.get("axis", -1)
        ok = c.class_name != "Concatenate" or axis == -1 or (isinstance(axis, int) and axis == ins[0].rank - 1)
    if not ok:
        raise Unsupported(
            f"takes the mask {masked[0].mask} (Embedding mask_zero=True); masks are ported through dropout, "
            "activations, Dense, normalisation and merges into recurrent layers and GlobalAveragePooling1D only"
        )


def _op_name(c: Call) -> str:
    if c.op == "tf":
        return f"{c.class_name} tf.{c.config.get('function')}"
    return f"keras.ops {c.class_name}"


# -- source text ---------------------------------------------------------------------------------------


def shape_doc(v: Value) -> str:
    dims = ["N", *["?" if d is None else str(d) for d in v.shape]]
    if v.cf and v.rank > 2:
        dims = [dims[0], dims[-1], *dims[1:-1]]
    layout = {3: " (N, C, L)", 4: " NCHW", 5: " NCDHW"}.get(v.rank, "") if v.cf else ""
    return f"({', '.join(dims)}){layout}"


def render_class(cc: ClassCode, doc_first: str, weights_line: bool) -> list[str]:
    out = [f"class {cc.name}(nn.Module):"]
    doc = [
        f'    """{doc_first}',
        "",
        "    Inputs: " + ", ".join(f"{v.name} {shape_doc(v)}" for v in cc.inputs) + ".",
        "    Returns: " + ", ".join(f"{v.name} {shape_doc(v)}" for v in cc.outputs) + ".",
    ]
    if weights_line:
        doc.append("    Weights: weights.safetensors next to this file (load_state_dict, strict).")
    doc.append('    """')
    out += [d if len(d) <= pycode.LINE else d[: pycode.LINE - 3] + "..." for d in doc]
    out += ["", "    def __init__(self) -> None:", "        super().__init__()"]
    for attr, ctor in cc.modules:  # attr "": a whole statement (register_buffer)
        out += pycode.wrap(f"self.{attr} = {ctor}" if attr else ctor, 8)
    ret = "torch.Tensor" if len(cc.outputs) == 1 else f"tuple[{', '.join('torch.Tensor' for _ in cc.outputs)}]"
    out += ["", *_def_forward(["self", *(f"{v.name}: torch.Tensor" for v in cc.inputs)], ret)]
    for line in drop_unused(cc.lines, [v.name for v in cc.outputs]):
        out += pycode.wrap(line, 8)
    out.append(f"        return {', '.join(v.name for v in cc.outputs)}")
    return out


def _def_forward(params: list[str], ret: str) -> list[str]:
    """`def forward(...)` as ruff format lays it out: one line, else the parameters on their own line, else
    one parameter per line."""
    one = f"    def forward({', '.join(params)}) -> {ret}:"
    if len(one) <= pycode.LINE:
        return [one]
    inner = "        " + ", ".join(params)
    if len(inner) <= pycode.LINE:
        return ["    def forward(", inner, f"    ) -> {ret}:"]
    return ["    def forward(", *(f"        {p}," for p in params), f"    ) -> {ret}:"]


def render(path: Path, top: ClassCode, st: PortState, version: str | None) -> str:
    bodies: list[list[str]] = []
    for cc in st.nested:
        first = f"`{cc.graph.name}`, the {cc.graph.class_name} model nested in {path.name}, layer for layer."
        bodies.append(render_class(cc, first, False))
    keras = f"Keras {version}" if version else "Keras"
    bodies.append(render_class(top, f"`{top.graph.name}` from {path.name} ({keras}), layer for layer.", True))
    text = "\n".join(ln for b in bodies for ln in b)
    head = ['"""PyTorch port of the Keras model in ' + f'{path.name}, written by `ptools port`."""', ""]
    head.append("import torch")
    head.append("import torch.nn as nn")
    if "F." in text:
        head.append("import torch.nn.functional as F")
    if st.imports:
        head.append(f"from ptools.nn import {', '.join(sorted(st.imports))}")
    out = head
    for b in bodies:
        out += ["", "", *b]
    return "\n".join(out) + "\n"


def drop_unused(lines: list[str], returned: list[str]) -> list[str]:
    """Leave out `x = ...` lines whose value nothing reads (a Keras output no layer consumes, e.g. the
    sequence of an encoder whose states alone are used): ruff flags them, and they compute nothing needed."""
    used = set(returned)
    kept: list[str] = []
    for line in reversed(lines):
        lhs, sep, rhs = line.partition(" = ")
        if not sep:
            kept.append(line)
            continue
        targets = re.findall(r"[A-Za-z_]\w*", lhs)
        if len(targets) == 1 and targets[0] not in used:
            continue
        used -= set(targets)
        used |= set(re.findall(r"[A-Za-z_]\w*", rhs))
        kept.append(line)
    return kept[::-1]
