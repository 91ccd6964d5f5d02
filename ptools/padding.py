"""TensorFlow SAME/VALID window arithmetic in pure Python (no torch): output sizes, pad pairs, transposed-conv crops.

Every function works on one spatial dimension; the `*2d` helpers apply it to H and W independently, so
non-square kernels, strides and dilations need nothing special. The rules follow TensorFlow's
`GetWindowedOutputSizeVerbose` and Keras' transposed-conv output-length rule (see TF_FORMATS.md section 6).
PyTorch's own formulas (`torch_*_output`) are here too, so the CLI can show what a PyTorch layer gives
without importing torch.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ptools.errors import PtoolsError

PadMode = Literal["same", "valid"]
PAD_MODES: tuple[str, ...] = ("same", "valid")
IntOrPair = int | Sequence[int]


@dataclass(frozen=True)
class Window1d:
    """One spatial dimension of a conv or pool under TF padding: output length and the zero/-inf pads."""

    input: int
    kernel: int
    stride: int
    dilation: int
    padding: str
    output: int
    pad_before: int
    pad_after: int

    @property
    def effective_kernel(self) -> int:
        return effective_kernel(self.kernel, self.dilation)

    @property
    def pad_total(self) -> int:
        return self.pad_before + self.pad_after

    @property
    def symmetric(self) -> bool:
        return self.pad_before == self.pad_after


@dataclass(frozen=True)
class Transpose1d:
    """One spatial dimension of a TF/Keras transposed conv, relative to the full (padding=0) result.

    `full` is the length of `conv_transpose(x, stride=s, padding=0)`; TF keeps `full[crop_before :
    crop_before + output]`. `crop_after` is negative when TF's output is longer than the full result
    (VALID with stride > kernel, or output_padding): those trailing cells hold only the bias.
    """

    input: int
    kernel: int
    stride: int
    dilation: int
    padding: str
    output_padding: int | None
    output: int
    full: int
    crop_before: int

    @property
    def crop_after(self) -> int:
        return self.full - self.crop_before - self.output


@dataclass(frozen=True)
class Window2d:
    """H and W windows of a 2-D conv or pool."""

    h: Window1d
    w: Window1d

    @property
    def output(self) -> tuple[int, int]:
        return (self.h.output, self.w.output)

    @property
    def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right))."""
        return ((self.h.pad_before, self.h.pad_after), (self.w.pad_before, self.w.pad_after))

    @property
    def torch_pad(self) -> tuple[int, int, int, int]:
        """The same pads in `torch.nn.functional.pad` order: (left, right, top, bottom)."""
        return (self.w.pad_before, self.w.pad_after, self.h.pad_before, self.h.pad_after)

    @property
    def symmetric(self) -> bool:
        return self.h.symmetric and self.w.symmetric


@dataclass(frozen=True)
class Transpose2d:
    """H and W of a 2-D transposed conv."""

    h: Transpose1d
    w: Transpose1d

    @property
    def output(self) -> tuple[int, int]:
        return (self.h.output, self.w.output)

    @property
    def crop(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) cropped from the full result (negative: zero-extended)."""
        return ((self.h.crop_before, self.h.crop_after), (self.w.crop_before, self.w.crop_after))


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """Span of a dilated kernel: (k - 1) * d + 1."""
    return (kernel - 1) * dilation + 1


def pair(value: IntOrPair, name: str = "value") -> tuple[int, int]:
    """An int or a 2-sequence as (h, w)."""
    try:  # operator.index also takes numpy and torch integers, and refuses floats
        if not isinstance(value, Sequence):
            n = operator.index(value)
            return (n, n)
        values = tuple(operator.index(v) for v in value)
    except TypeError:
        values = ()
    if len(values) != 2:
        raise PtoolsError(f"{name} must be an integer or a pair of integers, got {value!r}")
    return (values[0], values[1])


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PtoolsError(f"{name} must be a positive integer, got {value!r}")


def _check_mode(padding: str) -> None:
    if padding not in PAD_MODES:
        raise PtoolsError(f"padding must be 'same' or 'valid', got {padding!r}")


def conv_window(input: int, kernel: int, stride: int = 1, dilation: int = 1, padding: PadMode = "same") -> Window1d:
    """TF conv (and pool) arithmetic for one dimension.

    SAME: out = ceil(in / s); the total pad makes the last window end on the last padded cell, and its
    odd pixel goes after (bottom/right). VALID: no pad; a kernel wider than the input is an error.
    """
    _check_positive(input=input, kernel=kernel, stride=stride, dilation=dilation)
    _check_mode(padding)
    k_eff = effective_kernel(kernel, dilation)
    if padding == "valid":
        if k_eff > input:
            raise PtoolsError(
                f"kernel {kernel} (spans {k_eff} with dilation {dilation}) is larger than the input {input}: "
                "VALID padding has no output",
                hint="use a smaller kernel or SAME padding",
            )
        return Window1d(input, kernel, stride, dilation, padding, (input - k_eff) // stride + 1, 0, 0)
    out = -(-input // stride)
    total = max((out - 1) * stride + k_eff - input, 0)
    return Window1d(input, kernel, stride, dilation, padding, out, total // 2, total - total // 2)


def pool_window(
    input: int, kernel: int, stride: int | None = None, padding: PadMode = "same", dilation: int = 1
) -> Window1d:
    """TF pooling: the conv rule, with the stride defaulting to the window (as in Keras and torch.nn)."""
    return conv_window(input, kernel, kernel if stride is None else stride, dilation, padding)


def transpose_output_length(
    input: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    padding: PadMode = "same",
    output_padding: int | None = None,
) -> int:
    """Keras' transposed-conv output length (the `output_shape` TF's conv2d_transpose is called with)."""
    k_eff = effective_kernel(kernel, dilation)
    if padding == "valid":
        extra = max(k_eff, stride) - k_eff if output_padding is None else output_padding
        return (input - 1) * stride + k_eff + extra
    if output_padding is None:
        return input * stride
    return (input - 1) * stride + k_eff % 2 + output_padding


def transpose_window(
    input: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    padding: PadMode = "same",
    output_padding: int | None = None,
) -> Transpose1d:
    """TF/Keras transposed conv for one dimension: output length and the crop from the full result.

    TF computes the transposed conv as the gradient of a forward conv whose input has the output length
    L, so the crop before is that forward conv's pad before. The combination must be consistent (the
    forward conv of L gives back the input length), as TF and Keras require.
    """
    _check_positive(input=input, kernel=kernel, stride=stride, dilation=dilation)
    _check_mode(padding)
    if output_padding is not None:
        if isinstance(output_padding, bool) or not isinstance(output_padding, int) or output_padding < 0:
            raise PtoolsError(f"output_padding must be a non-negative integer, got {output_padding!r}")
        if output_padding >= stride:
            raise PtoolsError(
                f"output_padding {output_padding} must be smaller than the stride {stride} (Keras rejects it)"
            )
    length = transpose_output_length(input, kernel, stride, dilation, padding, output_padding)
    forward = conv_window(length, kernel, stride, dilation, padding) if length >= 1 else None
    if forward is None or forward.output != input:
        raise PtoolsError(
            f"output_padding {output_padding} with kernel {kernel}, stride {stride}, dilation {dilation} and "
            f"{padding.upper()} padding gives an output of {length}, whose forward conv is not {input} long: "
            "TF rejects this combination",
            hint="pick another output_padding (or none)",
        )
    full = (input - 1) * stride + effective_kernel(kernel, dilation)
    return Transpose1d(input, kernel, stride, dilation, padding, output_padding, length, full, forward.pad_before)


def conv2d_window(
    input: IntOrPair, kernel: IntOrPair, stride: IntOrPair = 1, dilation: IntOrPair = 1, padding: PadMode = "same"
) -> Window2d:
    """`conv_window` for (H, W), each dimension on its own."""
    i, k, s, d = pair(input, "input"), pair(kernel, "kernel"), pair(stride, "stride"), pair(dilation, "dilation")
    return Window2d(*(conv_window(i[n], k[n], s[n], d[n], padding) for n in range(2)))


def pool2d_window(
    input: IntOrPair,
    kernel: IntOrPair,
    stride: IntOrPair | None = None,
    padding: PadMode = "same",
    dilation: IntOrPair = 1,
) -> Window2d:
    """`pool_window` for (H, W); the stride defaults to the kernel."""
    k = pair(kernel, "kernel")
    return conv2d_window(input, k, k if stride is None else stride, dilation, padding)


def transpose2d_window(
    input: IntOrPair,
    kernel: IntOrPair,
    stride: IntOrPair = 1,
    dilation: IntOrPair = 1,
    padding: PadMode = "same",
    output_padding: IntOrPair | None = None,
) -> Transpose2d:
    """`transpose_window` for (H, W)."""
    i, k, s, d = pair(input, "input"), pair(kernel, "kernel"), pair(stride, "stride"), pair(dilation, "dilation")
    op = (None, None) if output_padding is None else pair(output_padding, "output_padding")
    return Transpose2d(*(transpose_window(i[n], k[n], s[n], d[n], padding, op[n]) for n in range(2)))


# PyTorch's formulas, to show what a torch.nn layer does without importing torch.


def torch_conv_output(input: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """`nn.Conv2d` output length for a symmetric `padding=` (0 or less means no output)."""
    return (input + 2 * padding - effective_kernel(kernel, dilation)) // stride + 1


def torch_pool_output(
    input: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """`nn.MaxPool2d` / `nn.AvgPool2d` output length; with ceil_mode the last window must start inside the
    input or the left padding (torch's `pooling_output_shape`)."""
    span = input + 2 * padding - effective_kernel(kernel, dilation)
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= input + padding:
        out -= 1
    return out


def torch_transpose_output(
    input: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """`nn.ConvTranspose2d` output length."""
    return (input - 1) * stride - 2 * padding + effective_kernel(kernel, dilation) + output_padding


def torch_conv_padding(window: Window1d) -> int | None:
    """The symmetric `nn.Conv2d(padding=p)` that reproduces TF's windows exactly, or None (odd pad total)."""
    return window.pad_before if window.symmetric else None


def torch_pool_padding(window: Window1d) -> tuple[int, bool] | None:
    """(padding, ceil_mode) for `nn.MaxPool2d` / `nn.AvgPool2d(count_include_pad=False)` that reproduces
    TF's windows, or None.

    TF's extra pixel after can often be had with ceil_mode=True, which lets the last window run past the
    input; padded cells are then ignored exactly as TF ignores them. torch caps padding at half the kernel.
    """
    p = window.pad_before
    if 2 * p > window.kernel:
        return None
    for ceil_mode in (False, True):
        out = torch_pool_output(window.input, window.kernel, window.stride, p, window.dilation, ceil_mode)
        if out == window.output:
            return (p, ceil_mode)
    return None


def torch_transpose_padding(window: Transpose1d) -> tuple[int, int] | None:
    """(padding, output_padding) for `nn.ConvTranspose2d` that reproduces TF's result, or None.

    PyTorch crops `padding` from both ends of the full result and then appends `output_padding` cells, so
    it must crop TF's `crop_before`; output_padding must be below max(stride, dilation).
    """
    p = window.crop_before
    op = window.output - window.full + 2 * p
    if 0 <= op < max(window.stride, window.dilation):
        return (p, op)
    return None


# What `check-conv` reports for one op: TF's answer, the PyTorch layer that reproduces it, common mistakes.

OPS: tuple[str, ...] = ("conv", "transpose", "maxpool", "avgpool")
Pads = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Mistake:
    """What a common PyTorch recipe gives for this op, and whether it equals TF."""

    name: str
    output: tuple[int, int] | None  # None: PyTorch refuses it or has no output
    matches_tf: bool
    note: str
    key: str  # short label for tables


@dataclass(frozen=True)
class Check:
    """TF's output and pads for one op, and how (whether) plain torch.nn expresses it."""

    op: str
    mode: str
    input: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    output_padding: tuple[int, int] | None
    output: tuple[int, int]
    padding: Pads  # conv/pool: pads (before, after); transpose: crop of the full result (negative: zero-extended)
    symmetric: bool
    pytorch: str | None  # a torch.nn layer reproducing TF exactly, or None
    pytorch_note: str
    mistakes: tuple[Mistake, ...]


def _fmt(values: tuple[int, int]) -> str:
    return str(values[0]) if values[0] == values[1] else str(tuple(values))


def check_op(
    op: str,
    input: IntOrPair,
    kernel: IntOrPair,
    stride: IntOrPair | None = None,
    dilation: IntOrPair = 1,
    padding: PadMode = "same",
    output_padding: IntOrPair | None = None,
) -> Check:
    """Everything `check-conv` says about one op and input size. The stride defaults to 1 for convs and to
    the kernel for pools (as in torch.nn and Keras)."""
    if op not in OPS:
        raise PtoolsError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    k = pair(kernel, "kernel")
    s = (k if op in ("maxpool", "avgpool") else (1, 1)) if stride is None else pair(stride, "stride")
    d = pair(dilation, "dilation")
    if op == "avgpool" and d != (1, 1):
        raise PtoolsError("avgpool has no dilation in TF or PyTorch")
    if output_padding is not None and op != "transpose":
        raise PtoolsError("output_padding only applies to op=transpose")
    if op == "transpose":
        op_pad = None if output_padding is None else pair(output_padding, "output_padding")
        t = transpose2d_window(input, k, s, d, padding, op_pad)
        dims = (t.h, t.w)
        pads, symmetric, output = (
            t.crop,
            t.h.crop_before == t.h.crop_after and t.w.crop_before == t.w.crop_after,
            t.output,
        )
        pytorch, note = _transpose_pytorch(dims, k, s, d)
        mistakes = _transpose_mistakes(dims, k, s, d) if padding == "same" else ()
    else:
        w = conv2d_window(input, k, s, d, padding)
        dims, op_pad = (w.h, w.w), None
        pads, symmetric, output = w.padding, w.symmetric, w.output
        if op == "conv":
            pytorch, note = _conv_pytorch(w, k, s, d)
            mistakes = _conv_mistakes(w) if padding == "same" else ()
        else:
            pytorch, note = _pool_pytorch(op, w, k, s, d)
            mistakes = _pool_mistakes(op, w) if padding == "same" else ()
    return Check(
        op,
        padding,
        (dims[0].input, dims[1].input),
        k,
        s,
        d,
        op_pad,
        output,
        pads,
        symmetric,
        pytorch,
        note,
        tuple(mistakes),
    )


def _conv_pytorch(w: Window2d, k, s, d) -> tuple[str | None, str]:
    dil = f", dilation={_fmt(d)}" if d != (1, 1) else ""
    if w.symmetric:
        p = (w.h.pad_before, w.w.pad_before)
        return f"nn.Conv2d(C_in, C_out, {_fmt(k)}, stride={_fmt(s)}, padding={_fmt(p)}{dil})", "exact"
    left, right, top, bottom = w.torch_pad
    return None, (
        "TF pads asymmetrically; symmetric padding= cannot express it: use ptools.nn.Conv2dSame, or "
        f"nn.ZeroPad2d(({left}, {right}, {top}, {bottom})) then nn.Conv2d(padding=0)"
    )


def _conv_mistakes(w: Window2d) -> list[Mistake]:
    dims = (w.h, w.w)
    mistakes = []
    p = tuple(x.dilation * (x.kernel // 2) for x in dims)
    outs = tuple(torch_conv_output(x.input, x.kernel, x.stride, pp, x.dilation) for x, pp in zip(dims, p, strict=True))
    aligned = all(pp == x.pad_before for x, pp in zip(dims, p, strict=True))
    mistakes.append(_mistake(f"nn.Conv2d(padding={_fmt(p)}) (k//2)", "k//2", outs, w.output, aligned))
    if any(x.stride > 1 for x in dims):
        mistakes.append(
            Mistake(
                "nn.Conv2d(padding='same')", None, False, "PyTorch refuses padding='same' with stride > 1", "'same'"
            )
        )
    else:  # torch's 'same' puts the odd pixel after, as TF does
        mistakes.append(Mistake("nn.Conv2d(padding='same')", w.output, True, "matches TF (stride 1)", "'same'"))
    # The widely copied Conv2dSamePadding snippet computes the output as floor(in / s) instead of ceil.
    outs, befores = [], []
    for x in dims:
        total = max((x.input // x.stride - 1) * x.stride + x.effective_kernel - x.input, 0)
        befores.append(total // 2)
        outs.append((x.input + total - x.effective_kernel) // x.stride + 1)
    aligned = all(b == x.pad_before for x, b in zip(dims, befores, strict=True))
    mistakes.append(_mistake("floor(in/s) same-padding snippet", "floor(in/s)", (outs[0], outs[1]), w.output, aligned))
    return mistakes


def _mistake(
    name: str, key: str, outs: tuple[int, int], tf_out: tuple[int, int], aligned: bool, extra: str = ""
) -> Mistake:
    if min(outs) < 1:
        return Mistake(name, None, False, "no output", key)
    if outs != tf_out:
        return Mistake(name, outs, False, "wrong size" + extra, key)
    if not aligned:
        return Mistake(name, outs, False, "right size, windows shifted by one (TF puts the odd cell after)", key)
    if extra:
        return Mistake(name, outs, False, "right size" + extra, key)
    return Mistake(name, outs, True, "matches TF", key)


def _pool_pytorch(op: str, w: Window2d, k, s, d) -> tuple[str | None, str]:
    layer = "nn.MaxPool2d" if op == "maxpool" else "nn.AvgPool2d"
    for ceil_mode in (False, True):
        dims = (w.h, w.w)
        if all(
            2 * x.pad_before <= x.kernel
            and torch_pool_output(x.input, x.kernel, x.stride, x.pad_before, x.dilation, ceil_mode) == x.output
            for x in dims
        ):
            p = (w.h.pad_before, w.w.pad_before)
            args = f"{_fmt(k)}, stride={_fmt(s)}, padding={_fmt(p)}"
            if d != (1, 1):
                args += f", dilation={_fmt(d)}"
            if ceil_mode:
                args += ", ceil_mode=True"
            if op == "avgpool" and (any(p) or ceil_mode):
                args += ", count_include_pad=False"
            return f"{layer}({args})", "exact"
    cls = "MaxPool2dSame" if op == "maxpool" else "AvgPool2dSame"
    return None, f"no padding/ceil_mode combination gives TF's windows: use ptools.nn.{cls}"


def _pool_mistakes(op: str, w: Window2d) -> list[Mistake]:
    dims = (w.h, w.w)
    layer = "nn.MaxPool2d" if op == "maxpool" else "nn.AvgPool2d"
    mistakes = []
    for p in (tuple(x.kernel // 2 for x in dims), (0, 0)):
        outs = tuple(
            torch_pool_output(x.input, x.kernel, x.stride, pp, x.dilation) for x, pp in zip(dims, p, strict=True)
        )
        aligned = all(pp == x.pad_before for x, pp in zip(dims, p, strict=True))
        # count_include_pad defaults to True: border windows divide by the full window size.
        extra = ", but border averages count padded zeros" if op == "avgpool" and any(p) else ""
        label = f"{layer}(padding={_fmt(p)})" + (" (k//2)" if any(p) else "")
        mistakes.append(_mistake(label, "k//2" if any(p) else "padding=0", outs, w.output, aligned, extra))
    return mistakes


def _transpose_pytorch(dims: tuple[Transpose1d, Transpose1d], k, s, d) -> tuple[str | None, str]:
    answers = [torch_transpose_padding(x) for x in dims]
    if all(a is not None for a in answers):
        p = (answers[0][0], answers[1][0])
        op = (answers[0][1], answers[1][1])
        dil = f", dilation={_fmt(d)}" if d != (1, 1) else ""
        return (
            f"nn.ConvTranspose2d(C_in, C_out, {_fmt(k)}, stride={_fmt(s)}, padding={_fmt(p)}, "
            f"output_padding={_fmt(op)}{dil})",
            "exact",
        )
    return None, (
        "TF crops the odd extra cell after; padding=/output_padding= cannot express it: use "
        "ptools.nn.ConvTranspose2dSame (padding=0, then crop)"
    )


def _transpose_mistakes(dims: tuple[Transpose1d, Transpose1d], k, s, d) -> list[Mistake]:
    # The usual PyTorch recipe for a "same" upsampling: padding=(k-1)//2, output_padding=s-1.
    p = tuple(x.dilation * (x.kernel - 1) // 2 for x in dims)
    op = tuple(x.stride - 1 for x in dims)
    outs = tuple(
        torch_transpose_output(x.input, x.kernel, x.stride, pp, oo, x.dilation)
        for x, pp, oo in zip(dims, p, op, strict=True)
    )
    aligned = all(pp == x.crop_before for x, pp in zip(dims, p, strict=True))
    name = f"nn.ConvTranspose2d(padding={_fmt(p)}, output_padding={_fmt(op)})"
    return [_mistake(name, "(k-1)//2, s-1", outs, (dims[0].output, dims[1].output), aligned)]


COMMON_KERNELS = (1, 2, 3, 4, 5, 7)


def stride_table(
    stride: int,
    inputs: Sequence[int],
    kernels: Sequence[int] = COMMON_KERNELS,
    op: str = "conv",
    dilation: int = 1,
    padding: PadMode = "same",
) -> list[dict[str, Any]]:
    """For one stride: per input size, TF's output and its pads (before, after) for each kernel, and the
    common PyTorch recipes (`Mistake.key`) that differ from TF there. Square inputs and kernels."""
    rows = []
    for n in inputs:
        row: dict[str, Any] = {"input": n, "output": None, "pads": {}, "drift": {}, "errors": {}}
        for k in kernels:
            try:
                c = check_op(op, n, k, stride, dilation, padding)
            except PtoolsError as e:  # VALID with a kernel wider than the input, say
                row["errors"][k] = e.message
                continue
            row["output"] = c.output[0]
            row["pads"][k] = c.padding[0]
            row["drift"][k] = [m.key for m in c.mistakes if not m.matches_tf]
        rows.append(row)
    return rows
