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


@dataclass
class LinearFeed:
    """What a Linear consumed on the traced call."""

    module: str
    in_features: int
    origin: tuple[int, ...] | None = None  # per-sample shape of the map it is a flattening of; None: not one
    order: np.ndarray | None = None  # input feature j = element order[j] (C-order linear index) of that map
    origin_cf: bool = False  # that map came out of a conv-like module (so it is channels-first)

    @property
    def flattened_map(self) -> bool:
        return self.origin is not None and len(self.origin) >= 2


def keras_rows(feed: LinearFeed, channels: int | None, pre_shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """For each input j of the Linear, the row of the Keras Dense kernel it must get (TF flattens (..., C)).

    `channels` is C of the map Keras flattened, `pre_shape` its whole Keras shape where known. None when the
    traced map is neither (C, *spatial) nor (*spatial, C), or is both with different row orders and nothing
    says which (the caller then leaves the question open)."""
    if feed.origin is None or feed.order is None or not channels:
        return None
    origin, order = feed.origin, np.asarray(feed.order, dtype=np.int64)
    n = int(np.prod(origin))
    if n != feed.in_features or n % channels or len(order) != n:
        return None
    hw = n // channels
    cf_ok = origin[0] == channels and (pre_shape is None or tuple(origin) == (pre_shape[-1], *pre_shape[:-1]))
    cl_ok = origin[-1] == channels and (pre_shape is None or tuple(origin) == tuple(pre_shape))
    cf_rows = (order % hw) * channels + order // hw  # element c*HW + s of an NCHW map is Keras row s*C + c
    cl_rows = order  # a channels-last map is in Keras' own order
    if cf_ok and cl_ok and not np.array_equal(cf_rows, cl_rows):
        if not feed.origin_cf:
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
    return {F.linear, torch.matmul, T.matmul, torch.mm, T.mm, torch.bmm, torch.einsum, T.__matmul__}


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
    tags: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, ...], bool]] = {}  # id -> (t, index, origin, cf)
    channels_first: dict[int, torch.Tensor] = {}  # id -> tensor: outputs of conv-like modules, and what keeps them

    class Follow(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
                return out
            src = args[0]
            tag = tags.get(id(src))
            if tag is not None and tag[0] is not src:
                tag = None  # a recycled id
            cf = channels_first.get(id(src)) is src
            if func in layout:
                if tag is None and src.dim() >= 3:
                    # The first layout op on a map: index its elements in their own (C-order) layout.
                    origin = tuple(int(d) for d in src.shape[1:])
                    per_sample = torch.arange(int(np.prod(origin)), dtype=torch.int64).reshape(origin)
                    index = per_sample.unsqueeze(0).expand(src.shape).contiguous()
                    tag = (src, index, origin, cf)
                if tag is not None:
                    try:
                        moved = func(tag[1], *args[1:], **kwargs)
                    except (RuntimeError, TypeError, ValueError):
                        return out
                    if isinstance(moved, torch.Tensor) and tuple(moved.shape) == tuple(out.shape):
                        tags[id(out)] = (out, moved, tag[2], tag[3])
            elif func not in mixing and tuple(out.shape) == tuple(src.shape):
                if tag is not None:
                    tags[id(out)] = (out, tag[1], tag[2], tag[3])
                if cf:
                    channels_first[id(out)] = out
            return out

    feeds: dict[str, LinearFeed] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):

            def hook(mod: Any, inputs: Any, name: str = name) -> None:
                if name in feeds or not inputs or not isinstance(inputs[0], torch.Tensor):
                    return
                x = inputs[0]
                tag = tags.get(id(x))
                if tag is not None and tag[0] is x and x.dim() == 2:
                    order = tag[1][0].numpy().copy()
                    feeds[name] = LinearFeed(name, int(mod.in_features), tag[2], order, tag[3])
                else:
                    feeds[name] = LinearFeed(name, int(mod.in_features))

            handles.append(module.register_forward_pre_hook(hook))
        elif isinstance(module, _channels_first_modules()):

            def mark(mod: Any, inputs: Any, output: Any) -> None:
                if isinstance(output, torch.Tensor) and output.dim() >= 3:
                    channels_first[id(output)] = output

            handles.append(module.register_forward_hook(mark))
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
