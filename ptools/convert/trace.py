"""What each nn.Linear of a target model is fed: a flattened feature map (and in which element order) or not.

A Keras Dense after a Flatten has its rows in TF's (H, W, C) flatten order; the PyTorch port's Linear wants
whatever order its own forward produces. Rather than guess from names, run the target once and follow the
layout ops (flatten, view, reshape, permute, transpose, movedim, ...) from the first one applied to a map
(assumed NCHW, as PyTorch convs produce) to each Linear's input, carrying an index tensor through the same
ops. Shape-preserving elementwise ops (activations, dropout, BatchNorm1d) pass the tag on.
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
    origin: tuple[int, ...] | None = None  # (C, *spatial) of the NCHW map it is a flattening of; None: not one
    order: np.ndarray | None = None  # input feature j = element order[j] (C-major linear index) of that map

    @property
    def flattened_map(self) -> bool:
        return self.origin is not None and len(self.origin) >= 2


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


def trace_linear_inputs(model: Any, example: Any) -> dict[str, LinearFeed]:
    """{qualified Linear name: LinearFeed} from one forward pass of `model` on `example` (no grad, eval)."""
    import torch
    from torch import nn
    from torch.overrides import TorchFunctionMode

    layout = _layout_funcs()
    mixing = _mixing_funcs()
    tags: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]] = {}  # id -> (tensor, index, origin)

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
            if func in layout:
                if tag is None and src.dim() >= 3:
                    # The first layout op on a map: assume NCHW (what PyTorch convs produce).
                    origin = tuple(int(d) for d in src.shape[1:])
                    per_sample = torch.arange(int(np.prod(origin)), dtype=torch.int64).reshape(origin)
                    index = per_sample.unsqueeze(0).expand(src.shape).contiguous()
                    tag = (src, index, origin)
                if tag is not None:
                    try:
                        moved = func(tag[1], *args[1:], **kwargs)
                    except (RuntimeError, TypeError, ValueError):
                        return out
                    if isinstance(moved, torch.Tensor) and tuple(moved.shape) == tuple(out.shape):
                        tags[id(out)] = (out, moved, tag[2])
            elif tag is not None and func not in mixing and tuple(out.shape) == tuple(src.shape):
                tags[id(out)] = (out, tag[1], tag[2])
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
                    feeds[name] = LinearFeed(name, int(mod.in_features), tag[2], order)
                else:
                    feeds[name] = LinearFeed(name, int(mod.in_features))

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
