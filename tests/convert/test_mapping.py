"""Name mapping: --map rules (JSON/TOML), heuristics, order/role/shape matching, ambiguity and mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ptools.checkpoint.tf.writer import TFBundleWriter
from ptools.cli import app
from ptools.convert.api import ConvertOptions, plan
from ptools.errors import PtoolsError

KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
LEGACY = KERAS / "legacy_model.h5"


def _rules(tmp_path: Path, rules: list[dict], name: str = "rules.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"rules": rules}))
    return p


def _keys(p) -> dict[str, str]:
    return {p.targets[id(i)]: p.how[id(i)] for i in p.written}


def test_path_rule_renames_layer_and_its_synthetic_tensors(tmp_path: Path) -> None:
    r = _rules(tmp_path, [{"pattern": r"(conv|bn)/(.*)", "replace": r"features/\1/\2"}])
    keys = _keys(plan(LEGACY, ConvertOptions(rules=r)))
    assert keys["features.conv.weight"] == "rule"
    assert keys["features.bn.running_var"] == "rule"
    assert keys["features.bn.num_batches_tracked"] == "rule"  # no source, follows its layer
    assert "bn.weight" not in keys and keys["dw.weight"] == "heuristic"


def test_full_name_rule_and_layer_siblings(tmp_path: Path) -> None:
    r = _rules(tmp_path, [{"pattern": "conv/kernel", "replace": "stem.0.weight"}])
    keys = _keys(plan(LEGACY, ConvertOptions(rules=r)))
    assert "stem.0.weight" in keys and "stem.0.bias" in keys and "conv.bias" not in keys


def test_toml_rules_skip_and_transform(tmp_path: Path) -> None:
    p = tmp_path / "rules.toml"
    p.write_text(
        '[[rule]]\npattern = "emb/.*"\nskip = true\n\n'
        '[[rule]]\npattern = "conv/kernel"\ntransform = "permute(3,2,1,0)"\n'
    )
    pl = plan(LEGACY, ConvertOptions(rules=p))
    sd = {pl.targets[id(i)]: np.asarray(i.make()) for i in pl.written}
    assert "emb.weight" not in sd and "emb/embeddings" in pl.rule_skipped
    from ptools.checkpoint import open_checkpoint

    with open_checkpoint(LEGACY) as rd:
        k = rd.read("conv/kernel")
    np.testing.assert_array_equal(sd["conv.weight"], k.transpose(3, 2, 1, 0))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"pattern": "("}], "bad regex"),
        ([{"pattern": "x", "transform": "spin"}], "unknown transform"),
        ([{"pattern": "x"}], "needs"),
    ],
)
def test_bad_rules_are_usage_errors(tmp_path: Path, rules: list[dict], message: str) -> None:
    with pytest.raises(PtoolsError, match=message):
        plan(LEGACY, ConvertOptions(rules=_rules(tmp_path, rules)))


def _dense_bundle(folder: Path) -> Path:
    prefix = folder / "m"
    rng = np.random.default_rng(1)
    with TFBundleWriter(prefix) as w:
        w.add("a/kernel", rng.standard_normal((4, 4)).astype(np.float32))
        w.add("a/bias", rng.standard_normal(4).astype(np.float32))
    return prefix


def _template(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.zeros(s, np.float32) for k, s in shapes.items()}, str(path))
    return path


def test_ambiguous_order_is_reported_not_guessed(runner, tmp_path: Path) -> None:
    prefix = _dense_bundle(tmp_path)
    tpl = _template(
        tmp_path / "t.safetensors", {"x.weight": (4, 4), "x.bias": (4,), "y.weight": (4, 4), "y.bias": (4,)}
    )
    out = tmp_path / "o.safetensors"
    r = runner.invoke(app, ["convert", str(prefix), str(out), "--template", str(tpl), "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ambiguous"] and set(doc["ambiguous"][0]["candidates"]) == {"x", "y"}
    assert {u["key"] for u in doc["unfilled_target"]} == {"x.weight", "x.bias", "y.weight", "y.bias"}
    assert not out.exists() and doc["written"] is False


def test_shape_mismatch_and_unfilled_exit_1(runner, tmp_path: Path) -> None:
    prefix = _dense_bundle(tmp_path)
    tpl = _template(tmp_path / "t.safetensors", {"a.weight": (4, 5), "a.bias": (4,), "extra.weight": (2,)})
    r = runner.invoke(app, ["convert", str(prefix), str(tmp_path / "o.pt"), "--template", str(tpl), "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["shape_mismatch"] == [
        {"source": ["a/kernel"], "target": "a.weight", "converted_shape": [4, 4], "target_shape": [4, 5]}
    ]
    assert [u["key"] for u in doc["unfilled_target"]] == ["extra.weight"]
    assert not (tmp_path / "o.pt").exists()


def test_order_match_with_model_file_factory(runner, tmp_path: Path) -> None:
    prefix = _dense_bundle(tmp_path)
    (tmp_path / "netdef.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(4, 4))\n"
    )
    out = tmp_path / "o.pt"
    r = runner.invoke(app, ["convert", str(prefix), str(out), "--model", f"{tmp_path / 'netdef.py'}:make", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [(t["target"], t["match"]) for t in doc["tensors"]] == [("0.weight", "order"), ("0.bias", "order")]
    import torch

    sd = torch.load(out, weights_only=True)
    assert list(sd) == ["0.weight", "0.bias"]


def test_library_convert_writes_only_when_ok(tmp_path: Path) -> None:
    from safetensors import safe_open

    from ptools.convert.api import convert

    out = tmp_path / "m.safetensors"
    p, written = convert(LEGACY, out, ConvertOptions())
    assert written and p.ok
    with safe_open(str(out), "np") as f:
        assert f.metadata()["format"] == "pt"
        assert f.get_tensor("head.weight").shape == (4, 24)
    tpl = _template(tmp_path / "t.safetensors", {"only.weight": (1,)})
    p, written = convert(LEGACY, tmp_path / "n.safetensors", ConvertOptions(template=tpl))
    assert not written and not p.ok and not (tmp_path / "n.safetensors").exists()
