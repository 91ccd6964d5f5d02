"""Converting the TensorFlow-written fixtures of tests/fixtures/tf (made by make_tf_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ptools.cli import app
from ptools.convert.api import ConvertOptions, plan

TF = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
V = "/.ATTRIBUTES/VARIABLE_VALUE"


def _sd(p) -> dict[str, np.ndarray]:
    return {t.key: np.array(t.make()) for t in p.out_tensors()}


def test_tf1_saver_names_values_slots_ema() -> None:
    exp = np.load(TF / "tf1_saver.expected.npz")
    sd = _sd(plan(TF / "tf1_saver", ConvertOptions()))
    assert set(sd) == {"generator.dense.weight", "generator.dense.bias", "generator.emb.table"}
    np.testing.assert_array_equal(sd["generator.dense.weight"], exp["generator/dense/kernel"].T)
    np.testing.assert_array_equal(sd["generator.emb.table"], exp["generator/emb/table"])
    ema = _sd(plan(TF / "tf1_saver", ConvertOptions(ema=True)))
    np.testing.assert_array_equal(
        ema["generator.dense.weight"], exp["generator/dense/kernel/ExponentialMovingAverage"].T
    )
    np.testing.assert_array_equal(ema["generator.emb.table"], exp["generator/emb/table"])  # no shadow: weight kept
    opt = _sd(plan(TF / "tf1_saver", ConvertOptions(include_optimizer=True)))
    assert {"generator.dense.kernel.Adam_1", "global_step", "beta1_power"} <= set(opt)


def test_tf2_keras_adam_object_graph() -> None:
    exp = np.load(TF / "tf2_keras_adam.expected.npz")
    p = plan(TF / "tf2_keras_adam", ConvertOptions())
    sd = _sd(p)
    assert list(sd) == [
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
        "head.weight",
        "head.bias",
    ]
    np.testing.assert_array_equal(sd["conv.weight"], exp[f"layer_with_weights-0/kernel{V}"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(sd["bn.running_var"], exp[f"layer_with_weights-1/moving_variance{V}"])
    np.testing.assert_array_equal(sd["head.weight"], exp[f"layer_with_weights-2/kernel{V}"].T)
    roles = {s.role for s in p.skipped}
    assert roles == {"optimizer", "counter"}
    assert sum(1 for s in p.skipped if s.role == "optimizer" and s.key.endswith(("/m", "/v"))) == 12


def test_tf2_keras3_checkpoint_by_order(tmp_path: Path) -> None:
    # Keras 3 + tf.train.Checkpoint: trainable weights live under optimizer/_trainable_variables/N.
    exp = np.load(TF / "tf2_keras3.expected.npz")
    target = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    ref = tmp_path / "ref.pt"
    torch.save(target.state_dict(), ref)
    p = plan(TF / "tf2_keras3", ConvertOptions(template=ref))
    assert p.ok, (p.unfilled, p.ambiguous)
    assert {p.how[id(i)] for i in p.written} == {"order"}
    sd = _sd(p)
    np.testing.assert_array_equal(sd["0.weight"], exp[f"optimizer/_trainable_variables/0{V}"].T)
    np.testing.assert_array_equal(sd["1.running_mean"], exp[f"model/_functional/_operations/2/moving_mean{V}"])
    np.testing.assert_array_equal(sd["2.bias"], exp[f"optimizer/_trainable_variables/5{V}"])


def test_tf2_dtypes_preserved_in_safetensors(runner, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    exp = np.load(TF / "tf2_dtypes.expected.npz")
    out = tmp_path / "d.safetensors"
    r = runner.invoke(app, ["convert", str(TF / "tf2_dtypes.index"), str(out), "--json"])
    assert r.exit_code == 0, r.output
    got = load_file(out)
    assert got["bf16"].dtype == torch.bfloat16
    np.testing.assert_array_equal(got["bf16"].view(torch.int16).numpy().view(np.uint16), exp[f"bf16{V}"])
    assert got["f16"].dtype == torch.float16 and got["flag"].dtype == torch.bool
    np.testing.assert_array_equal(got["u64"].numpy() if hasattr(got["u64"], "numpy") else got["u64"], exp[f"u64{V}"])
    np.testing.assert_array_equal(got["flag"].numpy(), exp[f"flag{V}"])
    assert "c64" not in got  # complex has no safetensors dtype: skipped and reported


def test_tf2_sliced_variable_reassembled() -> None:
    exp = np.load(TF / "tf2_sliced.expected.npz")
    sd = _sd(plan(TF / "tf2_sliced", ConvertOptions()))
    np.testing.assert_array_equal(sd["big"], exp[f"big{V}"])
