"""Sharded checkpoints (an *.index.json weight map over shards, or its folder) read as one checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint import summary as sm
from ptools.cli import app
from tests.checkpoint.torch_files import TinyNet, tiny_state_dict
from tests.conftest import run_ptools


def write_sharded(folder, sd, kind="safetensors", parts=3):
    """What `save_pretrained(max_shard_size=...)` writes: shards plus the index that maps keys to them."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(sd)
    weight_map = {}
    for i in range(parts):
        chunk = keys[i::parts]
        if kind == "safetensors":
            name = f"model-{i + 1:05d}-of-{parts:05d}.safetensors"
            save_file({k: sd[k].contiguous() for k in chunk}, str(folder / name))
        else:
            name = f"pytorch_model-{i + 1:05d}-of-{parts:05d}.bin"
            torch.save({k: sd[k] for k in chunk}, folder / name)
        weight_map.update({k: name for k in chunk})
    index = folder / ("model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json")
    total = sum(v.numel() * v.element_size() for v in sd.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_index_and_folder_read_as_the_whole_state_dict(tmp_path, kind):
    sd = tiny_state_dict()
    index = write_sharded(tmp_path / "hub", sd, kind)
    for target in (index, index.parent):
        with open_checkpoint(target) as reader:
            assert "(sharded)" in reader.format and len(reader.shards) == 3
            infos = {i.key: i for i in reader.tensors()}
            assert set(infos) == set(sd)
            assert all(tuple(infos[k].shape) == tuple(v.shape) for k, v in sd.items())
            for k, v in sd.items():
                assert torch.equal(torch.from_numpy(reader.read(k).copy()), v)
            sel = sm.select(reader)
            report = sm.summarize(reader, sel, 2, None)
    model = TinyNet()
    assert report["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert report["totals"]["buffers"] == sum(b.numel() for b in model.buffers())
    # Storage "0" of one torch shard is not storage "0" of another: nothing is reported as tied.
    assert report["shared_storages"] == []


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_inspect_modes_across_the_shards(runner, tmp_path, kind):
    sd = tiny_state_dict()
    index = write_sharded(tmp_path / "hub", sd, kind)
    single = tmp_path / "single.pt"
    torch.save(sd, single)
    keys = json.loads(runner.invoke(app, ["inspect", str(index.parent), "--keys", "--json"]).stdout)
    assert sorted(r["key"] for r in keys["keys"]) == sorted(sd)
    stats = json.loads(runner.invoke(app, ["inspect", str(index), "--filter", "head.*", "--stats", "--json"]).stdout)
    (bias,) = [r for r in stats["keys"] if r["key"] == "head.bias"]
    assert bias["stats"]["max"] == pytest.approx(sd["head.bias"].max().item())
    diff = runner.invoke(app, ["inspect", str(index.parent), "--diff", str(single), "--stats", "--json"])
    assert diff.exit_code == 0, diff.output
    d = json.loads(diff.stdout)["diff"]
    assert not d["differ"] and d["identical"] == len(sd)
    against = runner.invoke(app, ["inspect", str(index), "--against", "tests.checkpoint.torch_files:TinyNet"])
    assert against.exit_code == 0 and "would accept" in against.stdout, against.output
    summary = json.loads(runner.invoke(app, ["inspect", str(index), "--json"]).stdout)
    assert summary["metadata"]["shards"] == 3 and summary["security"]["findings"] == []
    assert summary["file_size"] == sum(p.stat().st_size for p in index.parent.iterdir())


def test_missing_or_inconsistent_shards_are_one_line_errors(runner, tmp_path):
    sd = tiny_state_dict()
    index = write_sharded(tmp_path / "hub", sd)
    doc = json.loads(index.read_text())
    (tmp_path / "hub" / "model-00002-of-00003.safetensors").unlink()
    result = runner.invoke(app, ["inspect", str(index)])
    assert result.exit_code == 2 and "model-00002-of-00003.safetensors is missing" in result.stderr
    index = write_sharded(tmp_path / "hub2", sd)
    doc = json.loads(index.read_text())
    doc["weight_map"]["not.in.any.shard"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(doc))
    result = runner.invoke(app, ["inspect", str(index)])
    assert result.exit_code == 2 and "not.in.any.shard" in result.stderr and "does not hold it" in result.stderr
    doc["weight_map"] = {"w": "../outside.safetensors"}
    index.write_text(json.dumps(doc))
    result = runner.invoke(app, ["inspect", str(index)])
    assert result.exit_code == 2 and "leaves the index's folder" in result.stderr


def test_sharded_safetensors_inspect_does_not_import_torch(tmp_path):
    index = write_sharded(tmp_path / "hub", tiny_state_dict())
    proc = run_ptools("inspect", str(index.parent), "--json", check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="
