"""The port fuzzer's judge of outputs (tests/port_fuzzing.output_errors): Keras' float64 twin as the reference,
Keras' own float32 round-off allowed, and nothing more."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.port_fuzzing import output_errors

RTOL = 1e-4


def _io(out: list[np.ndarray], ref: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    io = {f"out{i}": y.astype(np.float32) for i, y in enumerate(out)}
    return io | {f"ref{i}": y for i, y in enumerate(ref or [])}


def _layer_norm_one_feature() -> tuple[np.ndarray, np.ndarray]:
    """As fuzz seed 83351 model 148 / seed 61487 model 648: LayerNormalization over one feature, exactly beta,
    which Keras' float32 run missed by 4.5e-4 (round-off of x - mean times 1/sqrt(1e-6))."""
    exact = np.full((2, 10, 1), -0.3208355903625488)
    keras_f32 = exact.copy()
    keras_f32[0, 4, 0] -= 4.5347e-4
    return exact, keras_f32


def test_a_port_that_gives_the_exact_result_is_exact_against_the_float64_twin() -> None:
    exact, keras_f32 = _layer_norm_one_feature()
    port = exact.astype(np.float32)
    assert not output_errors([port], _io([keras_f32]), RTOL)["ok"]  # float32 Keras alone: judged wrong
    res = output_errors([port], _io([keras_f32], [exact]), RTOL)
    assert res["ok"]
    assert res["max_err"] < 1e-7
    assert abs(res["keras_f32_err"] - 4.5347e-4) < 1e-6


def test_a_port_as_far_off_as_keras_float32_is_exact_and_further_is_wrong() -> None:
    exact, keras_f32 = _layer_norm_one_feature()
    io = _io([keras_f32], [exact])
    assert output_errors([keras_f32.astype(np.float32)], io, RTOL)["ok"]
    port = exact.astype(np.float32)
    port[1, 2, 0] += 6e-4  # over rtol x 1 + 4.5e-4 of round-off: a systematic error stays WRONG
    res = output_errors([port], io, RTOL)
    assert not res["ok"]
    assert res["max_err"] > 5.5e-4


def test_one_outputs_round_off_does_not_widen_another_outputs_tolerance() -> None:
    exact, keras_f32 = _layer_norm_one_feature()
    clean = np.linspace(-0.2, 0.2, 24).reshape(2, 3, 4)
    io = _io([keras_f32, clean], [exact, clean])
    good = [exact.astype(np.float32), clean.astype(np.float32)]
    assert output_errors(good, io, RTOL)["ok"]
    bad = [good[0], good[1] + np.float32(3e-4)]  # within output 0's round-off, not within output 1's (none)
    assert not output_errors(bad, io, RTOL)["ok"]


def test_without_a_float64_reference_the_judge_is_the_float32_one() -> None:
    y = np.linspace(-3, 3, 12).reshape(2, 6)
    io = _io([y])
    assert output_errors([y.astype(np.float32) + np.float32(2.9e-4)], io, RTOL)["ok"]  # scale 3: 3e-4 allowed
    res = output_errors([y.astype(np.float32) + np.float32(3.1e-4)], io, RTOL)
    assert not res["ok"]
    assert "keras_f32_err" not in res


def test_a_shape_difference_is_an_infinite_error() -> None:
    y = np.zeros((2, 3))
    res = output_errors([np.zeros((2, 4), np.float32)], _io([y], [y]), RTOL)
    assert not res["ok"]
    assert res["max_err"] == float("inf")


def test_the_corpus_keeps_a_real_keras_model_whose_float32_run_is_off_by_more_than_rtol() -> None:
    """tests/fixtures/fuzz/s83351_m148 (real tf_keras): its float32 outputs alone would judge the exact port
    wrong, so test_fuzz_corpus guards the float64 reference on a genuine model, not only on made-up arrays."""
    io = dict(np.load(Path(__file__).resolve().parents[1] / "fixtures" / "fuzz" / "s83351_m148" / "io.npz"))
    assert io["ref0"].dtype == np.float64
    off = float(np.abs(io["out0"] - io["ref0"]).max())
    assert off > 3 * RTOL
    assert float(np.abs(io["ref0"] - io["ref0"].ravel()[0]).max()) < 1e-12  # LayerNorm of one feature: beta


def test_a_module_exact_only_without_onednn_is_a_torch_bug_not_a_port_bug() -> None:
    # Seed 61487 model 987: a conv on a (N, 1, 2, 1) view whose strides look channels-last came out 0.48 under
    # torch's oneDNN kernels and 0.198 (TF's and a hand sum's value) without them. A stand-in module whose
    # output depends on that switch is classified by running it again with the switch off.
    import argparse

    import torch

    from tests.port_fuzzing import _torch_or_wrong

    class Switch(torch.nn.Module):
        def __init__(self, bad: bool) -> None:
            super().__init__()
            self.bad = bad

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + (0.3 if self.bad and torch._C._get_mkldnn_enabled() else 0.0)

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    io = {"in0": x, "out0": x + 0.3}  # Keras' answer: x + 0.3
    doc = {"inputs": [{"channels_first": False}], "outputs": [{"channels_first": False}]}
    opts = argparse.Namespace(rtol=RTOL)
    was = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(True)
    try:
        # Right only with oneDNN on: the same module without it is wrong, so it is a port bug.
        assert _torch_or_wrong(Switch(bad=True), io, doc, opts, {}) == "WRONG"
        io = {"in0": x, "out0": x}  # Keras' answer: x; the module is off by 0.3 only under oneDNN
        res: dict = {}
        assert _torch_or_wrong(Switch(bad=True), io, doc, opts, res) == "torch-bug"
        assert "mkldnn off" in res["message"]
        assert torch._C._get_mkldnn_enabled()  # the switch is restored
    finally:
        torch._C._set_mkldnn_enabled(was)
