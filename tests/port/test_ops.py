"""Operations on tensors (keras.ops nodes, tf_keras TF ops) against numpy on Keras-layout arrays, with random
operands, layouts and keys: the emitted line, evaluated by torch on the layout the port holds, must give
numpy's answer."""

from __future__ import annotations

import numpy as np
import pytest

from ptools.port.graph import Const
from ptools.port.layers import Ctx, LayerCode, Unsupported, Value
from ptools.port.ops import binary, getitem, reduce

torch = pytest.importorskip("torch")
F = torch.nn.functional


class Self:
    """Collects register_buffer calls of emitted module statements."""

    def register_buffer(self, name, tensor, persistent=True):
        setattr(self, name, tensor)


def _exec_modules(code: LayerCode) -> Self:
    me = Self()
    for _, stmt in code.modules:
        exec(stmt, {"torch": torch, "self": me})
    if code.weights is not None:
        for k, a in code.weights([]).items():
            setattr(me, k, torch.from_numpy(a))
    return me


def evaluate(code: LayerCode, env: dict[str, np.ndarray], values: list[Value]) -> np.ndarray:
    me = _exec_modules(code)
    scope: dict = {"torch": torch, "F": F, "self": me}
    for v in values:
        x = env[v.name]
        scope[v.name] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1) if v.cf and x.ndim > 2 else x))
    for line in code.lines:
        exec(line, scope)
    out = code.outputs[0]
    y = scope[out.name].numpy()
    return np.moveaxis(y, 1, -1) if out.cf and y.ndim > 2 else y


def _ctx(name: str = "op") -> Ctx:
    return Ctx(name, f"{name}_out", True, name)


def test_binary_broadcasting_matches_numpy() -> None:
    rng = np.random.default_rng(20251207)
    ops = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide}
    ops |= {"maximum": np.maximum, "minimum": np.minimum}
    checked = 0
    for trial in range(300):
        rank = int(rng.integers(2, 5))  # with the batch axis
        shape = tuple(int(d) for d in rng.integers(1, 5, rank))
        name = str(rng.choice(list(ops)))
        x = rng.standard_normal(shape).astype(np.float32)
        vx = Value("x", shape[1:], cf=bool(rng.integers(2)) and rank > 2)
        kind = rng.integers(3)
        if kind == 0:  # a scalar
            other, env_other = float(rng.standard_normal()), None
            ref_other = np.float32(other)
        elif kind == 1:  # a constant broadcasting over trailing axes (up to 70 elements: literal or buffer)
            n = int(rng.integers(1, rank + 1))
            cshape = tuple(1 if rng.random() < 0.4 else shape[-n + i] for i in range(n))
            if rng.random() < 0.2:
                cshape = (1,) * int(rng.integers(0, 2)) + cshape
            big = rng.random() < 0.2
            if big:
                cshape = shape[1:]
            ref_other = (rng.standard_normal(cshape) + (3.0 if name == "divide" else 0.0)).astype(np.float32)
            other = Const(ref_other)
        else:  # another tensor of the same shape or broadcastable, possibly in the other layout
            oshape = tuple(1 if (i > 0 and rng.random() < 0.3) else d for i, d in enumerate(shape))
            ref_other = (rng.standard_normal(oshape) + (3.0 if name == "divide" else 0.0)).astype(np.float32)
            other = Value("y", oshape[1:], cf=bool(rng.integers(2)) and rank > 2)
            env_other = ref_other
        swap = bool(rng.integers(2))
        a, b = (other, vx) if swap else (vx, other)
        try:
            code = binary(name, a, b, _ctx(f"op{trial}"))
        except Unsupported:
            continue
        env = {"x": x}
        values = [vx]
        if isinstance(other, Value):
            env["y"] = env_other
            values.append(other)
        got = evaluate(code, env, values)
        want = ops[name](ref_other, x) if swap else ops[name](x, ref_other)
        assert got.shape == want.shape, (code.lines, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(code.lines))
        checked += 1
    assert checked > 250


def test_getitem_matches_numpy() -> None:
    rng = np.random.default_rng(7_2025_12)
    checked = 0
    for _ in range(400):
        rank = int(rng.integers(2, 5))
        shape = (2, *(int(d) for d in rng.integers(1, 6, rank - 1)))
        x = rng.standard_normal(shape).astype(np.float32)
        key: list = [slice(None)]
        for d in shape[1:]:
            r = rng.random()
            if r < 0.25:
                key.append(int(rng.integers(-d, d)))
            elif r < 0.45:
                key.append(slice(None, None, int(rng.choice([-1, -2]))))
            elif r < 0.8:
                start = int(rng.integers(-d, d)) if rng.random() < 0.5 else None
                stop = int(rng.integers(-d, d + 1)) if rng.random() < 0.5 else None
                key.append(slice(start, stop, int(rng.choice([1, 2, 3])) if rng.random() < 0.5 else None))
            else:
                key.append(slice(None))
        if rng.random() < 0.3:  # an ellipsis in place of some leading full slices
            cut = int(rng.integers(1, len(key)))
            key = [Ellipsis, *key[cut:]] if all(k == slice(None) for k in key[:cut]) else key
        if rng.random() < 0.15:
            key.insert(int(rng.integers(1, len(key) + 1)), None)
        v = Value("x", shape[1:], cf=bool(rng.integers(2)) and rank > 2)
        try:
            code = getitem(v, key, _ctx())
        except Unsupported:
            continue
        want = x[tuple(key)]
        got = evaluate(code, {"x": x}, [v])
        assert got.shape == want.shape, (key, code.lines)
        assert code.outputs[0].shape == want.shape[1:], (key, code.outputs[0].shape)
        np.testing.assert_array_equal(got, want, err_msg=f"{key} {code.lines}")
        checked += 1
    assert checked > 300


def test_reductions_match_numpy() -> None:
    rng = np.random.default_rng(99_17)
    fns = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}
    for _ in range(200):
        rank = int(rng.integers(3, 6))
        shape = (2, *(int(d) for d in rng.integers(1, 5, rank - 1)))
        x = rng.standard_normal(shape).astype(np.float32)
        axes = sorted({int(a) for a in rng.integers(1, rank, int(rng.integers(1, rank)))})
        axis = [a - rank if rng.random() < 0.3 else a for a in axes]
        keep = bool(rng.integers(2))
        name = str(rng.choice(list(fns)))
        v = Value("x", shape[1:], cf=bool(rng.integers(2)))
        code = reduce(name, v, axis if len(axis) > 1 else axis[0], keep, _ctx())
        want = fns[name](x, axis=tuple(axes), keepdims=keep)
        got = evaluate(code, {"x": x}, [v])
        assert code.outputs[0].shape == want.shape[1:]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_axis_and_unknown_ops_are_refused() -> None:
    v = Value("x", (4, 5, 3), cf=True)
    with pytest.raises(Unsupported, match="batch axis"):
        reduce("mean", v, None, False, _ctx())
    with pytest.raises(Unsupported, match="batch axis"):
        getitem(v, [0], _ctx())
    with pytest.raises(Unsupported, match="two constants"):
        binary("add", 1.0, 2.0, _ctx())
