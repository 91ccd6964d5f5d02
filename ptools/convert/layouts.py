"""Layout rules TF/Keras -> PyTorch per layer kind (numpy only), with the settings PyTorch must change.

Every rule here was checked numerically against Keras outputs (see tests/convert and TF_FORMATS.md §5).
A rule returns `Item`s whose data is computed lazily, so the writer holds one tensor in memory at a time.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptools.convert.source import LayerMeta, SourceTensor

# -- pure array transforms ------------------------------------------------------------------------


GATHER_ROWS = 64  # output rows per gather: the (S, I, 64) slab they come from stays in L2 cache
BLOCK_BYTES = 8 << 20  # output block size that is split across threads and then written
SMALL = 1 << 20  # below this many bytes a tensor is transposed in one numpy call, on the calling thread
_local = threading.local()
_executor: ThreadPoolExecutor | None = None


def transpose_threads() -> int:
    """Worker threads for big transposes (numpy copies release the GIL): the CPUs this process may use, <= 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(transpose_threads(), thread_name_prefix="ptools-transpose")
    return _executor


def _gather_rows(src: np.ndarray, out: np.ndarray, o0: int, o1: int, first: int) -> None:
    """out[o - first] = src[:, :, o].T for o in [o0, o1): (S, I, O) -> rows of (O, I, S).

    A transposed copy straight from the source reads one element per cache line. Copying GATHER_ROWS
    columns into a small contiguous slab first (I runs of 64 contiguous values) and transposing the
    slab inside the cache is 2-3x faster for Dense kernels (the same speed as torch's blocked transpose)
    and needs no torch import, which costs more CPU than a 1 GiB conversion's transposes.
    """
    s, n_in, _ = src.shape
    need = s * n_in * GATHER_ROWS
    tmp = getattr(_local, "slab", None)
    if tmp is None or tmp.dtype != src.dtype or tmp.size < need:
        tmp = _local.slab = np.empty(need, dtype=src.dtype)
    for o in range(o0, o1, GATHER_ROWS):
        r = min(GATHER_ROWS, o1 - o)
        slab = tmp[: s * n_in * r].reshape(s, n_in, r)
        np.copyto(slab, src[:, :, o : o + r])
        np.copyto(out[o - first : o - first + r], slab.transpose(2, 1, 0))


MADV_POPULATE_READ = 22  # Linux >= 5.14; Python's mmap module does not name it yet


def prefault(a: np.ndarray) -> None:
    """Map a memory-mapped array's pages in one madvise call before it is read out of order.

    A transpose reads the whole source for every block of output rows; through plain page faults that is
    one kernel entry per 4 KiB page, from several threads contending for the same mm lock. Best effort: a
    no-op for arrays that are not file maps and on kernels or platforms without MADV_POPULATE_READ.
    """
    root = a
    while root is not None and not isinstance(getattr(root, "_mmap", None), mmap.mmap):
        root = root.base if isinstance(root.base, np.ndarray) else None
    if root is None or a.nbytes < SMALL:
        return
    mm = root._mmap
    start = a.ctypes.data - root.ctypes.data + int(getattr(root, "offset", 0) or 0) % mmap.ALLOCATIONGRANULARITY
    page = mmap.PAGESIZE
    begin = max(0, start // page * page)
    try:
        mm.madvise(MADV_POPULATE_READ, begin, min(len(mm), start + a.nbytes) - begin)
    except (OSError, ValueError, AttributeError):
        pass


def _fill_rows(src: np.ndarray, out: np.ndarray, o0: int, o1: int) -> None:
    """Rows [o0, o1) of the transposed result into `out` (whose row 0 is row o0), split across threads."""
    rows = o1 - o0
    workers = transpose_threads()
    if workers == 1 or rows <= GATHER_ROWS or out.nbytes < SMALL:
        _gather_rows(src, out, o0, o1, o0)
        return
    step = -(-rows // workers)
    step = -(-step // GATHER_ROWS) * GATHER_ROWS
    jobs = [_pool().submit(_gather_rows, src, out, a, min(a + step, o1), o0) for a in range(o0, o1, step)]
    for job in jobs:
        job.result()


def swap_last_two_to_front(k: np.ndarray) -> np.ndarray:
    """(*S, I, O) -> (O, I, *S) contiguous: the hot loop of big conversions (see _gather_rows)."""
    *spatial, n_in, n_out = k.shape
    s = int(np.prod(spatial, dtype=np.int64)) if spatial else 1
    src = k.reshape(s, n_in, n_out)
    out = np.empty((n_out, n_in, s), dtype=k.dtype)
    if src.nbytes <= SMALL:
        np.copyto(out, src.transpose(2, 1, 0))
    else:
        prefault(k)
        _fill_rows(src, out, 0, n_out)
    return out.reshape(n_out, n_in, *spatial)


class BlockPool:
    """A ring of reusable output buffers for `swap_chunks`.

    Fresh memory is expensive: the kernel zeroes every new page, which costs more CPU than the transpose
    itself. A writer that keeps at most `size - 2` blocks in flight can cycle through the same buffers.
    """

    def __init__(self, size: int) -> None:
        self._bufs: list[np.ndarray] = [np.empty(0, np.uint8) for _ in range(size)]
        self._next = 0

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        i = self._next
        self._next = (i + 1) % len(self._bufs)
        if self._bufs[i].size < nbytes:
            self._bufs[i] = np.empty(nbytes, np.uint8)
        return self._bufs[i][:nbytes].view(dtype).reshape(shape)


def swap_chunks(k: np.ndarray, pool: BlockPool | None = None) -> Iterator[np.ndarray]:
    """The same result as `swap_last_two_to_front`, as consecutive row blocks of the output (C order, about
    BLOCK_BYTES each, filled by several threads), so a writer can stream a big kernel without holding its
    transposed copy. With a `pool`, a yielded block is only valid until the pool comes round to its buffer."""
    *spatial, n_in, n_out = k.shape
    s = int(np.prod(spatial, dtype=np.int64)) if spatial else 1
    src = k.reshape(s, n_in, n_out)
    row_bytes = max(1, n_in * s * k.dtype.itemsize)
    rows = max(GATHER_ROWS, BLOCK_BYTES // row_bytes // GATHER_ROWS * GATHER_ROWS)
    prefault(k)
    for o in range(0, n_out, rows):
        shape = (min(rows, n_out - o), n_in, s)
        block = pool.take(shape, k.dtype) if pool is not None else np.empty(shape, dtype=k.dtype)
        if block.nbytes <= SMALL:
            np.copyto(block, src[:, :, o : o + rows].transpose(2, 1, 0))
        else:
            _fill_rows(src, block, o, o + shape[0])
        yield block


def conv_kernel(k: np.ndarray) -> np.ndarray:
    """Conv1D/2D/3D (..., in, out) -> (out, in, ...); Conv*Transpose (..., out, in) -> (in, out, ...): same axes."""
    return swap_last_two_to_front(k)


def depthwise_kernel(k: np.ndarray) -> np.ndarray:
    """(kh, kw, C, M) -> (C*M, 1, kh, kw); output channel c*M + m, as Conv2d(C, C*M, groups=C) expects."""
    *spatial, c, m = k.shape
    return conv_kernel(k.reshape(*spatial, 1, c * m))


def dense_kernel(k: np.ndarray) -> np.ndarray:
    """(in, out) -> (out, in) for nn.Linear and RNN weights."""
    return swap_last_two_to_front(k) if k.ndim == 2 else np.ascontiguousarray(k.T)


def dense_after_flatten(k: np.ndarray, pre_shape: tuple[int, ...]) -> np.ndarray:
    """Rows in NHWC flatten order (H, W, C) -> NCHW order (C, H, W), then transpose for nn.Linear."""
    out = k.shape[1]
    spatial, c = tuple(pre_shape[:-1]), pre_shape[-1]
    r = k.reshape(*spatial, c, out)
    r = r.transpose(len(spatial), *range(len(spatial)), len(spatial) + 1)
    return np.ascontiguousarray(r.reshape(-1, out).T)


def nchw_feature_order(segments: list[tuple[tuple[int, ...] | None, int]]) -> np.ndarray:
    """For each feature u of a vector torch assembles from NCHW flattens (and plain parts), in order, the index
    of the same feature in TF's vector, whose map parts are flattened (H, W, C)."""
    perm: list[np.ndarray] = []
    start = 0
    for shape, n in segments:
        u = np.arange(n, dtype=np.int64)
        if shape is not None and len(shape) >= 2:
            c = int(shape[-1])
            hw = n // c
            perm.append(start + (u % hw) * c + u // hw)  # torch's c*HW + s is TF's s*C + c
        else:
            perm.append(start + u)
        start += n
    return np.concatenate(perm) if perm else np.zeros(0, np.int64)


def dense_rows(k: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A Dense kernel (n_in, out) for an nn.Linear whose j-th input must get Keras row `rows[j]`
    (ptools.convert.trace.keras_rows works them out from the traced target)."""
    return np.ascontiguousarray(k[np.asarray(rows, dtype=np.int64)].T)


def swap_gates_zr(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Keras GRU gates z, r, h -> PyTorch r, z, n along `axis`."""
    z, r, h = np.split(w, 3, axis=axis)
    return np.ascontiguousarray(np.concatenate([r, z, h], axis=axis))


def tf1_lstm_reorder(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """TF1 LSTMCell gates i, j, f, o -> PyTorch i, f, g(=j), o."""
    i, j, f, o = np.split(w, 4, axis=axis)
    return np.ascontiguousarray(np.concatenate([i, f, j, o], axis=axis))


PERMUTE_NAMES = {1: "permute(2,1,0)", 2: "permute(3,2,0,1)", 3: "permute(4,3,0,1,2)"}

# -- items and notes --------------------------------------------------------------------------------


@dataclass
class Choice:
    """One possible layout of a tensor whose layout the file does not determine."""

    name: str  # "conv" | "depthwise" | "transpose" | ...
    transform: str
    shape_after: tuple[int, ...]
    make: Callable[[], np.ndarray]
    chunks: Callable[[BlockPool | None], Iterator[np.ndarray]] | None = None


@dataclass
class Undetermined:
    """Why a tensor's layout is not determined by the file, and what settles it. Never written as is."""

    kind: str  # "flatten" (is the Dense fed by a Flatten of a map?) | "depthwise" (Keras 3 `kernel`)
    why: str
    settle: str
    choices: list[Choice] = field(default_factory=list)  # "depthwise": chosen by the target's shape
    channels: int | None = None  # "flatten": channels of the conv map that may feed it
    rule: str = ""  # the --map rule that settles it, as JSON


@dataclass
class Item:
    """One PyTorch tensor to write: where it comes from and how."""

    target: str  # proposed PyTorch key, before matching
    sources: tuple[str, ...]  # canonical source keys ( () for synthetic tensors )
    transform: str
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...]
    dtype: str
    make: Callable[[], np.ndarray]
    layer: str
    role: str  # last name part of the target: weight, bias, running_mean, weight_ih_l0, ...
    synthetic: bool = False  # no source tensor (LSTM bias_hh zeros, num_batches_tracked)
    raw: Callable[[], np.ndarray] | None = None  # the untransformed source, for a --map transform override
    # The same data as make(), in C-order pieces, optionally written into a BlockPool's buffers.
    chunks: Callable[[BlockPool | None], Iterator[np.ndarray]] | None = None
    undetermined: Undetermined | None = None  # set: the layout depends on something the file does not say
    decided_by: str | None = None  # what settled a layout question: "config", "target shape", "--model trace"
    flatten_source: str | None = None  # "config" | "rule": a Dense permuted for a Flatten, and who said so
    flatten_shape: tuple[int, ...] | None = None  # the Keras (..., C) shape that Flatten flattened, when known
    flatten_segments: list[Any] | None = None  # several parts ([(shape | None, n)]): a Concatenate, or per-feature

    def choose(self, choice: Choice, decided_by: str) -> None:
        """Settle an undetermined layout with one of its choices."""
        self.transform = choice.transform
        self.shape_after = choice.shape_after
        self.make = choice.make
        self.chunks = choice.chunks
        self.undetermined = None
        self.decided_by = decided_by

    def choice_for(self, shape: tuple[int, ...]) -> Choice | None:
        if self.undetermined is None:
            return None
        hits = [c for c in self.undetermined.choices if tuple(c.shape_after) == tuple(shape)]
        return hits[0] if len(hits) == 1 else None


@dataclass
class Note:
    """A setting the PyTorch side must change to reproduce the TF layer."""

    layer: str
    setting: str
    value: Any
    message: str


def _item(
    prefix: str,
    role: str,
    src: SourceTensor | None,
    fn: Callable[[np.ndarray], np.ndarray],
    transform: str,
    shape_after: tuple[int, ...],
    layer: str,
    dtype: str | None = None,
    srcs: tuple[SourceTensor, ...] = (),
) -> Item:
    all_src = srcs or ((src,) if src is not None else ())
    if src is not None:
        make = lambda: fn(src.load())  # noqa: E731
    else:
        make = lambda: fn(np.empty(0))  # noqa: E731
    return Item(
        target=f"{prefix}.{role}" if prefix else role,
        sources=tuple(s.key for s in all_src),
        transform=transform,
        shape_before=tuple(src.shape) if src is not None else (),
        shape_after=tuple(shape_after),
        dtype=dtype or (src.dtype if src is not None else "float32"),
        make=make,
        layer=layer,
        role=role,
        synthetic=src is None,
        raw=src.load if src is not None else None,
    )


def _copy(a: np.ndarray) -> np.ndarray:
    return a


def copy_item(prefix: str, role: str, t: SourceTensor) -> Item:
    """A tensor written as stored (optimizer slots and counters with --include-optimizer)."""
    return _item(prefix, role, t, _copy, "copy", t.shape, t.layer)


def _permuted_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    n = len(shape)
    return (shape[n - 1], shape[n - 2], *shape[: n - 2])


def _kernel_item(prefix: str, t: SourceTensor, layer: str) -> Item:
    if len(t.shape) == 2:
        it = _item(prefix, "weight", t, dense_kernel, "transpose", (t.shape[1], t.shape[0]), layer)
    elif len(t.shape) in (3, 4, 5):
        it = _item(prefix, "weight", t, conv_kernel, PERMUTE_NAMES[len(t.shape) - 2], _permuted_shape(t.shape), layer)
    else:
        return _item(prefix, "weight", t, _copy, "copy", t.shape, layer)
    it.chunks = lambda pool=None: swap_chunks(t.load(), pool)
    return it


# -- per-layer kinds -----------------------------------------------------------------------------------

CONV_CLASSES = {"Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
NORM_VARS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
NAME_HEURISTICS = {
    "kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "embeddings": "weight",
    "depthwise_kernel": "weight",
    "alpha": "weight",
}


def infer_class(layer: str, vars_: dict[str, SourceTensor]) -> str | None:
    """The Keras class a group of TF variables most likely came from (no config in TF bundles)."""
    names = set(vars_)
    k = vars_.get("kernel")
    if {"depthwise_kernel", "pointwise_kernel"} <= names:
        return "SeparableConv2D" if len(vars_["depthwise_kernel"].shape) == 4 else "SeparableConv1D"
    if "depthwise_kernel" in names:
        return "DepthwiseConv2D" if len(vars_["depthwise_kernel"].shape) == 4 else "DepthwiseConv1D"
    if "moving_mean" in names or "moving_variance" in names:
        return "BatchNormalization"
    if names and names <= {"gamma", "beta"}:
        return "LayerNormalization"
    if {"mean", "variance"} <= names <= {"mean", "variance", "count"}:
        return "Normalization"
    if "embeddings" in names:
        return "Embedding"
    if "alpha" in names:
        return "PReLU"
    if "recurrent_kernel" in names:
        rk = vars_["recurrent_kernel"].shape
        if len(rk) == 2 and rk[1] == 4 * rk[0]:
            return "LSTM"
        if len(rk) == 2 and rk[1] == 3 * rk[0]:
            return "GRU"
        return "SimpleRNN"
    if k is not None and re.search(r"gru_cell/(gates|candidate)$", layer):
        return "TF1GRUCellPart"
    if k is not None:
        last = layer.rsplit("/", 1)[-1]
        if len(k.shape) == 2 and last in ("lstm_cell", "basic_lstm_cell") and k.shape[1] % 4 == 0:
            return "TF1LSTMCell"
        transposed = "transpose" in last or "deconv" in last
        return (
            {2: "Dense", 3: "Conv1D", 4: "Conv2D", 5: "Conv3D"}.get(len(k.shape), None)
            if not transposed
            else ({3: "Conv1DTranspose", 4: "Conv2DTranspose", 5: "Conv3DTranspose"}.get(len(k.shape)))
        )
    return None


@dataclass
class LayerOptions:
    flatten_shape: tuple[int, ...] | None = None  # pre-Flatten (H, W, C) for the first Dense after a Flatten
    # a vector input made of Flatten outputs and other parts ([(pre-Flatten shape | None, length)]), when the
    # layer is a Dense fed by a Concatenate, or a per-feature layer (BatchNorm, LayerNorm, PReLU) on the way
    flatten_segments: list[tuple[tuple[int, ...] | None, int]] | None = None
    forget_bias: float = 1.0  # TF1 LSTMCell forget_bias (a runtime constant, not stored)
    keras3: bool = False  # written by Keras 3, where Conv and DepthwiseConv2D kernels are both `kernel`


_KERAS_AUTO_DEPTHWISE = re.compile(r"^depthwise_conv[123]d(_\d+)?$")
_KERAS_AUTO_CONV = re.compile(r"^conv[123]d(_transpose)?(_\d+)?$")


def keras3_kernel_kind(layer: str, t: SourceTensor) -> str | None:
    """What a class-less Keras 3 `kernel` of rank >= 3 is: "conv", "depthwise", or None when the file cannot say.

    Keras 3 names a DepthwiseConv2D kernel `kernel` (shape (kh, kw, C, M)), like a Conv kernel (kh, kw, in,
    out). What still tells them apart: Keras' default layer names (`depthwise_conv2d_3` is its class name),
    the object attribute in TF2 checkpoints (Keras 3 Conv layers track theirs as `_kernel`, DepthwiseConv2D
    as `kernel`), and C == 1, where both layouts are the same bytes.
    """
    last = layer.rsplit("/", 1)[-1]
    if _KERAS_AUTO_DEPTHWISE.match(last):
        return "depthwise"
    if _KERAS_AUTO_CONV.match(last) or t.attr == "_kernel" or t.shape[-2] == 1:
        return "conv"
    return None


def _depthwise_choice(t: SourceTensor) -> Choice:
    *sp, c, m = t.shape
    return Choice(
        "depthwise",
        "depthwise(reshape C*M, permute)",
        (c * m, 1, *sp),
        lambda: depthwise_kernel(t.load()),
        lambda pool=None: swap_chunks(t.load().reshape(*sp, 1, c * m), pool),
    )


def convert_layer(
    meta: LayerMeta, vars_: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    """Items (PyTorch tensors) and notes for one layer. `vars_` maps var path inside the layer -> tensor."""
    cls = meta.class_name
    if cls == "Bidirectional" or (cls is None and is_bidirectional(vars_)):
        if cls is None:
            meta.class_name, meta.class_inferred = "Bidirectional", True
        return _bidirectional(meta, vars_, prefix, opts)
    if cls == "TimeDistributed":
        return _time_distributed(meta, vars_, prefix, opts)
    if cls is None or cls not in KNOWN_CLASSES:
        inferred = infer_class(meta.name, {v.rsplit("/", 1)[-1]: t for v, t in vars_.items()})
        if inferred and cls is None:
            cls = inferred
            meta.class_name, meta.class_inferred = inferred, True
    leaf = {v.rsplit("/", 1)[-1]: t for v, t in vars_.items()}
    sub = [v for v in vars_ if "/" in v and not _CELL_SCOPE.match(v)]
    if len(leaf) < len(vars_) or (sub and (cls is None or meta.class_inferred)):
        # Variables in sub-layer scopes (`query/kernel`, `key/kernel`) of a layer no rule knows: not guessed.
        why = "its variables sit in sub-layers (" + ", ".join(sorted({v.rsplit("/", 1)[0] for v in sub})[:4]) + ")"
        return [_unmapped(meta, t, prefix, why) for t in vars_.values()], []
    if cls is not None and cls not in KNOWN_CLASSES:
        return _unknown_class(meta, leaf, prefix, opts)
    return _RULES.get(cls or "", _generic)(meta, leaf, prefix, opts)


_DIRECTION = re.compile(r"^(forward|backward)_[^/]+/")
_CELL_SCOPE = re.compile(r"^(lstm_cell|gru_cell|simple_rnn_cell|cell|basic_lstm_cell)(_\d+)?/[^/]+$")


def is_bidirectional(vars_: dict[str, SourceTensor]) -> bool:
    """Variables of one layer under `forward_<rnn>/...` and `backward_<rnn>/...` scopes (Keras Bidirectional)."""
    heads = {m.group(1) for v in vars_ if (m := _DIRECTION.match(v))}
    return heads == {"forward", "backward"} and all(_DIRECTION.match(v) for v in vars_)


def _inner_meta(meta: LayerMeta, key: str, fallback: str | None) -> LayerMeta:
    inner = meta.config.get(key)
    if isinstance(inner, dict) and isinstance(inner.get("class_name"), str):
        cfg = inner.get("config")
        return LayerMeta(meta.name, inner["class_name"], dict(cfg) if isinstance(cfg, dict) else {})
    return LayerMeta(meta.name, fallback, {}, class_inferred=fallback is not None)


def _bidirectional(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    """Keras Bidirectional(RNN) -> one nn.LSTM/GRU/RNN(bidirectional=True): the backward layer's weights get
    torch's `_reverse` suffix, so forward and backward never land on the same names."""
    items: list[Item] = []
    notes: list[Note] = []
    halves: dict[str, dict[str, SourceTensor]] = {"forward": {}, "backward": {}}
    for path, t in v.items():
        m = _DIRECTION.match(path)
        if m is None:
            items.append(_unmapped(meta, t, prefix, "a Bidirectional variable outside its forward/backward layer"))
            continue
        halves[m.group(1)][path.rsplit("/", 1)[-1]] = t
    for direction, leaf in halves.items():
        if not leaf:
            continue
        inferred = infer_class(meta.name, leaf)
        key = "backward_layer" if direction == "backward" and meta.config.get("backward_layer") else "layer"
        inner = _inner_meta(meta, key, inferred)
        rule = _RULES.get(inner.class_name or "")
        if inner.class_name not in ("LSTM", "GRU", "SimpleRNN") or rule is None:
            why = f"Bidirectional({inner.class_name}) has no rule"
            items += [_unmapped(meta, t, prefix, why) for t in leaf.values()]
            continue
        its, ns = rule(inner, leaf, prefix, opts)
        if len(leaf) != len({s for it in its for s in it.sources}):
            its = [_unmapped(meta, t, prefix, "unexpected variables in a Bidirectional RNN") for t in leaf.values()]
        if direction == "backward":
            for it in its:
                if it.undetermined is None:
                    it.role += "_reverse"
                    it.target += "_reverse"
        items += its
        if direction == "forward":
            notes += ns
    notes.append(
        Note(meta.name, "structure", "Bidirectional", "one torch RNN, bidirectional=True: backward weights *_reverse")
    )
    return items, notes


def _time_distributed(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    """TimeDistributed(X): X's own rule, under the wrapper's name (the torch module applies to each step)."""
    leaf = {p.rsplit("/", 1)[-1]: t for p, t in v.items()}
    inner = _inner_meta(meta, "layer", infer_class(meta.name, leaf))
    if inner.class_name not in KNOWN_CLASSES or len(leaf) < len(v):
        return [_unmapped(meta, t, prefix, f"TimeDistributed({inner.class_name}) has no rule") for t in v.values()], []
    return convert_layer(inner, leaf, prefix, opts)


def _settings_notes(meta: LayerMeta, torch_cls: str) -> list[Note]:
    notes: list[Note] = []
    cfg = meta.config
    padding = cfg.get("padding")
    strides = tuple(cfg.get("strides") or (1,))
    kernel = tuple(cfg.get("kernel_size") or ())
    dilation = tuple(cfg.get("dilation_rate") or (1,))
    if padding == "same" and "Transpose" in (meta.class_name or ""):
        notes.append(
            Note(
                meta.name,
                "padding",
                "same",
                "TF SAME transposed conv: use ptools.nn.ConvTranspose2dSame (full transposed conv, then TF's "
                "crop: the extra row/column goes bottom/right, which padding/output_padding cannot express)",
            )
        )
    elif padding == "same":
        dil = dilation if len(dilation) == len(kernel) else (dilation[0],) * len(kernel)
        sym = all(s == 1 for s in strides) and all(((k - 1) * d) % 2 == 0 for k, d in zip(kernel, dil, strict=True))
        if sym:
            notes.append(
                Note(meta.name, "padding", "same", f"TF SAME with stride 1: {torch_cls}(padding='same') is exact")
            )
        else:
            notes.append(
                Note(
                    meta.name,
                    "padding",
                    "same",
                    "TF SAME padding is asymmetric here (extra pad bottom/right):"
                    " use ptools.nn.Conv2dSame (not padding=k//2)",
                )
            )
    if cfg.get("use_bias") is False:
        notes.append(Note(meta.name, "bias", False, f"{torch_cls}(bias=False): the TF layer has no bias"))
    if cfg.get("data_format") == "channels_first":
        notes.append(
            Note(meta.name, "data_format", "channels_first", "channels_first model: activations are NCHW already")
        )
    if cfg.get("groups", 1) not in (1, None):
        notes.append(Note(meta.name, "groups", cfg["groups"], f"{torch_cls}(groups={cfg['groups']})"))
    if any(d != 1 for d in dilation):
        notes.append(Note(meta.name, "dilation", list(dilation), f"{torch_cls}(dilation={tuple(dilation)})"))
    return notes


def _conv(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items = []
    k = v.get("kernel")
    if k is not None and meta.class_inferred and opts.keras3 and len(k.shape) >= 3:
        kind = keras3_kernel_kind(meta.name, k)
        if kind == "depthwise":
            meta.class_name = f"DepthwiseConv{len(k.shape) - 2}D"
            return _depthwise(meta, v, prefix, opts)
    if k is not None:
        it = _kernel_item(prefix, k, meta.name)
        if meta.class_inferred and opts.keras3 and len(k.shape) >= 3 and keras3_kernel_kind(meta.name, k) is None:
            dw = _depthwise_choice(k)
            conv = Choice("conv", it.transform, it.shape_after, it.make, it.chunks)
            it.undetermined = Undetermined(
                "depthwise",
                f"Keras 3 names both a Conv kernel (kh, kw, in, out) and a DepthwiseConv2D kernel (kh, kw, C, M) "
                f"`kernel`, and this file has no layer class for `{meta.name}`",
                f"--model or --template (a target of shape {_shape_text(conv.shape_after)} means Conv, "
                f"{_shape_text(dw.shape_after)} depthwise), or a --map rule "
                f'{{"pattern": "{k.key}", "transform": "depthwise"}} (or "conv")',
                choices=[conv, dw],
            )
        items.append(it)
    if "bias" in v:
        items.append(_item(prefix, "bias", v["bias"], _copy, "copy", v["bias"].shape, meta.name))
    k = v.get("kernel")
    nd = len(k.shape) - 2 if k is not None else 2
    torch_cls = ("ConvTranspose" if "Transpose" in (meta.class_name or "") else "Conv") + f"{nd}d"
    notes = _settings_notes(meta, torch_cls)
    if "bias" not in v and meta.config.get("use_bias") is None:
        notes.append(Note(meta.name, "bias", False, f"{torch_cls}(bias=False): no bias stored for this layer"))
    return items + _leftovers(meta, v, prefix, {"kernel", "bias"}), notes


def _depthwise(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items: list[Item] = []
    notes: list[Note] = []
    dk = v.get("depthwise_kernel", v.get("kernel"))  # Keras 3 names it `kernel`
    if dk is not None:
        *sp, c, m = dk.shape
        items.append(
            _item(prefix, "weight", dk, depthwise_kernel, "depthwise(reshape C*M, permute)", (c * m, 1, *sp), meta.name)
        )
        notes.append(
            Note(
                meta.name,
                "groups",
                c,
                f"Conv{len(sp)}d({c}, {c * m}, groups={c}): depth_multiplier {m}, output channel c*M+m",
            )
        )
    if "bias" in v:
        items.append(_item(prefix, "bias", v["bias"], _copy, "copy", v["bias"].shape, meta.name))
    notes += _settings_notes(meta, f"Conv{len(dk.shape) - 2 if dk is not None else 2}d")
    return items + _leftovers(meta, v, prefix, {"depthwise_kernel", "kernel", "bias"}), notes


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _separable(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items: list[Item] = []
    dk, pk = v.get("depthwise_kernel"), v.get("pointwise_kernel")
    dprefix = f"{prefix}.depthwise" if prefix else "depthwise"
    pprefix = f"{prefix}.pointwise" if prefix else "pointwise"
    notes: list[Note] = []
    if dk is not None:
        *sp, c, m = dk.shape
        items.append(
            _item(
                dprefix, "weight", dk, depthwise_kernel, "depthwise(reshape C*M, permute)", (c * m, 1, *sp), meta.name
            )
        )
        notes.append(
            Note(
                meta.name,
                "structure",
                "separable",
                f"two modules: depthwise Conv{len(sp)}d({c}, {c * m}, "
                f"groups={c}, bias=False) then pointwise 1x1 Conv{len(sp)}d",
            )
        )
    if pk is not None:
        items.append(_kernel_item(pprefix, pk, meta.name))
    if "bias" in v:
        items.append(_item(pprefix, "bias", v["bias"], _copy, "copy", v["bias"].shape, meta.name))
    notes += _settings_notes(meta, "Conv2d")
    return items + _leftovers(meta, v, prefix, {"depthwise_kernel", "pointwise_kernel", "bias"}), notes


def _dense(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items: list[Item] = []
    notes: list[Note] = []
    k = v.get("kernel")
    if k is not None:
        pre = opts.flatten_shape
        if pre is not None and len(pre) >= 2 and int(np.prod(pre)) == k.shape[0]:
            items.append(
                _item(
                    prefix,
                    "weight",
                    k,
                    lambda a: dense_after_flatten(a, pre),
                    f"dense_after_flatten{tuple(pre)}: rows NHWC->NCHW, transpose",
                    (k.shape[1], k.shape[0]),
                    meta.name,
                )
            )
            notes.append(
                Note(
                    meta.name,
                    "flatten",
                    list(pre),
                    f"first Linear after Flatten of {tuple(pre)} (H,W,C): rows permuted to torch.flatten order of NCHW",
                )
            )
        elif opts.flatten_segments and sum(n for _, n in opts.flatten_segments) == k.shape[0]:
            segs = opts.flatten_segments
            rows = nchw_feature_order(segs)
            parts = " + ".join(f"{tuple(sh)}" if sh else f"{n}" for sh, n in segs)
            it = _item(
                prefix,
                "weight",
                k,
                lambda a, rows=rows: dense_rows(a, rows),
                f"dense_after_flatten segments [{parts}]: rows of each flattened (H,W,C) part NHWC->NCHW, transpose",
                (k.shape[1], k.shape[0]),
                meta.name,
            )
            it.flatten_segments = segs
            items.append(it)
            notes.append(
                Note(
                    meta.name,
                    "flatten",
                    [[list(sh) if sh else None, n] for sh, n in segs],
                    f"first Linear after a Concatenate of Flattens [{parts}]: each part's rows in torch.flatten order "
                    "of NCHW",
                )
            )
        elif pre is not None and len(pre) >= 2:
            it = _kernel_item(prefix, k, meta.name)
            it.undetermined = Undetermined(
                "flatten",
                f"the config says a Flatten of {tuple(pre)} feeds it, which is {int(np.prod(pre))} values, but the "
                f"kernel has {k.shape[0]} rows: the (H, W, C) row order cannot be worked out",
                '--model (traced), or a --map rule {"pattern": "' + k.key + '", "transform": "dense_after_flatten", '
                '"flatten_shape": [H, W, C]}',
            )
            items.append(it)
        else:
            items.append(_kernel_item(prefix, k, meta.name))
    if "bias" in v:
        items.append(_item(prefix, "bias", v["bias"], _copy, "copy", v["bias"].shape, meta.name))
    notes += _settings_notes(meta, "Linear")
    return items + _leftovers(meta, v, prefix, {"kernel", "bias"}), notes


def feature_items(items: list[Item], opts: LayerOptions, layer: str) -> list[Note]:
    """A per-feature layer (BatchNorm, LayerNorm, PReLU, Normalization) on a vector of Flatten outputs: its
    vectors are in TF's (H, W, C) feature order; reorder them as torch.flatten of NCHW gives the features."""
    segs = opts.flatten_segments
    if not segs and opts.flatten_shape:
        segs = [(opts.flatten_shape, int(np.prod(opts.flatten_shape)))]
    if not segs:
        return []
    n = sum(m for _, m in segs)
    perm = nchw_feature_order(segs)
    done = False
    for it in items:
        if tuple(it.shape_after) != (n,) or it.undetermined is not None or it.synthetic:
            continue
        make = it.make
        it.make = lambda make=make, perm=perm: np.ascontiguousarray(make()[perm])
        it.chunks = None
        it.transform += ", features NHWC->NCHW (after Flatten)"
        it.flatten_source, it.flatten_segments = "config", segs
        done = True
    if not done:
        return []
    parts = " + ".join(f"{tuple(sh)}" if sh else f"{m}" for sh, m in segs)
    return [
        Note(layer, "flatten", parts, f"per-feature weights of Flatten [{parts}] put in torch.flatten order of NCHW")
    ]


def _may_cover_all_axes(axis: Any) -> bool:
    """Could a LayerNormalization `axis` config be every non-batch axis of its input (rank unknown here)?"""
    if axis is None:
        return True  # no config (weights only): nothing rules it out
    axes = axis if isinstance(axis, list) else [axis]
    if not all(isinstance(a, int) for a in axes) or len(axes) < 2:
        return False
    # [1, 2, ..., k] on a rank k+1 input, or [-k, ..., -1]: contiguous, in order, from the first or to the last
    return axes == list(range(1, len(axes) + 1)) or axes == list(range(-len(axes), 0))


def norm_axes_rules(key: str, perm_text: str) -> str:
    """The --map rules that settle a LayerNormalization's order, for a message."""
    return f'a --map rule {{"pattern": "{key}", "transform": "copy"}} (channels-last) or "{perm_text}" (channels-first)'


def _norm_axes_question(meta: LayerMeta, t: SourceTensor, it: Item) -> Undetermined | None:
    """A LayerNormalization over several axes holds gamma/beta over (..., C) in Keras' axis order. A PyTorch
    nn.LayerNorm normalises the trailing dims of whatever it is given: a channels-last tensor wants them as
    they are, a channels-first one (C, ...) when every non-batch axis is normalised. Square shapes (L == C)
    load strictly either way, so the target has to say which (its shape, or a --model trace)."""
    if sum(d != 1 for d in t.shape) < 2 or not _may_cover_all_axes(meta.config.get("axis")):
        return None  # one real axis (a reshape settles it), or axes a channels-first tensor cannot trail
    nd = len(t.shape)
    perm = (nd - 1, *range(nd - 1))
    cf_shape = tuple(t.shape[i] for i in perm)
    perm_text = f"permute({','.join(str(i) for i in perm)})"
    keep = Choice("channels-last", "copy", tuple(t.shape), it.make)
    cf = Choice("channels-first", perm_text, cf_shape, lambda: np.ascontiguousarray(np.transpose(t.load(), perm)))
    return Undetermined(
        "norm_axes",
        f"`{meta.name}` (LayerNormalization) normalises {nd} axes together, stored {_shape_text(tuple(t.shape))} in "
        f"Keras' (..., C) order: an nn.LayerNorm applied to a channels-first tensor wants "
        f"{_shape_text(cf_shape)} (C first), one applied channels-last wants them as stored, and the file does not "
        "say which layout the PyTorch model normalises in",
        f"--model (its shape, or a trace of where the LayerNorm is applied), or {norm_axes_rules(t.key, perm_text)}",
        choices=[keep, cf],
        rule=f'{{"pattern": "{t.key}", "transform": "copy"}}',
    )


def _norm(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items: list[Item] = []
    cls = meta.class_name or ""
    bn = cls == "BatchNormalization"
    ref = next(iter(v.values()), None)
    c = ref.shape if ref is not None else ()
    for var, role in NORM_VARS.items():
        if var in v:
            it = _item(prefix, role, v[var], _copy, "copy", v[var].shape, meta.name)
            if cls == "LayerNormalization":
                it.undetermined = _norm_axes_question(meta, v[var], it)
            items.append(it)
    notes: list[Note] = []
    eps = meta.config.get("epsilon", 1e-3)
    torch_cls = {"BatchNormalization": "BatchNorm2d", "GroupNormalization": "GroupNorm"}.get(cls, "LayerNorm")
    if cls == "InstanceNormalization":
        torch_cls = "InstanceNorm2d"  # with affine=True: gamma/beta are its weight/bias
    eps_src = "" if "epsilon" in meta.config else " (TF default; not recorded in this file)"
    notes.append(Note(meta.name, "eps", eps, f"{torch_cls}(eps={eps:g}){eps_src}: PyTorch's default is 1e-5"))
    if bn:
        if "gamma" not in v and ref is not None:
            items.append(
                _item(
                    prefix,
                    "weight",
                    None,
                    lambda _a: np.ones(c, np.float32),
                    "ones (scale=False)",
                    c,
                    meta.name,
                    dtype="float32",
                )
            )
            notes.append(Note(meta.name, "scale", False, "no gamma (scale=False): weight set to 1"))
        if "beta" not in v and ref is not None:
            items.append(
                _item(
                    prefix,
                    "bias",
                    None,
                    lambda _a: np.zeros(c, np.float32),
                    "zeros (center=False)",
                    c,
                    meta.name,
                    dtype="float32",
                )
            )
            notes.append(Note(meta.name, "center", False, "no beta (center=False): bias set to 0"))
        items.append(
            _item(
                prefix,
                "num_batches_tracked",
                None,
                lambda _a: np.array(0, np.int64),
                "zero",
                (),
                meta.name,
                dtype="int64",
            )
        )
        mom = meta.config.get("momentum", 0.99)
        notes.append(
            Note(
                meta.name,
                "momentum",
                round(1 - mom, 6),
                f"{torch_cls}(momentum={1 - mom:g}) = 1 - TF momentum {mom:g} (only matters for training)",
            )
        )
        if meta.config.get("axis", -1) not in (-1, [-1], 3, [3]):
            notes.append(Note(meta.name, "axis", meta.config.get("axis"), "normalised axis is not the last one"))
    return items + _leftovers(meta, v, prefix, set(NORM_VARS)), notes


def _embedding(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items = (
        [_item(prefix, "weight", v["embeddings"], _copy, "copy", v["embeddings"].shape, meta.name)]
        if "embeddings" in v
        else []
    )
    return items + _leftovers(meta, v, prefix, {"embeddings"}), []


def _prelu(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    a = v.get("alpha")
    if a is None:
        return _generic(meta, v, prefix, opts)
    if len(a.shape) > 1 and all(d == 1 for d in a.shape[:-1]):
        return [_item(prefix, "weight", a, lambda x: x.reshape(-1), "reshape(C)", (a.shape[-1],), meta.name)], []
    return [_item(prefix, "weight", a, _copy, "copy", a.shape, meta.name)], [
        Note(
            meta.name, "alpha", list(a.shape), "PReLU alpha is per element (shared_axes unset): nn.PReLU cannot hold it"
        )
    ]


def _rnn_bias_zeros(prefix: str, n: int, layer: str, name: str) -> Item:
    return _item(
        prefix,
        name,
        None,
        lambda _a: np.zeros(n, np.float32),
        "zeros (only bias_ih + bias_hh matters)",
        (n,),
        layer,
        dtype="float32",
    )


def _plain_rnn_items(meta: LayerMeta, v: dict[str, SourceTensor], prefix: str) -> list[Item]:
    """Kernels transposed, Keras' single bias as bias_ih and zeros for bias_hh: LSTM and SimpleRNN, whose gate
    order (if any) torch shares."""
    items: list[Item] = []
    k, rk, b = v.get("kernel"), v.get("recurrent_kernel"), v.get("bias")
    if k is not None:
        items.append(_item(prefix, "weight_ih_l0", k, dense_kernel, "transpose", (k.shape[1], k.shape[0]), meta.name))
    if rk is not None:
        items.append(
            _item(prefix, "weight_hh_l0", rk, dense_kernel, "transpose", (rk.shape[1], rk.shape[0]), meta.name)
        )
    if b is not None:
        items.append(_item(prefix, "bias_ih_l0", b, _copy, "copy", b.shape, meta.name))
        items.append(_rnn_bias_zeros(prefix, b.shape[0], meta.name, "bias_hh_l0"))
    return items


def _lstm(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items = _plain_rnn_items(meta, v, prefix)
    notes = [Note(meta.name, "structure", "LSTM", "nn.LSTM(batch_first=True): same gate order i,f,g,o")]
    notes += _rnn_notes(meta, "LSTM")
    return items + _leftovers(meta, v, prefix, {"kernel", "recurrent_kernel", "bias"}), notes


def _rnn_notes(meta: LayerMeta, torch_cls: str) -> list[Note]:
    notes = []
    cfg = meta.config
    if cfg.get("use_bias") is False:
        notes.append(Note(meta.name, "bias", False, f"nn.{torch_cls}(bias=False)"))
    if cfg.get("recurrent_activation") not in (None, "sigmoid"):
        notes.append(
            Note(
                meta.name,
                "recurrent_activation",
                cfg["recurrent_activation"],
                "not sigmoid: nn.LSTM/GRU cannot reproduce it (hard_sigmoid is clip(0.2x+0.5))",
            )
        )
    if cfg.get("activation") not in (None, "tanh"):
        notes.append(Note(meta.name, "activation", cfg["activation"], "not tanh: needs a custom cell"))
    if cfg.get("go_backwards"):
        notes.append(Note(meta.name, "go_backwards", True, "flip the sequence before the PyTorch RNN"))
    return notes


def _gru(meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions) -> tuple[list[Item], list[Note]]:
    items: list[Item] = []
    notes: list[Note] = []
    k, rk, b = v.get("kernel"), v.get("recurrent_kernel"), v.get("bias")
    reorder = lambda a: swap_gates_zr(dense_kernel(a))  # noqa: E731
    if k is not None:
        items.append(
            _item(
                prefix, "weight_ih_l0", k, reorder, "transpose, gates z,r,h->r,z,n", (k.shape[1], k.shape[0]), meta.name
            )
        )
    if rk is not None:
        items.append(
            _item(
                prefix,
                "weight_hh_l0",
                rk,
                reorder,
                "transpose, gates z,r,h->r,z,n",
                (rk.shape[1], rk.shape[0]),
                meta.name,
            )
        )
    reset_after = meta.config.get("reset_after", b is not None and len(b.shape) == 2)
    if b is not None and len(b.shape) == 2:
        n = b.shape[1]
        items.append(
            _item(prefix, "bias_ih_l0", b, lambda a: swap_gates_zr(a[0]), "row 0, gates z,r,h->r,z,n", (n,), meta.name)
        )
        items.append(
            _item(prefix, "bias_hh_l0", b, lambda a: swap_gates_zr(a[1]), "row 1, gates z,r,h->r,z,n", (n,), meta.name)
        )
    elif b is not None:
        items.append(_item(prefix, "bias_ih_l0", b, swap_gates_zr, "gates z,r,h->r,z,n", b.shape, meta.name))
        items.append(_rnn_bias_zeros(prefix, b.shape[0], meta.name, "bias_hh_l0"))
    if not reset_after:
        notes.append(
            Note(
                meta.name,
                "reset_after",
                False,
                "reset_after=False applies the reset gate before the "
                "recurrent matmul: nn.GRU is not exact, use a custom cell",
            )
        )
    else:
        notes.append(Note(meta.name, "structure", "GRU", "nn.GRU(batch_first=True): reset_after=True matches"))
    notes += _rnn_notes(meta, "GRU")
    return items + _leftovers(meta, v, prefix, {"kernel", "recurrent_kernel", "bias"}), notes


def _simple_rnn(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items = _plain_rnn_items(meta, v, prefix)
    act = meta.config.get("activation", "tanh")
    notes = [Note(meta.name, "structure", "SimpleRNN", f"nn.RNN(batch_first=True, nonlinearity={act!r})")]
    if act not in ("tanh", "relu"):
        notes.append(Note(meta.name, "activation", act, "nn.RNN has only tanh and relu: use ptools.nn.KerasRNN"))
    if meta.config.get("use_bias") is False:
        notes.append(Note(meta.name, "bias", False, "nn.RNN(bias=False)"))
    if meta.config.get("go_backwards"):
        notes.append(Note(meta.name, "go_backwards", True, "flip the sequence before the PyTorch RNN"))
    return items + _leftovers(meta, v, prefix, {"kernel", "recurrent_kernel", "bias"}), notes


def _normalization(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    """Keras Normalization: mean and variance become buffers `<layer>_mean`, `<layer>_variance` (as `ptools
    port` writes them); `count` (samples seen by adapt()) is not needed at inference and is not written."""
    items: list[Item] = []
    for var in ("mean", "variance"):
        t = v.get(var)
        if t is None:
            continue
        big = [d for d in t.shape if d != 1]
        if len(big) > 1:
            items.append(_unmapped(meta, t, prefix, f"a {var} over several axes {list(t.shape)}"))
            continue
        n = big[0] if big else 1
        it = _item(prefix, var, t, lambda a, n=n: np.ascontiguousarray(a.reshape(n)), "copy", (n,), meta.name)
        it.target = f"{prefix}_{var}" if prefix else var
        items.append(it)
    notes = [
        Note(
            meta.name,
            "structure",
            "Normalization",
            "(x - mean) / max(sqrt(variance), 1e-7) over the channel axis, mean/variance as buffers",
        )
    ]
    if "count" in v:
        notes.append(Note(meta.name, "count", list(v["count"].shape), "adapt() sample count: not needed, not written"))
    return items + _leftovers(meta, v, prefix, {"mean", "variance", "count"}), notes


def _tf1_lstm_cell(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    items: list[Item] = []
    k, b = v.get("kernel"), v.get("bias")
    if k is None:
        return _generic(meta, v, prefix, opts)
    four_u = k.shape[1]
    u = four_u // 4
    n_in = k.shape[0] - u
    items.append(
        _item(
            prefix,
            "weight_ih_l0",
            k,
            lambda a: tf1_lstm_reorder(a.T[:, :n_in]),
            "transpose, rows [:in], gates i,j,f,o->i,f,g,o",
            (four_u, n_in),
            meta.name,
        )
    )
    items.append(
        _item(
            prefix,
            "weight_hh_l0",
            k,
            lambda a: tf1_lstm_reorder(a.T[:, n_in:]),
            "transpose, rows [in:], gates i,j,f,o->i,f,g,o",
            (four_u, u),
            meta.name,
        )
    )
    fb = opts.forget_bias

    def bias_ih(a: np.ndarray) -> np.ndarray:
        out = tf1_lstm_reorder(a).astype(a.dtype, copy=True)
        out[u : 2 * u] += fb  # forget_bias is added at run time in TF1, never stored
        return out

    if b is not None:
        items.append(
            _item(
                prefix,
                "bias_ih_l0",
                b,
                bias_ih,
                f"gates i,j,f,o->i,f,g,o, +forget_bias {fb:g} on f",
                b.shape,
                meta.name,
            )
        )
    items.append(_rnn_bias_zeros(prefix, four_u, meta.name, "bias_hh_l0"))
    notes = [
        Note(
            meta.name,
            "forget_bias",
            fb,
            f"TF1 LSTMCell forget_bias {fb:g} folded into bias_ih_l0 (f gate); "
            "nn.LSTM(input_size=%d, hidden_size=%d)" % (n_in, u),
        )
    ]
    return items + _leftovers(meta, v, prefix, {"kernel", "bias"}), notes


def _generic(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    return _leftovers(meta, v, prefix, set()), []


def _tf1_gru_part(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    note = Note(
        meta.name,
        "structure",
        "TF1 GRUCell",
        "TF1 GRUCell applies the reset gate before the candidate matmul ([x, r*h] @ W): nn.GRU cannot "
        "reproduce it; the kernels are written as Linear weights (transposed) for a custom cell",
    )
    return _leftovers(meta, v, prefix, set()), [note]


def _leftovers(meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, handled: set[str]) -> list[Item]:
    """Variables no rule claimed. A kernel of a layer whose class was inferred from its variables is transposed
    by rank (the documented heuristics); vectors and scalars are copied (they have one layout), and so are
    variables no layer class is known for (a bare `tf.Variable` is what it is); a variable a known Keras class
    has no rule for, and Keras 3's ordinal `vars/N` names, are not guessed: they stay open (exit 1)."""
    items = []
    for var, t in v.items():
        if var in handled:
            continue
        role = NAME_HEURISTICS.get(var, var)
        if _ORDINAL.search(t.key):
            items.append(_unmapped(meta, t, prefix, "Keras 3 stores it as an ordinal variable of a layer with no rule"))
        elif var == "kernel" and (meta.class_inferred or meta.class_name is None) and len(t.shape) <= 5:
            items.append(_kernel_item(prefix, t, meta.name))
        elif len(t.shape) <= 1 or meta.class_name is None:
            items.append(_item(prefix, role, t, _copy, "copy", t.shape, meta.name))
        else:
            items.append(_unmapped(meta, t, prefix, f"no layout rule for a {meta.class_name} variable `{var}`"))
    return items


_ORDINAL = re.compile(r"(^|/)vars/\d+$")


def _unmapped(meta: LayerMeta, t: SourceTensor, prefix: str, why: str) -> Item:
    """A tensor written only if a --map rule says how: its layout (or name) is not determined by the file."""
    role = re.sub(r"(^|/)vars/(\d+)$", r"\1vars_\2", t.key).rsplit("/", 1)[-1] or "var"
    it = _item(prefix, role, t, _copy, "copy", t.shape, meta.name)
    cls = meta.class_name or "unknown class"
    it.undetermined = Undetermined(
        "unmapped",
        f"layer `{meta.name}` ({cls}): {why}, so its PyTorch name and layout are unknown",
        f'a --map rule {{"pattern": "{t.key}", "replace": "<torch key>", "transform": "copy|transpose|conv|..."}}'
        ' or {"pattern": ..., "skip": true}',
        rule=f'{{"pattern": "{t.key}", "replace": "<torch key>", "transform": "copy"}}',
    )
    return it


def _unknown_class(
    meta: LayerMeta, v: dict[str, SourceTensor], prefix: str, opts: LayerOptions
) -> tuple[list[Item], list[Note]]:
    """A layer class with no rule here (MultiHeadAttention, custom layers...): vectors copied, the rest open."""
    items = []
    for var, t in v.items():
        if len(t.shape) <= 1 and not _ORDINAL.search(t.key):
            items.append(_item(prefix, NAME_HEURISTICS.get(var, var), t, _copy, "copy", t.shape, meta.name))
        else:
            items.append(_unmapped(meta, t, prefix, f"no conversion rule for Keras {meta.class_name} weights"))
    return items, []


_RULES: dict[str, Callable[..., tuple[list[Item], list[Note]]]] = {
    **{c: _conv for c in CONV_CLASSES},
    "DepthwiseConv1D": _depthwise,
    "DepthwiseConv2D": _depthwise,
    "SeparableConv1D": _separable,
    "SeparableConv2D": _separable,
    "Dense": _dense,
    "BatchNormalization": _norm,
    "LayerNormalization": _norm,
    "GroupNormalization": _norm,
    "InstanceNormalization": _norm,
    "Embedding": _embedding,
    "PReLU": _prelu,
    "LSTM": _lstm,
    "GRU": _gru,
    "SimpleRNN": _simple_rnn,
    "Normalization": _normalization,
    "TF1LSTMCell": _tf1_lstm_cell,
    "TF1GRUCellPart": _tf1_gru_part,
}
KNOWN_CLASSES = set(_RULES)
