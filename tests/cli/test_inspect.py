"""`ptools inspect` end to end: every mode's output and JSON, exit codes, payloads that never run, lazy torch."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from ptools.cli import app
from tests.checkpoint.torch_files import (
    PAYLOAD_KINDS,
    TinyNet,
    save_bare_pickle,
    save_lightning,
    save_malicious,
    save_nested,
    tiny_state_dict,
)
from tests.conftest import run_ptools


def _json(result) -> dict:
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ptools.inspect/1"
    return doc


@pytest.fixture
def nested(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_nested(path)
    return path


def test_default_summary_human_and_json(runner, nested):
    result = runner.invoke(app, ["inspect", str(nested)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "torch-zip" in out and "state_dict: 'model' (auto-detected" in out
    assert "optimizer" in out and "features" in out and "only allow-listed globals" in out
    doc = _json(runner.invoke(app, ["inspect", str(nested), "--json", "--depth", "1"]))
    assert doc["mode"] == "summary" and doc["format"] == "torch-zip"
    assert doc["values"] == {"epoch": 7}
    assert doc["selection"]["path"] == "model"
    sd = TinyNet().state_dict()
    assert doc["totals"]["tensors"] == len(sd)
    model = TinyNet()
    assert doc["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert doc["totals"]["buffers"] == sum(b.numel() for b in model.buffers())
    assert {c["name"] for c in doc["tree"]["children"]} == {"features", "head"}
    assert all(c.get("collapsed") for c in doc["tree"]["children"])
    assert doc["security"]["grade"] == "safe"
    assert doc["file_size"] == nested.stat().st_size


def test_keys_filter_and_stats(runner, nested):
    doc = _json(runner.invoke(app, ["inspect", str(nested), "--keys", "--json"]))
    assert [r["key"] for r in doc["keys"]] == list(TinyNet().state_dict())
    doc = _json(runner.invoke(app, ["inspect", str(nested), "--filter", "head.*", "--stats", "--json"]))
    assert doc["mode"] == "stats"
    assert [r["key"] for r in doc["keys"]] == ["head.weight", "head.bias"]
    weight = torch.load(nested, weights_only=True)["model"]["head.weight"]
    stats = doc["keys"][0]["stats"]
    assert stats["max"] == pytest.approx(float(weight.max())) and stats["nan"] == 0
    result = runner.invoke(app, ["inspect", str(nested), "--key", "optimizer.state", "--keys"])
    assert result.exit_code == 0 and "0.exp_avg" in result.stdout


def test_lightning_summary(runner, tmp_path):
    path = tmp_path / "last.ckpt"
    save_lightning(path)
    doc = _json(runner.invoke(app, ["inspect", str(path), "--json"]))
    assert doc["kind"] == "lightning" and doc["selection"]["path"] == "state_dict"
    assert doc["lightning"]["hyper_parameters"]["lr"] == 0.01
    assert doc["security"]["findings"] == []


def test_wrapper_prefix_is_reported(runner, tmp_path):
    path = tmp_path / "ddp.pt"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in tiny_state_dict().items()), path)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0
    assert "prefix 'module.' on every key" in result.stdout


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_malicious_file_never_runs_and_exits_1(runner, tmp_path, kind):
    target = tmp_path / "side-effect"
    path = tmp_path / "evil.pt"
    save_malicious(path, kind, target)
    for args in (["inspect", str(path)], ["inspect", str(path), "--scan", "--json"], ["inspect", str(path), "--keys"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert not target.exists()
    doc = _json(runner.invoke(app, ["inspect", str(path), "--scan", "--json"]))
    assert doc["security"]["grade"] == "dangerous"
    assert [f["where"] for f in doc["security"]["findings"]] == [["config.payload"]]


def test_malicious_legacy_and_bare_pickle_in_a_fresh_process(tmp_path):
    target = tmp_path / "side-effect"
    legacy, bare = tmp_path / "legacy.pt", tmp_path / "model.bin"
    save_malicious(legacy, "os.system", target, legacy=True)
    save_bare_pickle(bare, "exec", target)
    for path in (legacy, bare):
        proc = run_ptools("inspect", str(path), "--stats")
        assert proc.returncode == 1, proc.stderr
        assert "UNSAFE" in proc.stdout
        assert not target.exists()


def test_scan_of_clean_files(runner, nested, tmp_path):
    result = runner.invoke(app, ["inspect", str(nested), "--scan"])
    assert result.exit_code == 0 and "0 suspicious, 0 dangerous" in result.stdout
    st = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(st))
    doc = _json(runner.invoke(app, ["inspect", str(st), "--scan", "--json"]))
    assert doc["security"]["pickle"] is False and doc["security"]["grade"] == "none"
    result = runner.invoke(app, ["inspect", str(nested), "--scan", "--keys"])
    assert result.exit_code == 2


def test_diff_exit_codes_and_json(runner, tmp_path):
    sd = tiny_state_dict()
    a, same, b = tmp_path / "a.pt", tmp_path / "same.safetensors", tmp_path / "b.safetensors"
    torch.save(sd, a)
    save_file(dict(sd), str(same))
    changed = dict(sd)
    changed["head.weight"] = changed["head.weight"] + 1
    save_file(changed, str(b))
    result = runner.invoke(app, ["inspect", str(a), "--diff", str(same), "--stats"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["inspect", str(a), "--diff", str(b)])
    assert result.exit_code == 0  # same keys/shapes/dtypes: values are only compared with --stats
    result = runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--stats", "--json"])
    assert result.exit_code == 1
    doc = _json(result)
    assert doc["mode"] == "diff" and [v["key"] for v in doc["diff"]["value_changed"]] == ["head.weight"]
    assert doc["diff"]["value_changed"][0]["max_abs"] == pytest.approx(1.0)


def test_against(runner, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": OrderedDict((f"_orig_mod.{k}", v) for k, v in TinyNet().state_dict().items())}, path)
    result = runner.invoke(app, ["inspect", str(path), "--against", "tests.checkpoint.torch_files:TinyNet"])
    assert result.exit_code == 1
    assert "strip the '_orig_mod.' prefix: 0 problems left" in result.stdout
    good = tmp_path / "good.pt"
    torch.save(TinyNet().state_dict(), good)
    doc = _json(
        runner.invoke(app, ["inspect", str(good), "--against", "tests.checkpoint.torch_files:TinyNet", "--json"])
    )
    assert doc["against"]["ok"] is True and doc["mode"] == "against"
    result = runner.invoke(app, ["inspect", str(good), "--against", "torchvision:resnet18"])
    assert result.exit_code == 1 and "missing in the file" in result.stdout


def test_unsafe_is_explicit_and_warns(runner, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module: not loadable with weights_only
    assert runner.invoke(app, ["inspect", str(path)]).exit_code == 1
    result = runner.invoke(app, ["inspect", str(path), "--unsafe", "--json"])
    assert result.exit_code == 1, result.output  # loaded, but the findings still stand
    assert "RUNS NOW" in result.stderr and "torch.nn.modules.linear.Linear" in result.stderr
    doc = _json(result)
    assert doc["format"] == "torch-unsafe" and doc["security"]["grade"] == "suspicious"
    assert sorted(r["name"] for r in doc["tree"]["children"]) == ["bias", "weight"]


def test_legacy_and_torchscript_say_which_path(runner, tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(tiny_state_dict(), legacy, _use_new_zipfile_serialization=False)
    doc = _json(runner.invoke(app, ["inspect", str(legacy), "--json"]))
    assert doc["format"] == "torch-legacy" and "torch.load(weights_only=True)" in doc["metadata"]["reader"]
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 3)).save(str(scripted))
    doc = _json(runner.invoke(app, ["inspect", str(scripted), "--json"]))
    assert doc["format"] == "torchscript" and "never run" in doc["metadata"]["reader"]
    assert doc["totals"]["params"] == 9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b"PK\x03\x04garbage", "zip"),
    ],
)
def test_not_a_checkpoint_is_one_line_exit_2(runner, tmp_path, content, message):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptools: error:") and message in lines[0], result.stderr
    assert "internal error" not in result.stderr


def test_truncated_checkpoint_in_a_fresh_process(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(tiny_state_dict(), path)
    path.write_bytes(path.read_bytes()[:700])
    proc = run_ptools("inspect", str(path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_inspect_does_not_import_torch(tmp_path, fmt):
    path = tmp_path / f"m.{fmt}"
    sd = {k: v for k, v in tiny_state_dict().items() if v.dtype != torch.int64}
    sd["bf"] = torch.ones(3, dtype=torch.bfloat16)
    if fmt == "pt":
        torch.save({"model": sd, "epoch": 1}, path)
    else:
        save_file(sd, str(path))
    proc = run_ptools("inspect", str(path), "--stats", check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout[-300:]


@pytest.mark.parametrize("variant", ["legacy-cut", "safetensors-header", "pickle-garbage", "zip-cut"])
def test_damaged_files_are_one_line_errors(runner, tmp_path, variant):
    sd = tiny_state_dict()
    path = tmp_path / "damaged.bin"
    if variant == "legacy-cut":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:200])
    elif variant == "safetensors-header":
        save_file(dict(sd), str(path))
        data = bytearray(path.read_bytes())
        data[9:12] = b"###"  # invalid JSON right after the opening brace
        path.write_bytes(bytes(data))
    elif variant == "pickle-garbage":
        path.write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00a\xff\xfe")
    else:
        torch.save(sd, path)
        path.write_bytes(path.read_bytes()[:-100])
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptools: error:"), result.stderr
    assert "internal error" not in lines[0]
    doc = json.loads(result.stdout)  # --json: the error as a document too, naming the file
    assert doc["schema"] == "ptools.error/1" and doc["file"] == str(path) and doc["exit_code"] == 2


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_params_and_buffers_are_counted_apart_like_torchvision(runner, tmp_path, fmt):
    """resnet18: 11,689,512 parameters (torchinfo, the paper); the 9,620 running-stat values are buffers."""
    import torchvision

    model = torchvision.models.resnet18()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"r18.{fmt}"
    if fmt == "pt":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert params == 11_689_512
    doc = _json(runner.invoke(app, ["inspect", str(path), "--json", "--depth", "1"]))
    t = doc["totals"]
    assert (t["params"], t["buffers"], t["buffer_tensors"]) == (params, buffers, len(list(model.buffers())))
    bn1 = next(c for c in doc["tree"]["children"] if c["name"] == "bn1")
    assert (bn1["params"], bn1["buffers"]) == (2 * 64, 2 * 64 + 1)
    human = runner.invoke(app, ["inspect", str(path)]).stdout
    assert "11,689,512 parameters" in human and "buffers" in human
    against = _json(runner.invoke(app, ["inspect", str(path), "--against", "torchvision:resnet18", "--json"]))
    counts = against["against"]["counts"]
    assert (counts["params"], counts["buffers"], counts["not_in_model"]) == (params, buffers, 0)


def test_against_counts_by_the_model_even_for_unknown_buffer_names(runner, tmp_path):
    class WithBuffer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("scale_table", torch.ones(5))  # a float buffer no name rule knows

    path = tmp_path / "m.pt"
    torch.save(WithBuffer().state_dict(), path)
    module = tmp_path / "withbuf.py"
    module.write_text(
        "import torch\n"
        "class WithBuffer(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(2, 2)\n"
        "        self.register_buffer('scale_table', torch.ones(5))\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        doc = _json(runner.invoke(app, ["inspect", str(path), "--against", "withbuf:WithBuffer", "--json"]))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("withbuf", None)
    assert doc["against"]["counts"]["params"] == 6 and doc["against"]["counts"]["buffers"] == 5
    guessed = _json(runner.invoke(app, ["inspect", str(path), "--json"]))["totals"]
    assert guessed["params"] == 11  # without a model, an unknown float buffer reads as a parameter


# ------------------------------------------------------------------------------------------ --diff


def _sd_pair(tmp_path, b_transform, a_name="a.pt", b_name="b.pt"):
    torch.manual_seed(0)
    sd = {f"layers.{i}.weight": torch.randn(8, 8) for i in range(4)}
    a, b = tmp_path / a_name, tmp_path / b_name
    torch.save(sd, a)
    torch.save(b_transform(sd), b)
    return a, b


def test_diff_fp16_copy_passes_within_a_tolerance(runner, tmp_path):
    a, b = _sd_pair(tmp_path, lambda sd: {k: v.half() for k, v in sd.items()})
    plain = runner.invoke(app, ["inspect", str(a), "--diff", str(b)])
    assert plain.exit_code == 1 and "dtype changed" in plain.stdout
    doc = _json(runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--stats", "--json"]))
    assert len(doc["diff"]["value_changed"]) == 4  # fp16 rounding: exact comparison sees it
    tol = runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--rtol", "1e-3", "--atol", "1e-4", "--json"])
    assert tol.exit_code == 0, tol.stdout
    d = json.loads(tol.stdout)["diff"]
    assert not d["differ"] and d["identical"] == 4 and len(d["dtype_changed"]) == 4 and d["values_compared"]
    assert (d["atol"], d["rtol"]) == (1e-4, 1e-3)
    # A real change stays a difference within the same tolerance.
    c = tmp_path / "c.pt"
    changed = {k: v.half() for k, v in torch.load(a).items()}
    changed["layers.2.weight"][0, 0] += 0.5
    torch.save(changed, c)
    bad = runner.invoke(app, ["inspect", str(a), "--diff", str(c), "--rtol", "1e-3", "--atol", "1e-4", "--json"])
    assert bad.exit_code == 1
    (row,) = json.loads(bad.stdout)["diff"]["value_changed"]
    assert row["key"] == "layers.2.weight" and row["differing"] == 1
    alone = runner.invoke(app, ["inspect", str(a), "--atol", "1e-3"])
    assert alone.exit_code == 2 and "--diff" in alone.stderr


def test_diff_shows_the_largest_differences_first(runner, tmp_path):
    def shift(sd):
        return {k: v + (0.1 * (i + 1) if i % 2 else 0.01 * (i + 1)) for i, (k, v) in enumerate(sd.items())}

    a, b = _sd_pair(tmp_path, shift)
    doc = _json(runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--stats", "--json"]))
    rows = doc["diff"]["value_changed"]
    assert [r["max_abs"] for r in rows] == sorted((r["max_abs"] for r in rows), reverse=True)
    assert rows[0]["key"] == "layers.3.weight"
    human = runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--stats"]).stdout
    order = [line.split()[0] for line in human.splitlines() if line.startswith("layers.")]
    assert order == [r["key"] for r in rows]


def test_diff_pairs_keys_that_differ_by_the_lightning_model_prefix(runner, tmp_path):
    a, b = _sd_pair(tmp_path, lambda sd: {"model." + k: v for k, v in sd.items()})
    doc = _json(runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--stats", "--json"]))
    d = doc["diff"]
    assert d["only_in_a"] == [] and d["only_in_b"] == [] and d["identical"] == 4
    assert len(d["renamed"]) == 4 and "'model.'" in d["hint"]
    # Lightning's nested checkpoint, model. keys under state_dict, against the bare weights.
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": torch.load(b), "epoch": 3, "pytorch-lightning_version": "2.4.0"}, ckpt)
    d = _json(runner.invoke(app, ["inspect", str(ckpt), "--diff", str(a), "--json"]))["diff"]
    assert d["only_in_a"] == [] and d["only_in_b"] == [] and len(d["renamed"]) == 4


def test_diff_rows_are_capped_with_a_count_of_the_rest(runner, tmp_path):
    a, b = _sd_pair(tmp_path, lambda sd: sd)
    big_a = {f"w{i}": torch.zeros(2) for i in range(70)}
    big_b = {f"w{i}": torch.zeros(3) for i in range(70)}
    torch.save(big_a, a)
    torch.save(big_b, b)
    result = runner.invoke(app, ["inspect", str(a), "--diff", str(b)])
    assert result.exit_code == 1
    assert "... and 10 more (--json lists all)" in result.stdout
    assert sum(line.startswith("w") for line in result.stdout.splitlines()) == 60
    assert (
        len(_json(runner.invoke(app, ["inspect", str(a), "--diff", str(b), "--json"]))["diff"]["shape_changed"]) == 70
    )


def test_filter_that_matches_nothing_says_how_globs_match(runner, nested):
    result = runner.invoke(app, ["inspect", str(nested), "--filter", "features.*weigh"])
    assert result.exit_code == 0
    assert "0 keys" in result.stdout and "whole key" in result.stdout and "'*features.*weigh*'" in result.stdout
    doc = _json(runner.invoke(app, ["inspect", str(nested), "--filter", "nothing_like_this", "--json"]))
    assert doc["keys"] == [] and "anywhere in the key" in doc["filter_note"]
    found = _json(runner.invoke(app, ["inspect", str(nested), "--filter", "features.*weight", "--json"]))
    assert found["keys"] and found["filter_note"] is None


def test_many_candidate_state_dicts_are_listed_with_a_count(runner, tmp_path):
    path = tmp_path / "many.pt"
    torch.save({f"net{i}": {"w": torch.ones(2)} for i in range(20)}, path)
    doc = _json(runner.invoke(app, ["inspect", str(path), "--json"]))
    assert len(doc["selection"]["candidates"]) == 20
    assert "20 model state_dicts" in doc["selection"]["note"] and "... and 12 more" in doc["selection"]["note"]


def test_long_top_level_and_shared_storage_lists_are_capped(runner, tmp_path):
    path = tmp_path / "wide.pt"
    shared = torch.zeros(4)
    torch.save({"net": {f"w{i}": shared for i in range(10)}, **{f"meta{i}": i for i in range(70)}}, path)
    out = runner.invoke(app, ["inspect", str(path), "--key", "net"]).stdout
    assert "... and 11 more (--json lists all)" in out  # 71 top-level keys, 60 shown
    assert "w0, w1, w2, w3, w4, w5 ... and 4 more" in out
    doc = _json(runner.invoke(app, ["inspect", str(path), "--key", "net", "--json"]))
    assert len(doc["top_level"]) == 71 and len(doc["shared_storages"][0]["keys"]) == 10
