"""The Keras side of benchmarks/port_fuzz.py: random Keras models, saved in every format, with Keras' outputs.

    /work/tfvenv/bin/python benchmarks/port_fuzz_keras.py --seed 5 --start 0 --n 20 --out /tmp/fuzz

Runs where TensorFlow, tf_keras and Keras 3 are installed (no torch needed). Model `i` of seed `s` is drawn
from `random.Random(f"{s}:{i}")` alone, so any one model can be rebuilt by its (seed, index). For each model
it writes into `OUT/m<i>/`: the files `port`/`convert` read (see FORMATS), `io.npz` (inputs `in0..` in Keras
layout, Keras' outputs `out0..` computed with `training=False`, and `ref0..`, the same outputs computed by a
float64 twin of the model, see float64_outputs), and `case.json` (family, formats, layer classes, input
kinds). A model Keras itself cannot build or save is recorded as `keras_error` and skipped.

The graph is drawn over typed values: images (H, W, C), sequences (L, C), vectors (C,), volumes and token
ids, with branches (any earlier value can be reused), merges of equal shapes, several inputs and outputs,
nested models, constants, and every padding / stride / dilation / activation option of the layer zoo
`ptools port` documents, plus layers it does not (those must be refused by name). Weights are random with
real-looking BatchNorm / LayerNorm statistics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's float32 conv is wrong on some strided shapes (input 7x6, kernel 5x5, strides (1, 3),
# batch 2: garbage values): Keras' reference outputs come from TF's Eigen kernels instead.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

MAX_ELEMS = 6000  # per sample, per value: keeps every model small and quick
ACTS = [
    "linear",
    "relu",
    "relu6",
    "elu",
    "selu",
    "gelu",
    "swish",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "softmax",
    "softplus",
    "softsign",
    "exponential",
    "leaky_relu",
    "mish",
    "hard_silu",
    "silu",
]
TFK_ACTS = ["linear", "relu", "relu6", "elu", "selu", "gelu", "swish", "sigmoid", "hard_sigmoid", "tanh"]
TFK_ACTS += ["softmax", "softplus", "softsign", "exponential"]

# (family, format) -> what it holds. "model": port and convert read it; "weights": convert only.
FORMATS = {
    "keras3": {"keras": "model", "k3_legacy.h5": "model", "weights.h5": "weights", "k3_ckpt": "weights"},
    "tf_keras": {"tfk.h5": "model", "savedmodel": "model", "tfk_weights.h5": "weights", "tfk_ckpt": "weights"},
}


class Skip(Exception):
    """This op does not fit the value drawn (shape too small, too big...): draw another."""


class Val:
    """A graph value: the Keras tensor, its kind, the inputs it depends on."""

    def __init__(self, t, kind: str, deps: frozenset[int], flat: tuple | None = None) -> None:
        self.t, self.kind, self.deps = t, kind, deps
        # A vector holding Flatten outputs in TF's order: segments ((pre-Flatten shape | None, length), ...);
        # None where no feature comes from a Flatten of a map.
        self.flat = flat

    @property
    def shape(self) -> tuple[int | None, ...]:
        return tuple(self.t.shape[1:])


def _elems(shape) -> int:
    return int(np.prod([d if d is not None else 1 for d in shape])) if shape else 1


class Builder:
    """Draws one random model in one Keras family (keras = Keras 3, tf_keras)."""

    def __init__(self, rng: random.Random, family: str) -> None:
        self.rng, self.family = rng, family
        if family == "keras3":
            import keras

            self.k = keras
        else:
            import tf_keras

            self.k = tf_keras
        self.L = self.k.layers
        self.values: list[Val] = []
        self.n = 0
        self.inputs: list = []
        self.input_kinds: list[dict] = []
        self.extras: list[str] = []  # layers/ops outside port's documented zoo, drawn on purpose
        self.adapt: list = []  # (layer, data) for Normalization layers to adapt before saving
        # Layers whose weights index the features of a Flatten of an (..., C) map (Dense, and per-feature
        # BN/LN/PReLU/Normalization on the way to it), with that shape: the judge's own record of where a
        # converter must reorder rows for an NCHW flatten (it never asks ptools).
        self.flat_fed: dict[str, list[int]] = {}
        self.last = ""

    # -- helpers ---------------------------------------------------------------------------------
    def name(self, base: str) -> str:
        self.n += 1
        self.last = f"{base}_{self.n}"
        return self.last

    def flat_of(self, v: Val, per_feature: bool = False) -> tuple | None:
        """What a layer on v keeps of v's Flatten order; a per-feature layer's weights are recorded."""
        if v.kind != "vec" or v.flat is None:
            return None
        if per_feature:
            self.flat_fed[self.last] = [[list(sh) if sh else None, n] for sh, n in v.flat]
        return v.flat

    def act(self) -> str:
        r = self.rng
        if r.random() < 0.45:
            return "linear"
        return r.choice(ACTS if self.family == "keras3" else TFK_ACTS)

    def pick(self, kinds: tuple[str, ...] | None = None) -> Val:
        cands = [v for v in self.values if kinds is None or v.kind in kinds]
        if not cands:
            raise Skip
        # Mostly the newest values (a chain), sometimes an older one (a branch).
        if self.rng.random() < 0.7:
            return cands[-1]
        return self.rng.choice(cands)

    def add(self, t, kind: str, deps: frozenset[int], flat: tuple | None = None) -> Val:
        shape = tuple(t.shape[1:])
        if any(d is not None and d < 1 for d in shape) or _elems(shape) > MAX_ELEMS:
            raise Skip
        v = Val(t, kind, deps, flat if kind == "vec" else None)
        self.values.append(v)
        return v

    @staticmethod
    def kind_of(shape) -> str:
        return {1: "vec", 2: "seq", 3: "img", 4: "vol"}.get(len(shape), "other")

    # -- inputs ------------------------------------------------------------------------------------
    def make_input(self, i: int) -> None:
        r = self.rng
        kind = r.choices(["img", "seq", "vec", "tok", "vol"], [5, 3, 2, 1.2, 0.5])[0]
        if kind == "img":
            shape = (r.randint(4, 19), r.randint(4, 19), r.randint(1, 6))
        elif kind == "seq":
            shape = (r.randint(3, 12), r.randint(1, 8))
        elif kind == "vec":
            shape = (r.randint(2, 16),)
        elif kind == "vol":
            shape = (r.randint(3, 6), r.randint(3, 7), r.randint(3, 7), r.randint(1, 3))
        else:
            shape = (r.randint(3, 10),)
        name = f"in{i}_{kind}"
        if kind == "tok":
            vocab = r.randint(5, 30)
            t = self.k.Input(shape, dtype="int32", name=name)
            self.input_kinds.append({"kind": "tok", "shape": list(shape), "vocab": vocab})
            self.inputs.append(t)
            mask_zero = r.random() < 0.1
            if mask_zero:
                self.extras.append("Embedding(mask_zero)")
            e = self.L.Embedding(vocab, r.randint(2, 8), mask_zero=mask_zero, name=self.name("embedding"))(t)
            self.add(e, "seq", frozenset([i]))
            return
        t = self.k.Input(shape, name=name)
        self.inputs.append(t)
        self.input_kinds.append({"kind": kind, "shape": list(shape)})
        self.values.append(Val(t, kind, frozenset([i])))

    # -- ops ---------------------------------------------------------------------------------------
    def op_conv(self, v: Val) -> None:
        r, L = self.rng, self.L
        nd = {"img": 2, "seq": 1, "vol": 3}[v.kind]
        spatial, c = v.shape[:-1], v.shape[-1]
        k = r.randint(1, 5 if nd < 3 else 3)
        kernel = tuple(min(k if r.random() < 0.8 else r.randint(1, 5), 7) for _ in range(nd))
        pads = ["valid", "same"] + (["causal"] if nd == 1 else [])
        padding = r.choice(pads)
        strides, dil = 1, 1
        if r.random() < 0.4:
            strides = tuple(r.randint(1, 3) for _ in range(nd)) if nd > 1 and r.random() < 0.3 else r.randint(1, 3)
        elif r.random() < 0.25:
            dil = r.randint(1, 3)
        filters = r.randint(1, 12)
        groups = 1
        if r.random() < 0.15:
            g = r.choice([d for d in (2, 3, 4) if c % d == 0] or [1])
            if filters % g:
                filters = g * r.randint(1, 4)
            groups = g
        cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[nd]
        t = cls(
            filters,
            kernel,
            strides=strides,
            padding=padding,
            dilation_rate=dil,
            groups=groups,
            activation=self.act(),
            use_bias=r.random() < 0.8,
            name=self.name(f"conv{nd}d"),
        )(v.t)
        self.add(t, v.kind, v.deps)
        del spatial

    def op_conv_transpose(self, v: Val) -> None:
        r, L = self.rng, self.L
        k = r.randint(1, 5)
        s = r.randint(1, 3)
        padding = r.choice(["valid", "same"])
        kw = {}
        if r.random() < 0.3 and s > 1:
            kw["output_padding"] = r.randint(0, s - 1)
        t = L.Conv2DTranspose(
            r.randint(1, 8),
            k,
            strides=s,
            padding=padding,
            activation=self.act(),
            use_bias=r.random() < 0.8,
            name=self.name("conv2d_transpose"),
            **kw,
        )(v.t)
        self.add(t, "img", v.deps)

    def op_depthwise(self, v: Val) -> None:
        r, L = self.rng, self.L
        kw = dict(
            kernel_size=r.randint(1, 5),
            strides=r.choice([1, 1, 2, 3]),
            padding=r.choice(["valid", "same"]),
            depth_multiplier=r.choice([1, 1, 2, 3]),
            activation=self.act(),
            use_bias=r.random() < 0.7,
        )
        if r.random() < 0.5:
            t = L.DepthwiseConv2D(name=self.name("depthwise_conv2d"), **kw)(v.t)
        else:
            t = L.SeparableConv2D(r.randint(1, 10), name=self.name("separable_conv2d"), **kw)(v.t)
        self.add(t, "img", v.deps)

    def op_norm(self, v: Val) -> None:
        r, L = self.rng, self.L
        if r.random() < 0.6:
            t = L.BatchNormalization(
                epsilon=r.choice([1e-3, 1e-5, 0.01, 0.1]),
                momentum=r.choice([0.99, 0.9, 0.5]),
                center=r.random() < 0.85,
                scale=r.random() < 0.85,
                name=self.name("batch_normalization"),
            )(v.t)
        else:
            rank = len(v.shape)
            axes = [-1]
            if rank >= 2 and r.random() < 0.35:
                axes = sorted(r.sample(range(1, rank + 1), r.randint(1, rank)))
            t = L.LayerNormalization(
                axis=axes if len(axes) > 1 else axes[0],
                epsilon=r.choice([1e-3, 1e-6, 0.01]),
                center=r.random() < 0.85,
                scale=r.random() < 0.85,
                name=self.name("layer_normalization"),
            )(v.t)
        self.add(t, v.kind, v.deps, self.flat_of(v, per_feature=True))

    def op_activation(self, v: Val) -> None:
        r, L = self.rng, self.L
        choice = r.randint(0, 5)
        if choice == 0:
            t = L.Activation(self.act(), name=self.name("activation"))(v.t)
        elif choice == 1:
            kw = {}
            if r.random() < 0.5:
                kw["max_value"] = r.choice([6.0, 1.0, 3.5])
            if r.random() < 0.3:
                kw["negative_slope"] = r.choice([0.1, 0.3])
            if r.random() < 0.2:
                kw["threshold"] = r.choice([0.5, -0.2])
            t = L.ReLU(name=self.name("re_lu"), **kw)(v.t)
        elif choice == 2:
            slope = r.choice([0.3, 0.1, 0.01])
            kw = {"negative_slope": slope} if self.family == "keras3" else {"alpha": slope}
            t = L.LeakyReLU(name=self.name("leaky_re_lu"), **kw)(v.t)
        elif choice == 3:
            t = L.ELU(alpha=r.choice([1.0, 0.5]), name=self.name("elu"))(v.t)
        elif choice == 4:
            t = L.Softmax(axis=r.choice([-1, 1]) if len(v.shape) > 1 else -1, name=self.name("softmax"))(v.t)
        else:
            shared = list(range(1, len(v.shape))) if len(v.shape) > 1 and r.random() < 0.8 else None
            t = L.PReLU(shared_axes=shared, name=self.name("p_re_lu"))(v.t)
        self.add(t, v.kind, v.deps, self.flat_of(v, per_feature=choice == 5))

    def op_pool(self, v: Val) -> None:
        r, L = self.rng, self.L
        nd = {"img": 2, "seq": 1}[v.kind]
        p = r.randint(1, 3)
        s = r.choice([None, 1, 2, 3])
        padding = r.choice(["valid", "same"])
        cls = {(1, "max"): L.MaxPooling1D, (1, "avg"): L.AveragePooling1D}
        cls.update({(2, "max"): L.MaxPooling2D, (2, "avg"): L.AveragePooling2D})
        kind = r.choice(["max", "avg"])
        t = cls[(nd, kind)](p, strides=s, padding=padding, name=self.name(f"{kind}_pooling{nd}d"))(v.t)
        self.add(t, v.kind, v.deps)

    def op_global_pool(self, v: Val) -> None:
        r, L = self.rng, self.L
        nd = {"img": 2, "seq": 1, "vol": 3}[v.kind]
        kind = r.choice(["Average", "Max"])
        keep = r.random() < 0.2
        cls = getattr(L, f"Global{kind}Pooling{nd}D")
        t = cls(keepdims=keep, name=self.name(f"global_{kind.lower()}_pooling{nd}d"))(v.t)
        self.add(t, v.kind if keep else "vec", v.deps)

    def op_flatten(self, v: Val) -> None:
        t = self.L.Flatten(name=self.name("flatten"))(v.t)
        flat = ((tuple(v.shape), _elems(v.shape)),) if len(v.shape) >= 2 else v.flat
        self.add(t, "vec", v.deps, flat)

    def op_dense(self, v: Val) -> None:
        r, L = self.rng, self.L
        units = r.randint(1, 16)
        if v.kind == "seq" and r.random() < 0.4:
            t = L.TimeDistributed(L.Dense(units, activation=self.act()), name=self.name("time_distributed"))(v.t)
        else:
            t = L.Dense(units, activation=self.act(), use_bias=r.random() < 0.85, name=self.name("dense"))(v.t)
            self.flat_of(v, per_feature=True)
        self.add(t, self.kind_of(t.shape[1:]), v.deps)

    def op_reshape(self, v: Val) -> None:
        r, L = self.rng, self.L
        shape = v.shape
        n = _elems(shape)
        if r.random() < 0.5 and len(shape) >= 2:
            perm = list(range(1, len(shape) + 1))
            r.shuffle(perm)
            t = L.Permute(tuple(perm), name=self.name("permute"))(v.t)
        else:
            divs = [d for d in range(2, min(n, 24) + 1) if n % d == 0]
            if not divs:
                raise Skip
            d = r.choice(divs)
            target = r.choice([(d, n // d), (n,), (d, n // d, 1)]) if n // d > 0 else (n,)
            if len(target) == 3 and d > 1:
                d2 = [x for x in range(1, d + 1) if d % x == 0]
                h = r.choice(d2)
                target = (h, d // h, n // d)
            t = L.Reshape(target, name=self.name("reshape"))(v.t)
        # A Reshape of a vector to (n,) keeps its features where they were, a Flatten's order included (seed
        # 61487 model 74: its record was dropped here, so the Flatten-fed BatchNorm and Dense were missing).
        keep = v.flat if v.kind == "vec" and tuple(t.shape[1:]) == (n,) else None
        self.add(t, self.kind_of(t.shape[1:]), v.deps, keep)

    def op_dropout(self, v: Val) -> None:
        r, L = self.rng, self.L
        choices = [lambda n: L.Dropout(0.3, name=n), lambda n: L.GaussianNoise(0.2, name=n)]
        choices.append(lambda n: L.GaussianDropout(0.2, name=n))
        choices.append(lambda n: L.AlphaDropout(0.2, name=n))
        if v.kind == "img":
            choices.append(lambda n: L.SpatialDropout2D(0.2, name=n))
        if v.kind == "seq":
            choices.append(lambda n: L.SpatialDropout1D(0.2, name=n))
        t = r.choice(choices)(self.name("dropout"))(v.t)
        self.add(t, v.kind, v.deps, self.flat_of(v))

    def op_pad_crop(self, v: Val) -> None:
        r, L = self.rng, self.L
        nd = {"img": 2, "seq": 1}[v.kind]
        amount = [(r.randint(0, 2), r.randint(0, 2)) for _ in range(nd)]
        if r.random() < 0.5:
            cls = L.ZeroPadding1D if nd == 1 else L.ZeroPadding2D
            t = cls(amount[0] if nd == 1 else tuple(amount), name=self.name("zero_padding"))(v.t)
        else:
            for i, (a, b) in enumerate(amount):
                if a + b >= v.shape[i]:
                    raise Skip
            cls = L.Cropping1D if nd == 1 else L.Cropping2D
            t = cls(amount[0] if nd == 1 else tuple(amount), name=self.name("cropping"))(v.t)
        self.add(t, v.kind, v.deps)

    def op_upsample(self, v: Val) -> None:
        r, L = self.rng, self.L
        if v.kind == "seq":
            t = L.UpSampling1D(r.randint(1, 3), name=self.name("up_sampling1d"))(v.t)
        else:
            size = (r.randint(1, 3), r.randint(1, 3))
            interp = r.choice(["nearest", "bilinear"])
            t = L.UpSampling2D(size, interpolation=interp, name=self.name("up_sampling2d"))(v.t)
        self.add(t, v.kind, v.deps)

    def op_merge(self, v: Val) -> None:
        r, L = self.rng, self.L
        same = [w for w in self.values if w is not v and w.shape == v.shape and w.kind == v.kind]
        if not same:
            # Make a partner: a branch of v through a cheap layer with the same output shape.
            w = self.add(L.Activation(self.act(), name=self.name("activation"))(v.t), v.kind, v.deps, self.flat_of(v))
            same = [w]
        others = r.sample(same, min(len(same), r.randint(1, 2)))
        parts = [v, *others]
        kind = r.choice(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"])
        if kind == "Subtract":
            parts = parts[:2]
        if kind == "Concatenate":
            axis = r.choice([-1, -1, 1]) if len(v.shape) >= 2 else -1
            t = L.Concatenate(axis=axis, name=self.name("concatenate"))([p.t for p in parts])
        else:
            t = getattr(L, kind)(name=self.name(kind.lower()))([p.t for p in parts])
        deps = frozenset().union(*(p.deps for p in parts))
        flats = {p.flat for p in parts}
        if kind == "Concatenate" and v.kind == "vec" and any(p.flat for p in parts):
            flat = tuple(seg for p in parts for seg in (p.flat or ((None, p.shape[0]),)))
        else:
            flat = flats.pop() if len(flats) == 1 and kind != "Concatenate" else None
        self.add(t, v.kind, deps, flat)

    def op_broadcast_mul(self, v: Val) -> None:
        """Squeeze-excite: a (1, 1, C) gate times an (H, W, C) map (a broadcasting Multiply)."""
        L = self.L
        c = v.shape[-1]
        g = L.GlobalAveragePooling2D(keepdims=True, name=self.name("global_average_pooling2d"))(v.t)
        g = L.Conv2D(c, 1, activation="sigmoid", name=self.name("conv2d"))(g)
        t = L.Multiply(name=self.name("multiply"))([v.t, g])
        self.add(t, "img", v.deps)

    def op_rnn(self, v: Val) -> None:
        r, L = self.rng, self.L
        cls = r.choice(["LSTM", "GRU", "SimpleRNN"])
        units = r.randint(1, 8)
        kw = dict(return_sequences=r.random() < 0.5, go_backwards=r.random() < 0.2)
        if r.random() < 0.25:
            kw["activation"] = r.choice(["tanh", "relu", "sigmoid", "linear"])
        if cls != "SimpleRNN" and r.random() < 0.25:
            kw["recurrent_activation"] = r.choice(["sigmoid", "hard_sigmoid", "tanh"])
        if cls == "GRU" and r.random() < 0.2:
            kw["reset_after"] = False
        if r.random() < 0.1:
            kw["use_bias"] = False
        layer = getattr(L, cls)(units, **kw)
        if r.random() < 0.35:
            mode = r.choice(["concat", "sum", "mul", "ave"])
            t = L.Bidirectional(layer, merge_mode=mode, name=self.name("bidirectional"))(v.t)
        else:
            layer = getattr(L, cls)(units, name=self.name(cls.lower()), **kw)
            if r.random() < 0.15:
                layer = getattr(L, cls)(units, return_state=True, name=self.name(cls.lower()), **kw)
                outs = layer(v.t)
                t = outs[0]
                self.add(outs[1], "vec", v.deps)
            else:
                t = layer(v.t)
        self.add(t, self.kind_of(t.shape[1:]), v.deps)

    def op_rescale(self, v: Val) -> None:
        r, L = self.rng, self.L
        if r.random() < 0.5:
            t = L.Rescaling(
                r.choice([1 / 255.0, 2.0, 0.5]), offset=r.choice([0.0, -1.0, 0.25]), name=self.name("rescaling")
            )(v.t)
        else:
            c = v.shape[-1]
            if r.random() < 0.5:
                mean = [round(r.uniform(-1, 1), 3) for _ in range(c)]
                var = [round(r.uniform(0.2, 3), 3) for _ in range(c)]
                t = L.Normalization(mean=mean, variance=var, name=self.name("normalization"))(v.t)
            else:
                layer = L.Normalization(name=self.name("normalization"))
                t = layer(v.t)
                self.adapt.append((layer, tuple(v.shape)))
        self.add(t, v.kind, v.deps, self.flat_of(v, per_feature=self.last.startswith("normalization")))

    # Outside the documented zoo (issue 17 and beyond): supported later or refused by name.
    def op_const_arith(self, v: Val) -> None:
        r = self.rng
        c = r.choice([3.0, 1 / 6.0, 0.5, -2.0])
        kind = r.randint(0, 3)
        t = [v.t + c, v.t * c, v.t - c, v.t / c][kind]
        self.add(t, v.kind, v.deps, self.flat_of(v))
        self.extras.append("const-arith")

    def op_tensor_arith(self, v: Val) -> None:
        same = [w for w in self.values if w is not v and w.shape == v.shape]
        if not same:
            raise Skip
        w = self.rng.choice(same)
        t = [v.t + w.t, v.t * w.t, v.t - w.t][self.rng.randint(0, 2)]
        # element-wise, as the merge layers: the Flatten order both operands share survives (a record that
        # dropped it judged a Dense after `flatten -> x * y -> dense` as wrong when convert reordered its rows)
        self.add(t, v.kind, v.deps | w.deps, v.flat if v.flat == w.flat else None)
        self.extras.append("tensor-arith")

    def op_nested(self, v: Val) -> None:
        r, L, k = self.rng, self.L, self.k
        inner = [L.Dense(r.randint(2, 8), activation=self.act(), name=self.name("inner_dense"))]
        inner_dense = self.last
        if v.kind == "img":
            inner = [
                L.Conv2D(r.randint(2, 6), 3, padding="same", name=self.name("inner_conv")),
                L.BatchNormalization(name=self.name("inner_bn")),
                L.Activation("relu", name=self.name("inner_relu")),
            ]
        if r.random() < 0.5:
            block = k.Sequential([k.Input(v.shape), *inner], name=self.name("block"))
        else:
            x0 = k.Input(v.shape)
            x = x0
            for layer in inner:
                x = layer(x)
            block = k.Model(x0, x, name=self.name("block"))
        t = block(v.t)
        if v.kind == "vec" and v.flat:  # the inner Dense is fed what feeds the block: `block_8.inner_dense_7`
            self.flat_fed[f"{block.name}.{inner_dense}"] = [[list(sh) if sh else None, n] for sh, n in v.flat]
        self.add(t, self.kind_of(t.shape[1:]), v.deps)
        self.extras.append("nested")

    def op_preprocess(self, v: Val) -> None:
        r, L = self.rng, self.L
        opts = [lambda n: L.RandomFlip("horizontal", name=n), lambda n: L.RandomRotation(0.1, name=n)]
        opts += [lambda n: L.RandomZoom(0.1, name=n), lambda n: L.RandomContrast(0.2, name=n)]
        t = r.choice(opts)(self.name("random"))(v.t)
        self.add(t, v.kind, v.deps)
        self.extras.append("random-augment")

    def op_mha(self, v: Val) -> None:
        r, L = self.rng, self.L
        mha = L.MultiHeadAttention(num_heads=r.randint(1, 3), key_dim=r.randint(2, 6), name=self.name("mha"))
        t = mha(v.t, v.t)
        self.add(t, v.kind, v.deps)
        self.extras.append("MultiHeadAttention")

    def op_upsample3d(self, v: Val) -> None:
        t = self.L.Conv3D(self.rng.randint(1, 4), 2, padding="same", name=self.name("conv3d"))(v.t)
        self.add(t, "vol", v.deps)

    # -- the draw ------------------------------------------------------------------------------------
    def ops_for(self, kind: str) -> list[tuple[float, object]]:
        o = []
        if kind == "img":
            o = [(5, self.op_conv), (1.5, self.op_conv_transpose), (2, self.op_depthwise), (2.5, self.op_norm)]
            o += [(2, self.op_activation), (2, self.op_pool), (1, self.op_global_pool), (0.8, self.op_flatten)]
            o += [(0.8, self.op_reshape), (0.7, self.op_dropout), (1, self.op_pad_crop), (1, self.op_upsample)]
            o += [(2, self.op_merge), (0.6, self.op_broadcast_mul), (0.7, self.op_rescale)]
        elif kind == "seq":
            o = [(3, self.op_conv), (2.5, self.op_rnn), (2, self.op_dense), (1.5, self.op_norm)]
            o += [(1, self.op_activation), (1, self.op_pool), (1, self.op_global_pool), (0.8, self.op_flatten)]
            o += [(0.8, self.op_reshape), (0.5, self.op_dropout), (0.8, self.op_pad_crop), (0.5, self.op_upsample)]
            o += [(1.5, self.op_merge), (0.5, self.op_rescale)]
        elif kind == "vec":
            o = [(5, self.op_dense), (1.5, self.op_norm), (1.5, self.op_activation), (0.6, self.op_dropout)]
            o += [(1, self.op_reshape), (1.5, self.op_merge), (0.5, self.op_rescale)]
        elif kind == "vol":
            o = [(3, self.op_conv), (1, self.op_norm), (1, self.op_global_pool), (0.5, self.op_activation)]
            o += [(0.5, self.op_flatten), (0.5, self.op_merge)]
        extras = self.rng.random() < EXTRA_RATE
        if extras and kind in ("img", "seq", "vec"):
            o += [(1.5, self.op_const_arith), (0.8, self.op_tensor_arith), (0.8, self.op_nested)]
            if kind == "img":
                o += [(0.6, self.op_preprocess)]
            if kind == "seq":
                o += [(0.6, self.op_mha)]
        return o

    def build(self):
        r = self.rng
        n_in = r.choices([1, 2, 3], [7, 2.5, 0.5])[0]
        for i in range(n_in):
            self.make_input(i)
        steps = r.randint(2, 18)
        tries = 0
        while steps > 0 and tries < steps * 8 + 20:
            tries += 1
            v = self.pick()
            ops = self.ops_for(v.kind)
            if not ops:
                continue
            fn = r.choices([f for _, f in ops], [w for w, _ in ops])[0]
            before = len(self.values)
            try:
                fn(v)
            except Skip:
                del self.values[before:]
                continue
            except (ValueError, TypeError, NotImplementedError) as e:  # Keras rejected this configuration
                del self.values[before:]
                if os.environ.get("FUZZ_DEBUG"):
                    print("rejected:", fn.__name__, e, file=sys.stderr)
                continue
            steps -= 1
        return self.finish()

    def finish(self):
        r, L = self.rng, self.L
        produced = [v for v in self.values if not any(v.t is t for t in self.inputs)]
        if not produced:
            raise Skip
        outs = [produced[-1]]
        for v in r.sample(produced, min(len(produced), r.randint(0, 2))):
            if all(v is not o for o in outs):
                outs.append(v)
        covered = frozenset().union(*(o.deps for o in outs))
        for i in range(len(self.inputs)):
            if i in covered:
                continue
            # An input nothing uses yet: give it its own small head, so every input reaches an output.
            v = next(v for v in self.values if i in v.deps)
            x = v.t
            flat = v.flat
            if len(v.shape) > 1:
                x = L.Flatten(name=self.name("flatten"))(x)
                flat = ((tuple(v.shape), _elems(v.shape)),)
            x = L.Dense(r.randint(1, 4), name=self.name("dense"))(x)
            if flat:
                self.flat_fed[self.last] = [[list(sh) if sh else None, n] for sh, n in flat]
            outs.append(Val(x, "vec", v.deps))
        return self.k.Model(self.inputs, [o.t for o in outs], name=f"fuzz_{self.family}")


EXTRA_RATE = 0.25  # share of steps that may draw ops outside the documented zoo


# -- weights, inputs, saving ----------------------------------------------------------------------------


def randomize(model, rng: np.random.Generator) -> None:
    """Random weights at a scale that keeps activations O(1); BN/LN statistics that look trained.

    Normalization layers keep what adapt() computed: they cache their statistics when adapted, so a value
    assigned afterwards would be saved but not used by Keras' own outputs."""
    skip = {id(w) for layer in _all_layers(model) if type(layer).__name__ == "Normalization" for w in layer.weights}
    for w in model.weights:
        if id(w) in skip:
            continue
        name = (getattr(w, "path", None) or w.name).split("/")[-1].split(":")[0]
        shape = tuple(int(d) for d in w.shape)
        dtype = str(getattr(w, "dtype", "float32"))
        if "int" in dtype or "count" in name:
            continue
        if name in ("moving_variance", "variance"):
            a = rng.uniform(0.3, 2.5, shape)
        elif name in ("moving_mean", "mean"):
            a = rng.normal(0, 0.5, shape)
        elif name == "gamma":
            a = 1 + rng.normal(0, 0.3, shape)
        elif name in ("beta", "bias") or len(shape) <= 1:
            a = rng.normal(0, 0.3, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            if "recurrent" in name:
                fan_in = shape[0]
            a = rng.normal(0, 1.0, shape) / math.sqrt(max(1, fan_in)) * 1.2
        w.assign(a.astype(np.float32))


def _all_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out += _all_layers(layer)
    return out


def _as_float64(cfg):
    """A model config with every float32 dtype (a layer's, an input's, a Keras 3 DTypePolicy's) made float64."""
    if isinstance(cfg, dict):
        return {k: _as_float64(v) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_as_float64(v) for v in cfg]
    return "float64" if cfg == "float32" else cfg


def float64_outputs(model, k, xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[list[np.ndarray] | None, str]:
    """Keras' outputs computed in float64 by a twin of `model` (its config in float64, the same weights), or
    None and why not.

    The float32 outputs are Keras' answer only up to Keras' own float32 round-off, which some models amplify
    far past the judge's rtol (a LayerNormalization over a single feature multiplies the round-off of x - mean
    by 1/sqrt(epsilon) = 1000, where the exact result is beta): the judge compares with this reference and
    allows the round-off it measures (|float32 - float64|). A twin that disagrees beyond round-off (1e-2 of
    the output scale) is not the same model and is dropped; the judge then falls back to the float32 outputs."""
    old = k.backend.floatx()
    try:
        k.backend.set_floatx("float64")
        twin = type(model).from_config(_as_float64(model.get_config()))
        twin.set_weights([w.astype(np.float64) if w.dtype.kind == "f" else w for w in model.get_weights()])
        for layer in _all_layers(twin):  # adapted Normalization layers derive mean/variance from their weights
            if type(layer).__name__ == "Normalization" and hasattr(layer, "finalize_state"):
                layer.finalize_state()
        x64 = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
        out = twin(x64 if len(x64) > 1 else x64[0], training=False)
        out = [np.asarray(y) for y in (out if isinstance(out, (list, tuple)) else [out])]
    except Exception as e:  # noqa: BLE001 - Keras cannot build this model in float64: no reference
        return None, f"no float64 twin: {type(e).__name__}: {e}".splitlines()[0][:200]
    finally:
        k.backend.set_floatx(old)
    if len(out) != len(ys) or any(a.shape != y.shape or a.dtype != np.float64 for a, y in zip(out, ys, strict=True)):
        return None, "float64 twin: outputs differ in shape or dtype"
    for i, (a, y) in enumerate(zip(out, ys, strict=True)):
        if not np.all(np.isfinite(a)) or np.abs(a - y).max() > 1e-2 * max(1.0, float(np.abs(y).max())):
            return None, f"float64 twin: output {i} differs from float32 beyond round-off"
    return out, "float64"


def make_inputs(kinds: list[dict], rng: np.random.Generator) -> list[np.ndarray]:
    xs = []
    for k in kinds:
        shape = (2, *k["shape"])
        if k["kind"] == "tok":
            xs.append(rng.integers(0, k["vocab"], shape).astype(np.int32))
        else:
            xs.append(rng.normal(0, 1, shape).astype(np.float32))
    return xs


def save_all(model, family: str, folder: Path, formats: list[str]) -> dict[str, str]:
    """Each format's file; a format Keras fails to write is recorded with its error instead."""
    import tensorflow as tf

    done: dict[str, str] = {}
    for fmt in formats:
        try:
            if fmt == "keras":
                model.save(folder / "model.keras")
                done[fmt] = "model.keras"
            elif fmt == "k3_legacy.h5":
                from keras.src.legacy.saving import legacy_h5_format

                legacy_h5_format.save_model_to_hdf5(model, str(folder / "model_k3.h5"), include_optimizer=False)
                done[fmt] = "model_k3.h5"
            elif fmt == "weights.h5":
                model.save_weights(folder / "model.weights.h5")
                done[fmt] = "model.weights.h5"
            elif fmt == "k3_ckpt":
                tf.train.Checkpoint(model=model).write(str(folder / "k3ckpt" / "ckpt"))
                done[fmt] = "k3ckpt/ckpt"
            elif fmt == "tfk.h5":
                model.save(str(folder / "model_tfk.h5"), save_format="h5")
                done[fmt] = "model_tfk.h5"
            elif fmt == "savedmodel":
                model.save(str(folder / "savedmodel"), save_format="tf")
                done[fmt] = "savedmodel"
            elif fmt == "tfk_weights.h5":
                model.save_weights(str(folder / "model_tfk_weights.h5"), save_format="h5")
                done[fmt] = "model_tfk_weights.h5"
            elif fmt == "tfk_ckpt":
                model.save_weights(str(folder / "tfkckpt" / "ckpt"), save_format="tf")
                done[fmt] = "tfkckpt/ckpt"
        except Exception as e:  # noqa: BLE001 - Keras cannot write this model in this format
            done[fmt] = "error: " + f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return done


def one(seed: int, index: int, out: Path, savedmodel_rate: float) -> dict:
    rng = random.Random(f"{seed}:{index}")
    family = rng.choice(["keras3", "tf_keras"])
    folder = out / f"m{index}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    case: dict = {"seed": seed, "index": index, "family": family}
    t0 = time.time()
    try:
        for _attempt in range(5):
            b = Builder(rng, family)
            try:
                model = b.build()
                break
            except Skip:
                continue
        else:
            raise RuntimeError("no model drawn in 5 attempts")
        nrng = np.random.default_rng(rng.getrandbits(32))
        for layer, shape in b.adapt:
            layer.adapt(nrng.normal(0.5, 2.0, (16, *shape)).astype(np.float32))
        randomize(model, nrng)
        xs = make_inputs(b.input_kinds, nrng)
        ys = model(xs if len(xs) > 1 else xs[0], training=False)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        ys = [np.asarray(y) for y in ys]
        if any(not np.all(np.isfinite(y)) for y in ys):
            raise RuntimeError("non-finite Keras output")
        refs, case["reference"] = float64_outputs(model, b.k, xs, ys)
        formats = list(FORMATS[family])
        if family == "tf_keras" and rng.random() > savedmodel_rate:
            formats.remove("savedmodel")
        case["files"] = save_all(model, family, folder, formats)
        case["kinds"] = {f: FORMATS[family][f] for f in formats}
        arrays = {f"in{i}": x for i, x in enumerate(xs)} | {f"out{i}": y for i, y in enumerate(ys)}
        arrays |= {f"ref{i}": y for i, y in enumerate(refs or [])}
        np.savez(folder / "io.npz", **arrays)
        case["inputs"] = b.input_kinds
        case["outputs"] = [list(y.shape[1:]) for y in ys]
        case["layers"] = sorted({type(layer).__name__ for layer in model.layers})
        case["n_layers"] = len(model.layers)
        case["extras"] = sorted(set(b.extras))
        case["flat_fed"] = b.flat_fed
        case["out_scale"] = [float(np.abs(y).max()) for y in ys]
    except Exception as e:  # noqa: BLE001 - Keras could not build, run or save this draw
        case["keras_error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        if os.environ.get("FUZZ_DEBUG"):
            traceback.print_exc()
    case["keras_seconds"] = round(time.time() - t0, 2)
    (folder / "case.json").write_text(json.dumps(case, indent=1))
    return case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--savedmodel-rate", type=float, default=0.35, help="share of tf_keras models also saved as SavedModel"
    )
    ap.add_argument("--extra-rate", type=float, default=0.25, help="share of steps that may draw ops outside the zoo")
    args = ap.parse_args(argv)
    global EXTRA_RATE
    EXTRA_RATE = args.extra_rate
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.start, args.start + args.n):
        case = one(args.seed, i, args.out, args.savedmodel_rate)
        status = case.get("keras_error") or f"{case['family']} {case['n_layers']} layers"
        print(f"[keras] seed {args.seed} model {i}: {status} ({case['keras_seconds']} s)", flush=True)
        import gc

        gc.collect()
        if args.n > 1:
            # Both Keras families keep global state (name uids, graphs) that grows with each model.
            try:
                import keras

                keras.backend.clear_session()
            except Exception:  # noqa: BLE001
                pass
            try:
                import tf_keras

                tf_keras.backend.clear_session()
            except Exception:  # noqa: BLE001
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
