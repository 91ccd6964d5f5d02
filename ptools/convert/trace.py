"""What each nn.Linear of a target model is fed: a flattened feature map (and in which element order) or not.

A Keras Dense after a Flatten has its rows in TF's (H, W, C) flatten order; the PyTorch port's Linear wants
whatever order its own forward produces. Rather than guess from names, run the target once and follow the
layout ops (flatten, view, reshape, permute, transpose, movedim, ...) from the first one applied to a map
to each Linear's input, carrying an index tensor through the same ops. Shape-preserving elementwise ops
(activations, dropout, BatchNorm1d) pass the tag on.

The map where the first layout op starts may be channels-first (what PyTorch convs produce) or already in
Keras' channels-last order (a port that keeps a Dense's (N, L, C) output as it is): `keras_rows` tells the
two apart by the map's shape against the channels Keras flattened, and where the shape cannot (C == H == W),
by whether the map came out of a conv-like module (recorded by forward hooks); otherwise it says it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ptools.errors import PtoolsError


@dataclass(frozen=True)
class Origin:
    """A map whose elements the trace follows: ids base .. base + prod(shape) - 1, C-order."""

    base: int
    shape: tuple[int, ...]  # per sample
    cf: bool  # it came out of a conv-like module (so it is channels-first)


@dataclass
class LinearFeed:
    """What a Linear (or a per-feature BatchNorm1d / LayerNorm / PReLU) consumed on the traced call."""

    module: str
    in_features: int
    order: np.ndarray | None = None  # input feature j = element id order[j] of one of `origins`; -1: of none
    origins: tuple[Origin, ...] = ()
    map_input: bool = False  # a per-channel module applied to a map (BatchNorm2d...): its weights are per channel
    map_cf: bool = False  # that map came out of a conv-like module: channels-first
    map_rank: int = 0  # its rank, batch included
    norm_dims: int = 0  # a LayerNorm: how many trailing dims it normalises

    @property
    def origin(self) -> tuple[int, ...] | None:
        """The one map it is a flattening of (None: none, or several)."""
        if len(self.origins) != 1 or self.order is None or (self.order < 0).any():
            return None
        return self.origins[0].shape

    @property
    def origin_cf(self) -> bool:
        return len(self.origins) == 1 and self.origins[0].cf

    @property
    def flattened_map(self) -> bool:
        return any(len(o.shape) >= 2 for o in self.origins)


def keras_rows(feed: LinearFeed, channels: int | None, pre_shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """For each input j of the Linear, the row of the Keras Dense kernel it must get (TF flattens (..., C)).

    `channels` is C of the map Keras flattened, `pre_shape` its whole Keras shape where known. None when the
    traced map is neither (C, *spatial) nor (*spatial, C), or is both with different row orders and nothing
    says which (the caller then leaves the question open)."""
    if feed.origin is None or feed.order is None or not channels:
        return None
    return _rows_of(
        feed.origins[0],
        np.asarray(feed.order, dtype=np.int64) - feed.origins[0].base,
        channels,
        pre_shape,
        feed.in_features,
    )


def keras_rows_segments(feed: LinearFeed, segments: list[tuple[tuple[int, ...] | None, int]]) -> np.ndarray | None:
    """keras_rows for a vector Keras assembled from parts ([pre-Flatten shape | None, length] each, in order,
    as a Concatenate of Flattens and vectors): the traced input must hold the same parts in the same order,
    each map part from one traced map; rows are worked out part by part."""
    if feed.order is None or sum(n for _, n in segments) != feed.in_features or len(feed.order) != feed.in_features:
        return None
    order = np.asarray(feed.order, dtype=np.int64)
    by_base = {o.base: o for o in feed.origins}
    rows = np.empty(feed.in_features, dtype=np.int64)
    start = 0
    for shape, n in segments:
        part = order[start : start + n]
        if shape is None or len(shape) < 2:
            if (part >= 0).any():
                return None  # the target puts map elements where Keras has a plain vector
            rows[start : start + n] = np.arange(start, start + n)
        else:
            if (part < 0).any():
                return None
            owners = {b for b in by_base if ((part >= b) & (part < b + int(np.prod(by_base[b].shape)))).all()}
            if len(owners) != 1:
                return None
            origin = by_base[owners.pop()]
            local = _rows_of(origin, part - origin.base, shape[-1], tuple(shape), n)
            if local is None:
                return None
            rows[start : start + n] = local + start
        start += n
    return rows


def _rows_of(
    origin: Origin,
    order: np.ndarray,
    channels: int,
    pre_shape: tuple[int, ...] | None,
    n_in: int,
) -> np.ndarray | None:
    n = int(np.prod(origin.shape))
    if n != n_in or n % channels or len(order) != n:
        return None
    hw = n // channels
    feed_origin, origin_cf = origin.shape, origin.cf
    cf_ok = feed_origin[0] == channels and (pre_shape is None or tuple(feed_origin) == (pre_shape[-1], *pre_shape[:-1]))
    cl_ok = feed_origin[-1] == channels and (pre_shape is None or tuple(feed_origin) == tuple(pre_shape))
    cf_rows = (order % hw) * channels + order // hw  # element c*HW + s of an NCHW map is Keras row s*C + c
    cl_rows = order  # a channels-last map is in Keras' own order
    if cf_ok and cl_ok and not np.array_equal(cf_rows, cl_rows):
        if not origin_cf:
            return None
        cl_ok = False
    if cf_ok:
        return cf_rows
    if cl_ok:
        return cl_rows
    return None


def example_input(model: Any, input_size: tuple[int, ...] | None) -> Any:
    """--input-size CxHxW (a batch of 1), else the model's own example (`example_input_array`, Lightning's
    convention, or `example_input`); None when there is neither."""
    import torch

    if input_size is not None:
        return torch.randn(1, *input_size)
    for attr in ("example_input_array", "example_input", "example_inputs"):
        value = getattr(model, attr, None)
        if value is not None:
            return value
    return None


def token_input(model: Any, input_size: tuple[int, ...] | None) -> Any:
    """--input-size as token ids (zeros, int64) for a model with an nn.Embedding; None otherwise."""
    import torch
    from torch import nn

    if input_size is None or not any(isinstance(m, nn.Embedding) for m in model.modules()):
        return None
    return torch.zeros(1, *input_size, dtype=torch.long)


def config_examples(model_config: dict[str, Any] | None) -> list[Any]:
    """Inputs for tracing a target when the user gave none: the Keras model's own input shapes (batch of 1,
    in its `inputs` order), images channels-first as PyTorch ports take them, sequences both ways.
    Empty when the config has no static input shape."""
    import itertools

    import torch

    if not model_config:
        return []
    from ptools.port.graph import parse_config

    try:
        graph = parse_config(model_config)
    except (PtoolsError, TypeError, AttributeError, KeyError, IndexError, ValueError):
        return []
    names = [r[0] for r in graph.inputs] or list(graph.input_shapes)
    per_input: list[list[Any]] = []
    for name in names:
        shape = graph.input_shapes.get(name)
        if shape is None or any(d is None for d in shape):
            return []
        dims = [int(d) for d in shape]
        if "int" in graph.input_dtypes.get(name, ""):
            per_input.append([torch.zeros(1, *dims, dtype=torch.long)])
            continue
        first = (dims[-1], *dims[:-1]) if len(dims) >= 2 else tuple(dims)
        layouts = [first] if len(dims) >= 3 or len(dims) < 2 else [first, tuple(dims)]
        per_input.append([torch.randn(1, *d) for d in dict.fromkeys(layouts)])
    out = []
    for combo in itertools.product(*per_input):
        out.append(combo[0] if len(combo) == 1 else tuple(combo))
    return out[:8]


def _layout_funcs() -> set[Any]:
    import torch

    T = torch.Tensor
    return {
        torch.flatten,
        T.flatten,
        T.view,
        T.reshape,
        torch.reshape,
        T.permute,
        torch.permute,
        T.transpose,
        torch.transpose,
        T.movedim,
        torch.movedim,
        T.contiguous,
        T.squeeze,
        torch.squeeze,
        T.unsqueeze,
        torch.unsqueeze,
        T.flip,
    }


def _mixing_funcs() -> set[Any]:
    """Shape-preserving ops that do not keep feature j at position j (so the tag must stop)."""
    import torch
    import torch.nn.functional as F

    T = torch.Tensor
    return {
        F.linear,
        torch.matmul,
        T.matmul,
        torch.mm,
        T.mm,
        torch.bmm,
        torch.einsum,
        T.__matmul__,
    }


def _channels_first_modules() -> tuple[type, ...]:
    """Modules whose output of rank >= 3 is channels-first by construction."""
    from torch import nn

    return (
        nn.modules.conv._ConvNd,
        nn.modules.batchnorm._BatchNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.GroupNorm,
        nn.modules.pooling._MaxPoolNd,
        nn.modules.pooling._AvgPoolNd,
        nn.modules.pooling._AdaptiveAvgPoolNd,
        nn.modules.pooling._AdaptiveMaxPoolNd,
        nn.Upsample,
        nn.modules.padding._ConstantPadNd,
        nn.modules.padding._ReflectionPadNd,
        nn.modules.padding._ReplicationPadNd,
    )


def trace_linear_inputs(model: Any, example: Any) -> dict[str, LinearFeed]:
    """{qualified Linear name: LinearFeed} from one forward pass of `model` on `example` (no grad, eval)."""
    import torch
    from torch import nn
    from torch.overrides import TorchFunctionMode

    layout = _layout_funcs()
    mixing = _mixing_funcs()
    tags: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (tensor, element ids of the origins)
    origins: list[Origin] = []
    channels_first: dict[int, torch.Tensor] = {}  # id -> tensor: outputs of conv-like modules, and what keeps them
    joins = {torch.cat, torch.concat, torch.concatenate, torch.hstack}

    def tag_of(t: Any) -> Any:
        tag = tags.get(id(t)) if isinstance(t, torch.Tensor) else None
        return tag[1] if tag is not None and tag[0] is t else None  # an id can be recycled

    class Follow(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if not isinstance(out, torch.Tensor) or not args:
                return out
            if func in joins and isinstance(args[0], (list, tuple)):
                self._join(
                    args[0],
                    out,
                    kwargs.get(
                        "dim",
                        args[1] if len(args) > 1 else (1 if func is torch.hstack else 0),
                    ),
                )
                return out
            if not isinstance(args[0], torch.Tensor):
                return out
            src = args[0]
            index = tag_of(src)
            cf = channels_first.get(id(src)) is src
            if func in layout:
                if index is None and src.dim() >= 3:
                    # The first layout op on a map: index its elements in their own (C-order) layout.
                    shape = tuple(int(d) for d in src.shape[1:])
                    origin = Origin(sum(int(np.prod(o.shape)) for o in origins), shape, cf)
                    origins.append(origin)
                    per_sample = torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(shape) + origin.base
                    index = per_sample.unsqueeze(0).expand(src.shape).contiguous()
                if index is not None:
                    try:
                        moved = func(index, *args[1:], **kwargs)
                    except (RuntimeError, TypeError, ValueError):
                        return out
                    if isinstance(moved, torch.Tensor) and tuple(moved.shape) == tuple(out.shape):
                        tags[id(out)] = (out, moved)
            elif func not in mixing and tuple(out.shape) == tuple(src.shape):
                if index is not None:
                    tags[id(out)] = (out, index)
                if cf:
                    channels_first[id(out)] = out
            return out

        @staticmethod
        def _join(parts: Any, out: Any, dim: Any) -> None:
            """torch.cat of vectors along the feature axis: the ids of tagged parts, -1 for the others."""
            if not isinstance(dim, int) or out.dim() != 2 or dim not in (1, -1):
                return
            indices = [tag_of(t) for t in parts]
            if all(i is None for i in indices) or any(not isinstance(t, torch.Tensor) or t.dim() != 2 for t in parts):
                return
            pieces = [
                i if i is not None else torch.full(t.shape, -1, dtype=torch.int64)
                for i, t in zip(indices, parts, strict=True)
            ]
            joined = torch.cat(pieces, dim=1)
            if tuple(joined.shape) == tuple(out.shape):
                tags[id(out)] = (out, joined)

    feeds: dict[str, LinearFeed] = {}
    handles = []
    per_feature = (nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.PReLU)
    for name, module in model.named_modules():
        if isinstance(module, _channels_first_modules()):

            def mark(mod: Any, inputs: Any, output: Any) -> None:
                if isinstance(output, torch.Tensor) and output.dim() >= 3:
                    channels_first[id(output)] = output

            handles.append(module.register_forward_hook(mark))
        if isinstance(module, per_feature):

            def hook(mod: Any, inputs: Any, name: str = name) -> None:
                if name in feeds or not inputs or not isinstance(inputs[0], torch.Tensor):
                    return
                x = inputs[0]
                if x.dim() > 2 and not isinstance(mod, nn.Linear):
                    # A BatchNorm2d/PReLU per channel (dim 1), a LayerNorm over the last dim of a map: never flattened
                    ln = isinstance(mod, nn.LayerNorm)
                    n = int(x.shape[-1]) if ln else int(x.shape[1])
                    feeds[name] = LinearFeed(
                        name,
                        n,
                        map_input=True,
                        map_cf=channels_first.get(id(x)) is x,
                        map_rank=x.dim(),
                        norm_dims=len(mod.normalized_shape) if ln else 0,
                    )
                    return
                n = int(x.shape[-1]) if x.dim() >= 1 else 0
                index = tag_of(x)
                if index is not None and x.dim() == 2:
                    order = index[0].numpy().copy()
                    mine = tuple(
                        o for o in origins if ((order >= o.base) & (order < o.base + int(np.prod(o.shape)))).any()
                    )
                    feeds[name] = LinearFeed(name, n, order, mine)
                else:
                    feeds[name] = LinearFeed(name, n)

            handles.append(module.register_forward_pre_hook(hook))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Follow():
            if isinstance(example, (tuple, list)):
                model(*example)
            elif isinstance(example, dict):
                model(**example)
            else:
                model(example)
    except Exception as e:  # noqa: BLE001 - the user's model rejected the input: bad input, not a ptools crash
        shape = tuple(example.shape) if hasattr(example, "shape") else type(example).__name__
        raise PtoolsError(
            f"--model: tracing the target on an input of shape {shape} failed ({type(e).__name__}: {e})",
            hint="give the model's input size with --input-size CxHxW",
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return feeds
