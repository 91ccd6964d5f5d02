"""`ptools inspect` on TF and Keras checkpoints: weights by name, training state apart, roles in --keys/--json."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ptools.checkpoint import open_checkpoint
from ptools.cli import app

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
ADAM = FIX / "tf2_keras_adam"


def _json(result) -> dict:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _keras_h5_like(tf_prefix: Path, path: Path, optimizer: bool = False, bump: str | None = None) -> list[str]:
    """A legacy Keras weights file holding the TF checkpoint's weights under their variable names."""
    with open_checkpoint(tf_prefix) as r:
        weights = [(v.name, r.read(v.key)) for v in r.variables()]
    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, value in weights:
        layers.setdefault(name.split("/")[0], []).append((name, value + (1 if name == bump else 0)))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for lname, items in layers.items():
            g = f.create_group(lname)
            g.attrs["weight_names"] = np.array([f"{n}:0".encode() for n, _ in items])
            for n, value in items:
                g.create_dataset(f"{n}:0", data=value)
        if optimizer:
            o = f.create_group("optimizer_weights")
            o.attrs["weight_names"] = np.array([b"Adam/iter:0"] + [f"Adam/m/{n}:0".encode() for n, _ in weights])
            o.create_dataset("Adam/iter:0", data=np.int64(7))
            for n, value in weights:
                o.create_dataset(f"Adam/m/{n}:0", data=np.zeros_like(value))
    return [n for n, _ in weights]


def test_summary_tree_by_variable_name_with_training_state_apart(runner) -> None:
    with open_checkpoint(ADAM) as r:
        weights = r.variables()
        slots = [v for v in r.variables(include_optimizer=True) if v.role == "slot"]
    result = runner.invoke(app, ["inspect", str(ADAM), "--depth", "5"])
    assert result.exit_code == 0, result.output
    tree_part = result.output.split("Modules", 1)[1].split("Totals", 1)[0]
    for v in weights:
        assert v.name.split("/")[0] in tree_part
    assert "layer_with_weights" not in tree_part and ".OPTIMIZER_SLOT" not in tree_part
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in tree_part
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in result.output.split("Modules", 1)[0]  # named in the header
    state = result.output.split("Training state", 1)[1]
    slot_row = next(line for line in state.splitlines() if line.startswith("optimizer slots"))
    assert slot_row.split()[2] == str(len(slots))
    assert f"for {len({s.slot_of for s in slots})} weights" in slot_row


def test_json_carries_roles_in_summary_and_keys(runner) -> None:
    doc = _json(runner.invoke(app, ["inspect", str(FIX / "tf1_saver"), "--json"]))
    roles = {row["role"] for row in doc["training_state"]}
    assert {"slot", "optimizer", "counter", "ema"} <= roles
    doc = _json(runner.invoke(app, ["inspect", str(FIX / "tf1_saver"), "--keys", "--json"]))
    with open_checkpoint(FIX / "tf1_saver") as r:
        expected = {t.key: t.extra["role"] for t in r.tensors()}
    assert {row["key"]: row["role"] for row in doc["keys"]} == expected
    ema = [row for row in doc["keys"] if row["role"] == "ema"]
    assert ema and all(row["name"] != row["key"] for row in ema)


def test_keys_filter_by_name_and_role_column(runner) -> None:
    result = runner.invoke(app, ["inspect", str(ADAM), "--filter", "conv/kernel"])
    assert result.exit_code == 0, result.output
    body = result.output.splitlines()
    header = next(line for line in body if line.startswith("key"))
    assert "role" in header.split() and "name" in header.split()
    rows = [line for line in body if line.startswith("layer_with_weights-0/kernel")]
    assert len(rows) == 3  # the weight, then its Adam m and v slots
    assert "weight" in rows[0] and "slot m" in rows[1] and "slot v" in rows[2]


def test_diff_pairs_weights_by_name_with_a_keras_file(runner, tmp_path: Path) -> None:
    same = tmp_path / "same.h5"
    names = _keras_h5_like(ADAM, same)
    doc = _json(runner.invoke(app, ["inspect", str(ADAM), "--diff", str(same), "--stats", "--json"]))
    d = doc["diff"]
    assert d["paired_by"].startswith("variable names")
    assert not d["differ"] and d["identical"] == len(names)
    changed = tmp_path / "changed.h5"
    _keras_h5_like(ADAM, changed, bump=names[-1])
    result = runner.invoke(app, ["inspect", str(ADAM), "--diff", str(changed), "--stats", "--json"])
    assert result.exit_code == 1
    assert [row["key"] for row in json.loads(result.stdout)["diff"]["value_changed"]] == [names[-1]]


def test_diff_of_two_tf_checkpoints_stays_by_key(runner) -> None:
    doc = _json(runner.invoke(app, ["inspect", str(ADAM), "--diff", str(ADAM), "--json"]))
    with open_checkpoint(ADAM) as r:
        assert doc["diff"]["identical"] == len(r.keys())
    assert doc["diff"]["paired_by"] == "keys" and not doc["diff"]["differ"]


def test_keras_optimizer_tensors_are_counted_apart(runner, tmp_path: Path) -> None:
    path = tmp_path / "opt.h5"
    names = _keras_h5_like(ADAM, path, optimizer=True)
    doc = _json(runner.invoke(app, ["inspect", str(path), "--json"]))
    with open_checkpoint(ADAM) as r:
        params = sum(int(np.prod(v.shape)) for v in r.variables())
    assert doc["totals"]["tensors"] == len(names)
    assert doc["totals"]["params"] + doc["totals"]["buffers"] == params
    state = {row["role"]: row["tensors"] for row in doc["training_state"]}
    assert state == {"optimizer": len(names), "counter": 1}
    assert doc["file_totals"]["tensors"] == 2 * len(names) + 1
