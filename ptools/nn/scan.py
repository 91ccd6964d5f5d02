"""Model scan behind `check-conv --model`: one forward pass, every conv/pool layer compared with TF SAME/VALID."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ptools import padding as tfpad
from ptools.errors import PtoolsError
from ptools.nn.conv2d_same import Conv2dSame, ConvTranspose2dSame
from ptools.nn.pool2d_same import AvgPool2dSame, MaxPool2dSame

Pads = tuple[tuple[int, int], tuple[int, int]]
SCANNED = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)
# Pad layers: one followed by a Conv2d is one conv with explicit padding, the recipe check-conv itself
# recommends for TF SAME at stride 2 (`nn.ZeroPad2d((0, 1, 0, 1))` + `nn.Conv2d(padding=0)`).
PAD_LAYERS = (nn.ConstantPad2d, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)
_OURS = (Conv2dSame, ConvTranspose2dSame, MaxPool2dSame, AvgPool2dSame)
_BASE_FORWARD = {cls: cls.forward for cls in SCANNED}


@dataclass
class LayerCheck:
    """One call of one conv/pool layer: what PyTorch produced and what TF would."""

    name: str
    type: str
    op: str
    input: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pytorch_output: tuple[int, int]
    tf_output: tuple[int, int] | None
    pytorch_padding: Pads | None  # None: a custom forward, placement unknown
    tf_padding: Pads | None
    ok: bool
    problem: str | None = None
    pad_layer: str | None = None  # the pad layer folded into this conv (its input is the conv's input here)


@dataclass
class _PadCall:
    """A pad layer's call, kept until the next conv shows whether it consumed the padded tensor."""

    name: str
    module: nn.Module
    output: torch.Tensor
    input: tuple[int, int]
    pads: Pads  # ((top, bottom), (left, right))


def _pad_amounts(module: nn.Module) -> Pads:
    left, right, top, bottom = module.padding  # torch stores (left, right, top, bottom) for 2-d pads
    return ((int(top), int(bottom)), (int(left), int(right)))


def _pad_problem(module: nn.Module) -> str | None:
    """TF SAME pads with zeros: a pad layer with another value or mode changes the border values."""
    if isinstance(module, nn.ConstantPad2d):
        return None if float(module.value) == 0.0 else f"pads with {module.value:g}, TF pads with zeros"
    mode = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate", nn.CircularPad2d: "circular"}
    kind = next((v for k, v in mode.items() if isinstance(module, k)), type(module).__name__)
    return f"{type(module).__name__} pads with {kind!r}, TF pads with zeros"


@dataclass
class ScanResult:
    model: str
    input_size: tuple[int, int, int]
    expect: str
    layers: list[LayerCheck] = field(default_factory=list)
    error: str | None = None

    @property
    def drift(self) -> int:
        return sum(not layer.ok for layer in self.layers)

    @property
    def ok(self) -> bool:
        return self.error is None and self.drift == 0


def load_model(spec: str) -> nn.Module:
    """Build a model from `package.module:Factory`, `path/to/file.py:Factory` or `torchvision:NAME`.

    The factory is called without arguments (a class or a function); torchvision models are built without
    weights. An `nn.Module` instance in place of a factory is used as it is.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PtoolsError(
            f"--model {spec!r}: expected package.module:Factory, file.py:Factory or torchvision:NAME",
            hint="e.g. --model torchvision:resnet18",
        )
    if module_name == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(attr, weights=None)
        except ValueError as e:
            raise PtoolsError(f"--model {spec!r}: {e}", hint="see torchvision.models.list_models()") from None
    module = _import(spec, module_name)
    factory = getattr(module, attr, None)
    if factory is None:
        raise PtoolsError(f"--model {spec!r}: {module_name} has no attribute {attr!r}")
    model = factory if isinstance(factory, nn.Module) else _call_factory(spec, factory)
    if not isinstance(model, nn.Module):
        raise PtoolsError(f"--model {spec!r}: the factory returned {type(model).__name__}, not a torch nn.Module")
    return model


def _import(spec: str, module_name: str):
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise PtoolsError(f"--model {spec!r}: {path} does not exist")
        loader_spec = importlib.util.spec_from_file_location(f"_ptools_scan_{path.stem}", path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[loader_spec.name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:
            raise PtoolsError(f"--model {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from None
        return module
    # Like `python -m` (and uvicorn's app specs): modules of the project you run it from are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise PtoolsError(f"--model {spec!r}: cannot import {module_name}: {e}", hint="is it on PYTHONPATH?") from None


def _call_factory(spec: str, factory):
    if not callable(factory):
        raise PtoolsError(f"--model {spec!r}: {type(factory).__name__} is not callable")
    try:
        return factory()
    except Exception as e:
        raise PtoolsError(f"--model {spec!r}: building the model failed: {type(e).__name__}: {e}") from None


def _op(module: nn.Module) -> str:
    if isinstance(module, nn.ConvTranspose2d):
        return "transpose"
    if isinstance(module, nn.Conv2d):
        return "conv"
    return "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"


def _custom_forward(module: nn.Module) -> bool:
    """A subclass with its own forward (timm's Conv2dSame, say) may pad itself: its attributes can't tell."""
    if isinstance(module, _OURS):
        return False
    base = next(cls for cls in SCANNED if isinstance(module, cls))
    return type(module).forward is not _BASE_FORWARD[base]


def _torch_padding(module: nn.Module, op: str, inp: tuple[int, int], window) -> Pads | None:
    """Where PyTorch puts the windows, as TF-style (before, after) pads (crops for a transposed conv)."""
    if isinstance(module, _OURS):
        return window.padding if op != "transpose" else window.crop
    if _custom_forward(module):
        return None
    pad = module.padding
    if isinstance(pad, str):  # Conv2d(padding='same'|'valid'); 'same' (stride 1) puts the odd pixel after, like TF
        if pad == "valid":
            return ((0, 0), (0, 0))
        return tfpad.conv2d_window(inp, module.kernel_size, 1, module.dilation).padding
    ph, pw = tfpad.pair(pad) if not isinstance(pad, int) else (pad, pad)
    return ((ph, -1), (pw, -1))  # the after side is implied by the output size, compared separately


def _check(
    name: str,
    module: nn.Module,
    inp: tuple[int, int],
    out: tuple[int, int],
    expect: str,
    pad: _PadCall | None = None,
) -> LayerCheck:
    """Compare one call with TF. With `pad`, the pad layer and the conv are judged as one conv on the pad
    layer's input: their paddings add up."""
    op = _op(module)
    kernel, stride = tfpad.pair(module.kernel_size), tfpad.pair(module.stride)
    dilation = tfpad.pair(getattr(module, "dilation", 1))
    if op == "avgpool":
        dilation = (1, 1)
    mode = getattr(module, "tf_padding", expect) if isinstance(module, _OURS) else expect
    problems: list[str] = []
    try:
        if op == "transpose":
            op_pad = getattr(module, "tf_output_padding", None)
            window = tfpad.transpose2d_window(inp, kernel, stride, dilation, mode, op_pad)
            tf_output, tf_pads = window.output, window.crop
        else:
            window = tfpad.conv2d_window(inp, kernel, stride, dilation, mode)
            tf_output, tf_pads = window.output, window.padding
    except PtoolsError as e:
        window, tf_output, tf_pads = None, None, None
        problems.append(f"TF {mode.upper()} has no output: {e.message}")
    torch_pads = _torch_padding(module, op, inp, window) if window is not None else None
    if pad is not None:
        torch_pads = _add_pads(pad, module, kernel, stride, dilation)
        problem = _pad_problem(pad.module)
        if problem:
            problems.append(problem)
    if isinstance(module, _OURS) and mode != expect:
        problems.append(f"layer uses TF {mode.upper()}, expected {expect.upper()}")
    if tf_output is not None and tuple(out) != tuple(tf_output):
        problems.append(f"size {out[0]}x{out[1]}, TF {tf_output[0]}x{tf_output[1]}")
    elif tf_pads is not None and torch_pads is not None:
        before = (torch_pads[0][0], torch_pads[1][0])
        if before != (tf_pads[0][0], tf_pads[1][0]):
            problems.append(f"shifted: top,left pad {before[0]},{before[1]}, TF {tf_pads[0][0]},{tf_pads[1][0]}")
    if not isinstance(module, _OURS) and not _custom_forward(module):
        problems.extend(_value_problems(module, op, tf_pads))
    # The after side of a symmetric torch pad is what the sizes imply; report TF's when they agree.
    if torch_pads is not None and torch_pads[0][1] == -1:
        torch_pads = _implied_after(module, op, inp, out, torch_pads)
    return LayerCheck(
        name=f"{pad.name} + {name}" if pad else name,
        type=f"{type(pad.module).__name__}+{type(module).__name__}" if pad else type(module).__name__,
        op=op,
        input=inp,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        pytorch_output=out,
        tf_output=tf_output,
        pytorch_padding=torch_pads,
        tf_padding=tf_pads,
        ok=not problems,
        problem="; ".join(problems) or None,
        pad_layer=pad.name if pad else None,
    )


def _add_pads(pad: _PadCall, module: nn.Module, kernel, stride, dilation) -> Pads | None:
    """The pad layer's amounts plus the conv's own padding, as one (before, after) pair per dimension."""
    own = module.padding
    if isinstance(own, str):
        padded = (pad.input[0] + sum(pad.pads[0]), pad.input[1] + sum(pad.pads[1]))
        if own == "valid":
            own_pads: Pads = ((0, 0), (0, 0))
        else:
            own_pads = tfpad.conv2d_window(padded, kernel, 1, dilation).padding
    else:
        ph, pw = tfpad.pair(own) if not isinstance(own, int) else (own, own)
        own_pads = ((ph, ph), (pw, pw))
    return (
        (pad.pads[0][0] + own_pads[0][0], pad.pads[0][1] + own_pads[0][1]),
        (pad.pads[1][0] + own_pads[1][0], pad.pads[1][1] + own_pads[1][1]),
    )


def _implied_after(module: nn.Module, op: str, inp, out, pads: Pads) -> Pads:
    """Symmetric torch padding, as (before, after) with after = what the last window actually reaches."""
    result = []
    for n in range(2):
        before = pads[n][0]
        k_eff = tfpad.effective_kernel(tfpad.pair(module.kernel_size)[n], tfpad.pair(getattr(module, "dilation", 1))[n])
        s = tfpad.pair(module.stride)[n]
        if op == "transpose":
            full = (inp[n] - 1) * s + k_eff
            result.append((before, full - before - out[n]))
        else:
            result.append((before, max((out[n] - 1) * s + k_eff - inp[n] - before, 0)))
    return (result[0], result[1])


def _value_problems(module: nn.Module, op: str, tf_pads: Pads | None) -> list[str]:
    """Differences the sizes don't show: non-zero padding modes and average pools counting padded cells."""
    problems = []
    pad = module.padding
    padded = pad not in (0, (0, 0), "valid")
    if op == "conv" and padded and module.padding_mode != "zeros":
        problems.append(f"pads with {module.padding_mode!r}, TF pads with zeros")
    if op == "avgpool":
        if module.divisor_override:
            problems.append("divisor_override set: TF divides by the number of valid cells")
        elif module.count_include_pad and padded:
            problems.append("count_include_pad=True counts padded cells; TF divides by valid cells only")
    return problems


def scan_model(model: nn.Module, input_size: tuple[int, int, int], expect: str = "same", spec: str = "") -> ScanResult:
    """Run one forward pass on zeros of (1, C, H, W) and check every conv/pool call against TF.

    A layer is ok when PyTorch gives TF's output size with TF's window placement (and, for average pools,
    TF's divisor): same size with windows shifted by one is the classic silent port bug, so it counts.
    """
    if expect not in tfpad.PAD_MODES:
        raise PtoolsError(f"--expect must be 'same' or 'valid', got {expect!r}")
    result = ScanResult(model=spec, input_size=input_size, expect=expect)
    names = {module: name or type(model).__name__ for name, module in model.named_modules()}
    calls: dict[str, int] = {}
    pads: list[_PadCall] = []  # recent pad-layer calls whose output a conv may take next

    def pad_hook(module: nn.Module, args, output) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor) and output.dim() == 4:
            inp = (int(args[0].shape[-2]), int(args[0].shape[-1]))
            pads.append(_PadCall(names.get(module, type(module).__name__), module, output, inp, _pad_amounts(module)))
            del pads[:-4]

    def hook(module: nn.Module, args, output) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        if args[0].dim() != 4:
            return
        name = names.get(module, type(module).__name__)
        calls[name] = calls.get(name, 0) + 1
        if calls[name] > 1:  # a layer called twice (shared weights) gets one row per call
            name = f"{name}#{calls[name]}"
        # Only a plain Conv2d folds with the pad layer that made its input (the very tensor, not a copy).
        pad = next((p for p in pads if p.output is args[0]), None) if _op(module) == "conv" else None
        if pad is not None and (isinstance(module, _OURS) or _custom_forward(module)):
            pad = None
        inp = pad.input if pad is not None else (int(args[0].shape[-2]), int(args[0].shape[-1]))
        out = (int(output.shape[-2]), int(output.shape[-1]))
        result.layers.append(_check(name, module, inp, out, expect, pad))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SCANNED)]
    handles += [m.register_forward_hook(pad_hook) for m in model.modules() if isinstance(m, PAD_LAYERS)]
    try:
        model.eval()
        with torch.no_grad():
            # Zeros in the model's own dtype and device: the scan needs shapes only.
            ref = next((t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
            dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, "cpu")
            model(torch.zeros(1, *input_size, dtype=dtype, device=device))
    except Exception as e:  # a drifting layer often breaks a later concat: report what was seen
        result.error = f"forward pass failed: {type(e).__name__}: {e}".splitlines()[0]
    finally:
        for handle in handles:
            handle.remove()
        pads.clear()
    return result
