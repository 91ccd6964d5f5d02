"""Layout questions a file can leave open, and what settles them: is this Dense fed by a Flatten of a map?

TF flattens (H, W, C); a PyTorch port flattens NCHW. A Dense after a Flatten needs its rows reordered, one
after a GlobalPooling or another Dense does not, and a transposed kernel loads with `strict=True` either
way, so guessing wrong is silent. The Keras config answers it; without one, a Dense whose input size is a
multiple k > 1 of the channels of the conv map before it is an open question, settled by tracing the
`--model` target (ptools.convert.trace) or an explicit `--map` rule, and never written unsettled.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ptools.convert import layouts, shapes
from ptools.convert.layouts import Item, Undetermined
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    from ptools.convert.api import Plan
    from ptools.convert.source import Canonical


def _is_dense_kernel(it: Item, cls: str | None) -> bool:
    return cls == "Dense" and it.role == "weight" and len(it.shape_before) == 2 and not it.synthetic


def _layer_outputs(items: list[Item], canon: Canonical) -> dict[str, tuple[str, set[int]]]:
    """Per layer: ("conv", possible output channels) | ("dense", {units}) | ("norm", {C}) | ("other", {})."""
    by_layer: dict[str, list[Item]] = {}
    for it in items:
        by_layer.setdefault(it.layer, []).append(it)
    out: dict[str, tuple[str, set[int]]] = {}
    for layer, its in by_layer.items():
        cls = canon.layers[layer].class_name if layer in canon.layers else None
        kernels = [i for i in its if i.role == "weight" and len(i.shape_before) >= 3 and not i.synthetic]
        bias = [i for i in its if i.role == "bias" and len(i.shape_after) == 1]
        if kernels:
            k = kernels[-1]  # separable: the pointwise kernel comes last
            if bias:
                channels = {bias[0].shape_after[0]}
            elif k.undetermined is not None and k.undetermined.choices:
                channels = {c.shape_after[0] for c in k.undetermined.choices}
            elif "Transpose" in (cls or ""):
                channels = {k.shape_after[1]}
            else:
                channels = {k.shape_after[0]}
            out[layer] = ("conv", channels)
        elif any(_is_dense_kernel(i, cls) for i in its):
            k = next(i for i in its if _is_dense_kernel(i, cls))
            out[layer] = ("dense", {k.shape_before[1]})
        elif any(i.role == "weight_hh_l0" for i in its):  # an RNN: its output has `units` features
            hh = next(i for i in its if i.role == "weight_hh_l0")
            units = hh.shape_after[1]
            both = any(i.role == "weight_hh_l0_reverse" for i in its)  # Bidirectional: concat or merged
            out[layer] = ("dense", {units, 2 * units} if both else {units})
        elif cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization") and its:
            out[layer] = ("norm", {its[0].shape_after[0]} if its[0].shape_after else set())
        else:
            out[layer] = ("other", set())
    return out


def _feeding_conv(layer: str, n_in: int, order: list[str], outs: dict[str, tuple[str, set[int]]]) -> Any:
    """(conv layer, channels) whose map may be flattened into `layer`'s n_in inputs, or None.

    Model order is not data flow (a two-input model lists its branches' layers interleaved), so any
    earlier conv counts. Only a chain settles it: the nearest earlier weighted layer (norms skipped) is a
    Dense or RNN that outputs exactly n_in features (Dense -> Dense), or is a conv whose channels are n_in.
    """
    before = list(reversed(order[: order.index(layer)])) if layer in order else []
    nearest = next((p for p in before if outs.get(p, ("other", set()))[0] in ("dense", "conv", "other")), None)
    if nearest is not None:
        kind, chans = outs[nearest]
        if kind in ("dense", "conv") and n_in in chans:
            return None
    for prev in before:
        kind, chans = outs.get(prev, ("other", set()))
        if kind == "conv":
            for c in sorted(chans):
                if c and n_in % c == 0 and n_in // c > 1:
                    return prev, c
    return None


def _mark_per_feature(
    items: list[Item], canon: Canonical, order: list[str], outs: dict[str, tuple[str, set[int]]], keras_order: bool
) -> None:
    """Weights only: a BatchNorm/LayerNorm/PReLU whose vectors have n values that no layer before it outputs
    may sit on a Flatten of a map, where its per-feature values are in TF's (H, W, C) order."""
    by_layer: dict[str, list[Item]] = {}
    for it in items:
        by_layer.setdefault(it.layer, []).append(it)
    for layer, its in by_layer.items():
        meta = canon.layers.get(layer)
        cls = meta.class_name if meta is not None else None
        if cls not in shapes.PER_FEATURE:  # BatchNorm, LayerNorm, PReLU, Normalization
            continue
        vecs = [i for i in its if len(i.shape_after) == 1 and not i.synthetic and i.undetermined is None]
        if not vecs:
            continue
        n = vecs[0].shape_after[0]
        if not _composite(n):
            continue
        nearest, why = _chain(canon, layer, n, order, outs) if keras_order else (None, None)
        if nearest is not None:
            if why is not None:
                for i in vecs:
                    i.undetermined = Undetermined(
                        "flatten",
                        f"`{layer}` ({cls}) holds {n} values per vector, as many as `{nearest}` before it outputs, "
                        f"but {why}: if they reshape that vector into a map and flatten it again, its values are "
                        "in TF's (H, W, C) order, which torch's NCHW flatten does not keep",
                        "--model (traced, with --input-size CxHxW unless it has an example_input_array), or a "
                        f'--map rule {{"pattern": "{i.sources[0]}", "transform": "copy"}} when they keep it a vector',
                        rule=f'{{"pattern": "{i.sources[0]}", "transform": "copy"}}',
                    )
            continue
        if not keras_order and _any_output(n, outs):
            continue
        for i in vecs:
            i.undetermined = Undetermined(
                "flatten",
                f"`{layer}` ({cls}) holds {n} values per vector and no layer before it in this file outputs {n} "
                "features: they may belong to a Flatten of a map, in TF's (H, W, C) order, which torch's NCHW "
                "flatten does not keep, and the file has no model config to say which",
                "--model (traced, with --input-size CxHxW unless it has an example_input_array), or a --map rule "
                f'{{"pattern": "{i.sources[0]}", "transform": "copy"}} when no Flatten feeds it',
                rule=f'{{"pattern": "{i.sources[0]}", "transform": "copy"}}',
            )


def _chained(layer: str, n_in: int, order: list[str], outs: dict[str, tuple[str, set[int]]]) -> str | None:
    """The nearest earlier weighted layer (norms skipped) when it outputs exactly n_in features: a Dense -> Dense
    chain, or a conv map pooled to its channels (a Flatten of a map with C > 1 and H*W > 1 gives more)."""
    before = list(reversed(order[: order.index(layer)])) if layer in order else []
    nearest = next((p for p in before if outs.get(p, ("other", set()))[0] in ("dense", "conv", "other")), None)
    if nearest is None:
        return None
    kind, chans = outs[nearest]
    return nearest if kind in ("dense", "conv") and n_in in chans else None


def _chain(
    canon: Canonical, layer: str, n: int, order: list[str], outs: dict[str, tuple[str, set[int]]]
) -> tuple[str | None, str | None]:
    """(the layer whose n outputs feed `layer` as a chain, why that vector may have been reshaped into a map and
    flattened on the way, or None), or (None, None) when no chain settles it."""
    nearest = _chained(layer, n, order, outs)
    if nearest is None or outs[nearest][0] != "dense":  # a conv map pooled to its channels stays a vector
        return nearest, None
    return nearest, _reshaped_between(canon, nearest, layer)


# What a layer without weights can do to a vector, by its Keras default name (legacy .h5 layer names, Keras 3
# group names: the class in snake case, `_N` for the N-th; tf_keras names a TFOpLambda by its function): keep it
# a vector of the same features in the same order (shapes.ORDER_KEEPING), flatten a map, or work on maps only.
# Any other name (Reshape, Lambda, a name the user chose, a TF2 checkpoint's unnamed layer) may turn the vector
# into a map.
_MAPS_ONLY = re.compile(
    r"^(max_pooling[123]d|average_pooling[123]d|global_(average|max)_pooling[123]d|zero_padding[123]d|"
    r"cropping[123]d|up_sampling[123]d|spatial_dropout[123]d|random_\w+|resizing|center_crop)$"
)


def _keeps_vector(base: str) -> bool:
    from ptools.checkpoint.keras.h5 import to_snake_case

    names = {to_snake_case(c) for c in shapes.ORDER_KEEPING} | {"input"}  # tf_keras names its inputs `input_N`
    return base in names or base in shapes.ELEMENTWISE_OPS


def _weightless_kind(name: str) -> str:
    """ "vector" (keeps a vector as it is), "flatten", "maps" (a map in, a map out), or "reshape" (may make
    a map of a vector: Reshape, Lambda, or unknown)."""
    base = re.sub(r"_\d+$", "", name)
    if _keeps_vector(base):
        return "vector"
    if base == "flatten":
        return "flatten"
    return "maps" if _MAPS_ONLY.match(base) else "reshape"


def _reshaped_between(canon: Canonical, nearest: str, layer: str) -> str | None:
    """Why the vector `nearest` outputs may reach `layer` as a Flatten of a map, or None when it cannot.

    A weights-only file records the layers without weights only as names, or as places without names, or
    (Keras 3) as names without places. Turning a vector into a map and flattening it again takes two of them,
    one that may reshape (Reshape, Lambda, a name that does not say) and then one that may flatten: a Dense ->
    Dropout -> Activation -> Dense chain is settled by its names, a Dense -> Reshape -> Flatten -> Dense one is not.
    """
    seq = canon.sequence
    if seq is not None and nearest in seq and layer in seq and seq.index(nearest) < seq.index(layer):
        weighted = {t.layer for t in canon.tensors.values()}
        between = [n for n in seq[seq.index(nearest) + 1 : seq.index(layer)] if n not in weighted]
        kinds = [_weightless_kind(n) if n else "reshape" for n in between]
        makers = [i for i, k in enumerate(kinds) if k == "reshape"]
        if not makers or not any(k in ("reshape", "flatten") for k in kinds[makers[0] + 1 :]):
            return None
        if all(between):
            named = ", ".join(f"`{n}`" for n in between)
            return f"the file lists layers without weights between them ({named}) and not what they do"
        return (
            f"the file holds {len(between)} layers without weights between them and not what they are (a TF "
            "checkpoint keeps no layer classes)"
        )
    if seq is None and canon.unplaced:
        kinds = [_weightless_kind(n) for n in canon.unplaced]
        if kinds.count("reshape") >= 1 and kinds.count("reshape") + kinds.count("flatten") >= 2:
            named = ", ".join(f"`{n}`" for n, k in zip(canon.unplaced, kinds, strict=True) if k != "vector")
            return f"the file holds layers without weights that can ({named}) and not where they sit"
    return None


def _any_output(n_in: int, outs: dict[str, tuple[str, set[int]]]) -> bool:
    """Name-sorted files: some Dense, RNN or conv in the file outputs exactly n_in features."""
    return any(kind in ("dense", "conv") and n_in in chans for kind, chans in outs.values())


def _composite(n: int) -> bool:
    """n features can be a flattened map with C > 1 channels and H*W > 1 positions (whose order matters)."""
    return n >= 4 and any(n % d == 0 for d in range(2, int(n**0.5) + 1))


def _any_conv(n_in: int, outs: dict[str, tuple[str, set[int]]]) -> Any:
    """Name-sorted files (TF1 Saver): model order is unknown, so any conv map that could be flattened counts,
    unless some Dense produces exactly n_in values."""
    if any(kind == "dense" and n_in in chans for kind, chans in outs.values()):
        return None
    for layer, (kind, chans) in outs.items():
        if kind == "conv":
            for c in sorted(chans):
                if c and n_in % c == 0 and n_in // c > 1:
                    return layer, c
    return None


def mark_flatten_questions(
    items: list[Item], canon: Canonical, flattened: set[str], unknown: dict[str, str] | None = None
) -> None:
    """Set `undetermined` on every Dense kernel whose row order the file does not settle. `unknown`: the layers
    a Flatten feeds in a way the config does not settle, with why (shapes.flatten_segments)."""
    unknown = unknown or {}
    from ptools.checkpoint.keras.h5 import config_layers_by_name

    in_config = set(config_layers_by_name(canon.model_config)) if canon.model_config else set()
    after_flatten = shapes.dense_after_flatten(canon.model_config)
    outs = _layer_outputs(items, canon)
    order = list(canon.layers)
    # Keras weight files list layers in model order; TF checkpoints only roughly (by object-graph keys),
    # unless their object graph numbers the model's layers (tf_keras `layer-N`, Keras 3 `_operations/N`).
    keras_order = canon.model_order and canon.format != "tf-bundle"
    if canon.sequence is not None and canon.format == "tf-bundle":
        placed = [n for n in dict.fromkeys(canon.sequence) if n in canon.layers]
        order, keras_order = placed + [n for n in order if n not in placed], True
    if not in_config:
        _mark_per_feature(items, canon, order, outs, keras_order)
    for it in items:
        meta = canon.layers.get(it.layer)
        if meta is None or not _is_dense_kernel(it, meta.class_name) or it.layer in flattened:
            continue
        n_in = it.shape_before[0]
        rule = (
            f'{{"pattern": "{it.sources[0]}", "transform": "dense_after_flatten", "flatten_shape": [H, W, C]}}'
            ' ("transform": "transpose" when no Flatten feeds it)'
        )
        settle = (
            "--model (its forward is traced to see what feeds the Linear; add --input-size CxHxW unless the "
            f"model has an example_input_array), or a --map rule {rule}"
        )
        if meta.config_key in in_config:
            through = unknown.get(it.layer, shapes.UNKNOWN)
            if it.layer in unknown and through != shapes.UNKNOWN:  # a Flatten's features reach it, but how?
                it.undetermined = Undetermined(
                    "flatten",
                    f"the config says the features of a Flatten reach `{it.layer}`, but {through}: TF orders "
                    f"a flattened map's features (H, W, C) and nn.Linear after torch.flatten of an NCHW map "
                    f"needs (C, H, W), so the row order of its {n_in} inputs is open",
                    settle,
                    rule=rule,
                )
                continue
            flat = after_flatten.get(meta.config_key)
            if flat is not None or it.layer in unknown:  # a Flatten feeds it, of a size the config does not tell
                which = f"Flatten `{flat}`" if flat is not None else "a Flatten"
                it.undetermined = Undetermined(
                    "flatten",
                    f"the config says {which} feeds `{it.layer}` but not the shape it flattens, so the "
                    f"(H, W, C) row order of its {n_in} inputs is unknown",
                    settle,
                    rule=rule,
                )
            continue
        nearest, why = _chain(canon, it.layer, n_in, order, outs) if keras_order else (None, None)
        if nearest is not None:
            if why is not None and _composite(n_in):
                it.undetermined = Undetermined(
                    "flatten",
                    f"its {n_in} inputs match the {n_in} outputs of `{nearest}` before it, but {why}: if they "
                    "reshape that vector into a map and flatten it again, TF ordered the rows (H, W, C) and "
                    "nn.Linear after torch.flatten of an NCHW map needs (C, H, W)",
                    settle,
                    rule=rule,
                )
            continue
        if not keras_order and _any_output(n_in, outs):
            continue
        found = _feeding_conv(it.layer, n_in, order, outs) if canon.model_order else _any_conv(n_in, outs)
        if found is None:
            if _composite(n_in):
                it.undetermined = Undetermined(
                    "flatten",
                    f"no layer before it in this file outputs its {n_in} inputs, so they may be a Flatten of a map "
                    "(the model input, or the output of a layer without weights): TF orders those (H, W, C) and "
                    "nn.Linear after torch.flatten needs (C, H, W), and the file has no model config to say which",
                    settle,
                    rule=rule,
                )
            continue
        conv, c = found
        where = "before it" if canon.model_order else "in this file (TF1 files do not keep model order)"
        it.undetermined = Undetermined(
            "flatten",
            f"its {n_in} inputs are {c} channels x {n_in // c} positions of the map of conv `{conv}` {where}; "
            f"if a Flatten feeds it, TF ordered the rows (H, W, C) and nn.Linear after torch.flatten needs "
            f"(C, H, W), and the file has no model config to say which",
            settle,
            channels=c,
            rule=rule,
        )


def mark_channels_last_flattens(items: list[Item], channels_last: dict[str, str]) -> None:
    """Open the row / feature order of the layers a Flatten of a channels-last map feeds ({layer: why}, from
    shapes.flatten_segments): a port flattens such a map (an nn.Embedding's (N, L, C)) as TF does, unless it
    moved its channels first, so neither order is the file's to decide. The Flatten's shape is kept on the
    item, so a traced --model settles it."""
    for it in items:
        why = channels_last.get(it.layer)
        if why is None or it.synthetic or it.flatten_source is None:
            continue
        rule = (
            f'{{"pattern": "{it.sources[0]}", "transform": "{"copy" if len(it.shape_before) == 1 else "transpose"}"}}'
        )
        it.undetermined = Undetermined(
            "flatten",
            f"{why}: a port that flattens it that way needs the {'features' if len(it.shape_before) == 1 else 'rows'}"
            f" of `{it.layer}` in TF's order, one that moves the channels first needs them (C, L) ordered, and the "
            "file cannot say which",
            "--model (its forward is traced to see what it flattens; add --input-size unless the model has an "
            f"example_input_array), or a --map rule {rule} for a port that flattens it as TF does",
            rule=rule,
        )


def settle_flatten_by_trace(p: Plan, input_size: tuple[int, ...] | None) -> None:
    """With --model: run it once and give each Dense after a Flatten the row order its Linear consumes.

    The target decides: a port that flattens NHWC wants TF's rows as they are, one that flattens NCHW wants
    them reordered, whatever the file's config or a --map rule assumed. The trace input is --input-size, the
    model's example_input_array, or else the Keras config's own input shapes. Where no trace is possible,
    a Dense the config or a rule reordered for an NCHW flatten keeps that order only when a rule said so;
    one the config alone placed after a Flatten becomes an open question (exit 1), as does one whose traced
    map the trace cannot orient.
    """

    asks = [
        it
        for it in p.written
        if (it.undetermined is not None and it.undetermined.kind == "flatten") or it.flatten_source is not None
    ]
    if not asks:
        return
    runs = _trace_runs(p, input_size)
    if not runs:
        for it in asks:
            _open_flatten_question(
                it,
                "--model could not be traced (give --input-size CxHxW, or an example_input_array attribute on the "
                "model)",
            )
        return
    for it in asks:
        key = p.targets.get(id(it), "")
        module = key.rsplit(".", 1)[0] if "." in key else None
        verdicts = [_traced_rows(it, feeds.get(module or ""), module or key) for feeds in runs]
        first = verdicts[0]
        if any(not _same(v, first) for v in verdicts[1:]):
            _open_flatten_question(
                it,
                "the target runs on the config's input shape both channels-first and channels-last, and the two "
                "traces disagree on what feeds it (give --input-size)",
            )
            continue
        kind, value, origin = first
        if kind == "open":
            _open_flatten_question(it, value)
        elif kind == "vector":
            it.undetermined = None  # the Linear is fed a vector: a plain transpose is right
            it.decided_by = "--model trace"
        elif kind == "rows":
            _apply_rows(it, value, module, origin)


def _trace_runs(p: Plan, input_size: tuple[int, ...] | None) -> list[dict[str, Any]]:
    """The traced calls of the --model target: one on --input-size or its example, else one per layout of the
    Keras config's input shapes that it runs on."""
    from ptools.convert import trace

    example = trace.example_input(p.model, input_size)
    runs: list[dict[str, trace.LinearFeed]] = []
    if example is not None:
        try:
            runs.append(trace.trace_linear_inputs(p.model, example))
        except PtoolsError:
            # --input-size gives a shape, not a dtype: a model that starts with an Embedding takes token ids.
            tokens = trace.token_input(p.model, input_size)
            if tokens is None:
                raise
            runs.append(trace.trace_linear_inputs(p.model, tokens))
    else:
        # The Keras config's input shapes, in each layout the target might take (a sequence may be (N, C, L)
        # or (N, L, C)): every one it runs on is traced, and they must agree.
        for candidate in trace.config_examples(p.source.model_config):
            try:
                runs.append(trace.trace_linear_inputs(p.model, candidate))
            except PtoolsError:
                continue
    return runs


def settle_norm_axes_by_trace(p: Plan, input_size: tuple[int, ...] | None) -> None:
    """With --model: a LayerNormalization over several axes whose target shape fits both orders (L == C) takes
    the order of the tensor its nn.LayerNorm is traced on: channels-first (out of a conv-like module, every
    dim but the batch normalised) wants (C, ...), channels-first with fewer dims normalised keeps Keras' order
    of the trailing spatial axes; a tensor the trace cannot orient leaves the question open (exit 1)."""
    asks = [it for it in p.written if it.undetermined is not None and it.undetermined.kind == "norm_axes"]
    if not asks:
        return
    try:
        runs = _trace_runs(p, input_size)
    except PtoolsError as e:
        runs, failed = [], e.message
    else:
        failed = "no input it runs on (give --input-size)"
    for it in asks:
        q = it.undetermined
        assert q is not None
        key = p.targets.get(id(it), "")
        module = key.rsplit(".", 1)[0] if "." in key else key
        picks = set()
        for feeds in runs:
            feed = feeds.get(module)
            if feed is None or not feed.map_input or not feed.map_cf or feed.norm_dims != len(it.shape_before):
                picks.add(None)
            else:
                picks.add("channels-first" if feed.norm_dims == feed.map_rank - 1 else "channels-last")
        pick = picks.pop() if len(picks) == 1 else None
        if pick is None:
            if runs:
                q.why = f"{q.why}; the traced --model does not apply `{module}` to a conv's channels-first output"
            else:
                q.why = f"{q.why}; --model could not be traced: {failed}"
                rules = layouts.norm_axes_rules(it.sources[0], q.choices[1].transform)
                q.settle = (
                    f"--input-size (the input shape without the batch), so that --model can be traced, or {rules}"
                )
            continue
        it.choose(next(c for c in q.choices if c.name == pick), "--model trace")


def _same(a: tuple[str, Any, str], b: tuple[str, Any, str]) -> bool:
    if a[0] != b[0]:
        return False
    return bool(np.array_equal(a[1], b[1])) if a[0] == "rows" else a[1] == b[1]


def _traced_rows(it: Item, feed: Any, module: str) -> tuple[str, Any, str]:
    """("rows", Keras row per input, origin) | ("vector", None, "") | ("keep", None, "") | ("open", why, "")."""
    from ptools.convert import trace

    vector = len(it.shape_before) == 1
    n_in = it.shape_before[0] if it.shape_before else 0
    if feed is None or feed.in_features != n_in:
        kind = "a per-feature module (BatchNorm1d, LayerNorm, PReLU)" if vector else "an nn.Linear"
        return "open", f"the traced --model does not call `{module}` as {kind}", ""
    if feed.map_input and vector:
        return ("vector", None, "") if it.undetermined is not None else ("keep", None, "")
    if not feed.flattened_map:
        if it.flatten_source == "config":
            return (
                "open",
                f"the config says a Flatten feeds it, but the traced --model feeds `{module}` a tensor the trace "
                "cannot follow back to a map",
                "",
            )
        return ("vector", None, "") if it.undetermined is not None else ("keep", None, "")
    if it.flatten_segments:
        rows = trace.keras_rows_segments(feed, it.flatten_segments)
    else:
        pre = it.flatten_shape
        channels = pre[-1] if pre else (it.undetermined.channels if it.undetermined is not None else None)
        if pre is None and len(feed.origins) == 1 and feed.origins[0].cf:
            # Without a config the channels are a guess (a conv before it whose channels divide n_in); the
            # trace saw the conv that made the map, channels-first, so its first dim is C.
            channels = feed.origins[0].shape[0]
        elif pre is None:
            # A guessed C on a map no conv made (the model input, say): a dim that happens to equal it says
            # nothing about the layout (fuzz seed 90017 model 0: C=12 guessed, a (3, 4, 12) NCHW input read as
            # channels-last, wrong with exit 0).
            channels = None
        rows = trace.keras_rows(feed, channels, pre)
    origin = " + ".join("x".join(str(d) for d in o.shape) for o in feed.origins)
    if rows is None:
        return (
            "open",
            f"the traced --model flattens {origin} into `{module}`, and which Keras features each of its inputs "
            "holds cannot be told from it (channels-first or channels-last, or parts in another order)",
            "",
        )
    return "rows", rows, origin


def _apply_rows(it: Item, rows: np.ndarray, module: str | None, origin: str) -> None:
    raw = it.raw
    assert raw is not None
    vector = len(it.shape_before) == 1
    n_in = it.shape_before[0]
    identity = bool(np.array_equal(rows, np.arange(n_in)))
    if vector:
        it.make = lambda raw=raw, rows=rows: np.ascontiguousarray(np.asarray(raw()).reshape(-1)[rows])
    else:
        it.make = lambda raw=raw, rows=rows: layouts.dense_rows(raw(), rows)
        it.shape_after = (it.shape_before[1], n_in)
    it.chunks = None
    what = "copy" if vector else "transpose"
    it.transform = (
        f"{what} (the traced {module} takes a flattened {origin} map in TF's order)"
        if identity
        else f"{'features' if vector else 'rows'} reordered for the traced input of {module} (flattened {origin})"
    )
    if it.flatten_source == "rule":
        it.transform += "; the --map transform is overridden by the target"
    it.undetermined = None
    it.decided_by = "--model trace"


def _open_flatten_question(it: Item, why: str) -> None:
    """A Dense whose row order the target should settle but did not: written only by an explicit --map rule."""
    if it.flatten_source == "rule":
        return
    n_in = it.shape_before[0]
    rule = (
        f'{{"pattern": "{it.sources[0]}", "transform": "dense_after_flatten", "flatten_shape": [H, W, C]}}'
        " (for a target that flattens NCHW)"
    )
    settle = f"--input-size CxHxW, so that --model can be traced, or a --map rule {rule}"
    if it.undetermined is not None:
        it.undetermined.why = f"{it.undetermined.why}; {why}"
        it.undetermined.settle = settle
        return
    it.undetermined = Undetermined(
        "flatten",
        f"a Flatten feeds it ({n_in} inputs in TF's (H, W, C) order) and the target decides the order it wants: {why}",
        settle,
        channels=it.flatten_shape[-1] if it.flatten_shape else None,
        rule=rule,
    )
