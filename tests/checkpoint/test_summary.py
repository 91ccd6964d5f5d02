"""Selection of the state_dict, wrapper prefixes, the module tree, totals with tied storage, diff and load checks."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint import summary as sm
from ptools.checkpoint.against import check_against, parse_spec
from ptools.checkpoint.diff import diff_selections
from ptools.checkpoint.stats import tensor_stats
from ptools.errors import PtoolsError
from tests.checkpoint.torch_files import TiedNet, TinyNet, save_lightning, save_nested, tiny_state_dict


def test_auto_selects_the_single_state_dict(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_nested(path)
    with open_checkpoint(path) as reader:
        sel = sm.select(reader)
        assert (sel.path, sel.how) == ("model", "auto-detected")
        assert list(sel.infos) == list(TinyNet().state_dict())
        assert sel.full_keys["head.weight"] == "model.head.weight"
        top = {row["key"]: row["summary"] for row in sm.top_level(reader.structure())}
        assert top["epoch"] == "7"
        assert top["model"].startswith(f"state_dict: {len(sel.infos)} tensors")


def test_lightning_checkpoint(tmp_path):
    path = tmp_path / "l.ckpt"
    save_lightning(path)
    with open_checkpoint(path) as reader:
        assert reader.findings() == []  # numpy scalars and Namespace are data
        structure = reader.structure()
        assert sm.checkpoint_kind(structure) == "lightning"
        info = sm.lightning_info(structure)
        assert info["epoch"] == 3 and info["hyper_parameters"]["lr"] == 0.01
        assert info["hyper_parameters"]["depth"] == 4
        sel = sm.select(reader)
        assert sel.path == "state_dict"
        assert all(k.startswith("model.") for k in sel.infos)


def test_ambiguous_and_explicit_key(tmp_path):
    path = tmp_path / "gan.pt"
    torch.save({"G": tiny_state_dict(0), "D": tiny_state_dict(1), "step": 5}, path)
    with open_checkpoint(path) as reader:
        sel = sm.select(reader)
        assert sel.path is None and sorted(sel.candidates) == ["D", "G"] and "--key" in sel.note
        assert sm.select(reader, "D").path == "D"
        with pytest.raises(PtoolsError, match="no key 'E'"):
            sm.select(reader, "E")


def test_conventional_name_wins_over_ema(tmp_path):
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": tiny_state_dict(0), "state_dict_ema": tiny_state_dict(1), "epoch": 9}, path)
    with open_checkpoint(path) as reader:
        sel = sm.select(reader)
    assert (sel.path, sel.how) == ("state_dict", "auto-detected")  # the EMA copy is no rival for the model
    assert "an EMA copy (state_dict_ema)" in sel.note


def test_key_path_with_dotted_dict_keys():
    info = sm.TensorInfo("a.b.c", "float32", (1,), 4)
    structure = {"a.b": {"c": info}}
    node, path = sm.resolve_path(structure, "a.b")
    assert path == "a.b" and node == {"c": info}


def test_wrapper_prefixes_tree_totals_and_tied(tmp_path):
    sd = OrderedDict((f"module._orig_mod.{k}", v) for k, v in TiedNet().state_dict().items())
    path = tmp_path / "ddp.pt"
    torch.save(sd, path)
    with open_checkpoint(path) as reader:
        sel = sm.select(reader)
        assert sel.how == "the file is a state_dict"
        prefixes = {p["prefix"]: p["all"] for p in sm.wrapper_prefixes(list(sel.infos))}
        assert prefixes == {"module.": True, "_orig_mod.": True}
        report = sm.summarize(reader, sel, depth=3, file_size=path.stat().st_size)
    emb = 10 * 4
    assert report["totals"]["params"] == emb  # the tied weight counted once
    assert report["totals"]["tensors"] == 2
    assert report["totals"]["bytes"] == emb * 4
    (group,) = report["shared_storages"]
    assert group["kind"] == "tied (identical views)" and len(group["keys"]) == 2
    tree = report["tree"]
    (module,) = tree["children"]
    assert module["name"] == "module" and module["params"] == emb
    (orig,) = module["children"]
    assert {c["name"] for c in orig["children"]} == {"embed", "out"}
    assert all(c.get("collapsed") for c in orig["children"])  # depth 3 cuts below embed/out


def test_filter_keys():
    sel = sm.Selection(None, "x", {k: None for k in ("enc.0.weight", "enc.0.bias", "head.weight")}, {})
    assert sm.filter_keys(sel, "enc.*") == ["enc.0.weight", "enc.0.bias"]
    assert sm.filter_keys(sel, "weight") == ["enc.0.weight", "head.weight"]  # no wildcard: substring


def test_stats_match_numpy_with_nan_and_inf(tmp_path):
    t = torch.randn(1000, dtype=torch.float64)
    t[3], t[10] = float("nan"), float("inf")
    path = tmp_path / "s.pt"
    torch.save({"t": t}, path)
    finite = t.numpy()[np.isfinite(t.numpy())]
    with open_checkpoint(path) as reader:
        s = tensor_stats(reader, "t")
    assert (s["nan"], s["inf"]) == (1, 1)
    assert s["mean"] == pytest.approx(finite.mean())
    # The sample std (n - 1), as torch's .std() gives it: population std would differ in the 4th digit.
    assert s["std"] == pytest.approx(torch.from_numpy(finite).std().item(), rel=1e-12)
    assert s["std"] != pytest.approx(finite.std(), rel=1e-6)
    assert s["min"] == finite.min() and s["max"] == finite.max()


def test_std_of_a_single_value_is_none(tmp_path):
    path = tmp_path / "one.pt"
    torch.save({"t": torch.tensor([2.5])}, path)
    with open_checkpoint(path) as reader:
        s = tensor_stats(reader, "t")
    assert s["mean"] == 2.5 and s["std"] is None


def test_buffer_keys_by_name_dtype_and_spectral_norm():
    def info(key, dtype="float32", shape=(4,)):
        return sm.TensorInfo(key, dtype, shape, 16)

    infos = [
        info("bn.weight"),
        info("bn.running_mean"),
        info("bn.num_batches_tracked", "int64", ()),
        info("conv.weight_orig"),
        info("conv.weight_u"),
        info("conv.weight_v"),
        info("other.weight_u"),  # no weight_orig next to it: a parameter that happens to end in _u
        info("sn.parametrizations.weight.original"),
        info("sn.parametrizations.weight.0._u"),
        info("bert.embeddings.position_ids", "int64", (1, 4)),
        info("dense/moving_variance/.ATTRIBUTES/VARIABLE_VALUE"),
    ]
    assert sm.buffer_keys(infos) == {
        "bn.running_mean",
        "bn.num_batches_tracked",
        "conv.weight_u",
        "conv.weight_v",
        "sn.parametrizations.weight.0._u",
        "bert.embeddings.position_ids",
        "dense/moving_variance/.ATTRIBUTES/VARIABLE_VALUE",
    }
    t = sm.totals(infos)
    assert (t["params"], t["buffers"], t["buffer_tensors"]) == (4 * 4, 4 + 1 + 4 + 4 + 4 + 4 + 4, 7)


def test_stats_chunking_gives_the_same_answer(tmp_path, monkeypatch):
    from ptools.checkpoint import stats

    t = torch.randn(5, 37)
    path = tmp_path / "s.pt"
    torch.save({"t": t.t()}, path)  # non-contiguous
    with open_checkpoint(path) as reader:
        whole = tensor_stats(reader, "t")
        monkeypatch.setattr(stats, "CHUNK", 7)
        chunked = tensor_stats(reader, "t")
    for k in ("min", "max", "nan", "inf"):
        assert whole[k] == chunked[k]
    assert whole["mean"] == pytest.approx(chunked["mean"]) and whole["std"] == pytest.approx(chunked["std"])


def test_diff_across_formats(tmp_path):
    sd = tiny_state_dict()
    pt, st = tmp_path / "a.pt", tmp_path / "b.safetensors"
    torch.save(sd, pt)
    changed = {k: v.clone() for k, v in sd.items() if k != "head.bias"}
    changed["head.weight"][0, 0] += 0.5
    changed["features.0.weight"] = changed["features.0.weight"].half()
    changed["extra"] = torch.zeros(2)
    save_file(changed, str(st))
    with open_checkpoint(pt) as a, open_checkpoint(st) as b:
        same = diff_selections(a, sm.select(a), a, sm.select(a), values=True)
        d = diff_selections(a, sm.select(a), b, sm.select(b), values=True)
    assert not same["differ"] and same["identical"] == len(sd)
    assert d["differ"]
    assert d["only_in_a"] == ["head.bias"] and d["only_in_b"] == ["extra"]
    assert d["dtype_changed"] == [{"key": "features.0.weight", "a": "float32", "b": "float16"}]
    head = next(v for v in d["value_changed"] if v["key"] == "head.weight")
    assert head["max_abs"] == pytest.approx(0.5) and head["differing"] == 1


def test_against_reports_missing_unexpected_and_fixes(tmp_path):
    sd = TinyNet().state_dict()
    path = tmp_path / "ddp.pt"
    torch.save({"model": OrderedDict((f"module.{k}", v) for k, v in sd.items())}, path)
    spec = "tests.checkpoint.torch_files:TinyNet"
    with open_checkpoint(path) as reader:
        bad = check_against(reader, sm.select(reader), spec)
        ok_path = tmp_path / "ok.pt"
        torch.save(sd, ok_path)
        with open_checkpoint(ok_path) as ok_reader:
            good = check_against(ok_reader, sm.select(ok_reader), spec)
        other = check_against(reader, sm.select(reader), "tests.checkpoint.torch_files:TinyNet(classes=5)")
    assert not bad["ok"] and len(bad["missing"]) == len(sd) == len(bad["unexpected"])
    assert bad["fixes"][0] == {"fix": "strip the 'module.' prefix", "problems_after": 0, "matched_after": len(sd)}
    assert good["ok"] and good["fixes"] == []
    mismatched = {m["key"] for m in other["shape_mismatch"]}
    assert not other["ok"]
    assert bad["missing"] == other["missing"]
    assert mismatched == set()  # prefixes differ, so nothing lines up by name


def test_against_shape_mismatch_and_spec_parsing(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(TinyNet().state_dict(), path)
    with open_checkpoint(path) as reader:
        r = check_against(reader, sm.select(reader), "tests.checkpoint.torch_files:TinyNet(classes=5)")
    assert {m["key"] for m in r["shape_mismatch"]} == {"head.weight", "head.bias"}
    assert parse_spec("torchvision:resnet18(num_classes=10)") == ("torchvision", "resnet18", [], {"num_classes": 10})
    with pytest.raises(PtoolsError):
        parse_spec("no_colon")
    with pytest.raises(PtoolsError, match="literals"):
        parse_spec("m:f(x=open('a'))")


def test_diff_pairs_keys_that_differ_only_by_wrapper_prefixes(tmp_path):
    sd = tiny_state_dict()
    plain, ddp = tmp_path / "plain.pt", tmp_path / "ddp.safetensors"
    torch.save(sd, plain)
    save_file({f"module._orig_mod.{k}": v for k, v in sd.items()}, str(ddp))
    with open_checkpoint(plain) as a, open_checkpoint(ddp) as b:
        d = diff_selections(a, sm.select(a), b, sm.select(b), values=True)
    assert d["only_in_a"] == [] and d["only_in_b"] == []
    assert len(d["renamed"]) == len(sd) and d["identical"] == len(sd) and d["value_changed"] == []
    assert d["differ"] and "paired after stripping" in d["hint"]
