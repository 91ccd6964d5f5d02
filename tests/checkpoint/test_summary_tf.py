"""The inspect summary of role-tagged checkpoints (TF bundles, Keras): tree by variable name, weights only."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint import summary as sm
from ptools.checkpoint.tf.bundle import OBJECT_GRAPH_KEY

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def _leaves(node: dict) -> list[dict]:
    if "children" not in node:
        return [node] if node["name"] else []
    return [leaf for c in node["children"] for leaf in _leaves(c)]


def _nodes(node: dict) -> list[dict]:
    return [c for child in node.get("children", []) for c in (child, *_nodes(child))]


@pytest.mark.parametrize("name", ["tf2_keras_adam", "tf1_saver", "tf2_keras3"])
def test_tree_and_totals_hold_the_weights_by_name(name: str) -> None:
    with open_checkpoint(FIX / name) as r:
        weights = r.variables()  # the reader's own answer: model weights only
        everything = r.variables(include_optimizer=True)
        sel = sm.select(r)
        report = sm.summarize(r, sel, depth=10, file_size=None)
    leaves = _leaves(report["tree"])
    assert {leaf["path"] for leaf in leaves} == {v.name for v in weights}
    # the checkpoint key stays findable (given where it differs from the name)
    assert {leaf.get("key", leaf["path"]) for leaf in leaves} == {v.key for v in weights}
    assert report["totals"]["tensors"] == len(weights)
    numel = {v.name: sm.TensorInfo(v.key, v.dtype, v.shape, 0).numel for v in weights}
    t = report["totals"]
    assert t["params"] + t["buffers"] == sum(numel.values())
    # Batch-norm moving statistics are buffers in PyTorch terms: counted apart from the parameters.
    moving = [n for n in numel if n.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance")]
    assert t["buffers"] == sum(numel[n] for n in moving) and t["buffer_tensors"] == len(moving)
    state = {row["role"]: row for row in report["training_state"]}
    assert "weight" not in state
    for role in ("slot", "counter", "optimizer"):
        expected = [v for v in everything if v.role == role]
        assert state.get(role, {}).get("tensors", 0) == len(expected), role
    assert report["file_totals"]["tensors"] == len(r.keys())


def test_slots_name_their_kind_and_ema_is_apart() -> None:
    with open_checkpoint(FIX / "tf1_saver") as r:
        report = sm.summarize(r, sm.select(r), depth=3, file_size=None)
        shadows = [v for v in r.variables(ema=True) if v.role == "ema"]
    state = {row["role"]: row for row in report["training_state"]}
    assert state["slot"]["slot_names"] == ["m", "v"]
    assert state["slot"]["weights"] == report["totals"]["tensors"]  # every weight has Adam slots here
    assert sorted(state["ema"]["names"]) == sorted(v.name for v in shadows) and shadows


def test_object_graph_is_left_out_of_the_tree() -> None:
    with open_checkpoint(FIX / "tf2_keras_adam") as r:
        report = sm.summarize(r, sm.select(r), depth=5, file_size=None)
    assert all(OBJECT_GRAPH_KEY not in leaf["path"] for leaf in _leaves(report["tree"]))
    untagged = [row for row in report["training_state"] if row["role"] == sm.UNTAGGED_ROLE]
    assert untagged and untagged[0]["names"] == [OBJECT_GRAPH_KEY]


def test_unnamed_variables_keep_their_keys_without_empty_levels() -> None:
    with open_checkpoint(FIX / "tf2_dtypes") as r:  # every tf.Variable there is called "Variable"
        sel = sm.select(r)
        report = sm.summarize(r, sel, depth=5, file_size=None)
        weights = r.variables()
    named = sm.named(sel, {sm.WEIGHT_ROLE})
    assert sorted(named.infos) == sorted(v.key for v in weights)
    assert len({v.name for v in weights}) == 1
    paths = [leaf["path"] for leaf in _leaves(report["tree"])]
    assert sorted(paths) == sorted(v.key for v in weights)
    assert all(node["name"] for node in _nodes(report["tree"]))  # no level named "" from "kernel/.ATTRIBUTES"


def test_named_selection_gives_ema_shadows_their_keys() -> None:
    with open_checkpoint(FIX / "tf1_saver") as r:
        sel = sm.select(r)
        named = sm.named(sel)
    assert len(named.infos) == len(sel.infos)  # nothing lost to the EMA shadow sharing its weight's name
    for name, key in named.full_keys.items():
        info = sel.infos[key]
        if info.extra.get("role") == "ema":
            assert name == key
        else:
            assert name == info.extra["name"]


def test_keys_list_slots_after_their_weight_and_filter_matches_names() -> None:
    with open_checkpoint(FIX / "tf2_keras3") as r:  # slots live far from their weights in key order
        sel = sm.select(r)
        rows = sm.key_rows(sel, list(sel.infos))
        weights = {v.name for v in r.variables()}
    assert sorted(row["key"] for row in rows) == sorted(sel.infos)
    for i, row in enumerate(rows):
        if row["role"] == "slot":
            owner = next(p for p in reversed(rows[:i]) if p["role"] != "slot")
            assert owner["role"] == "weight" and owner["name"] == row["slot_of"]
    name = sorted(weights)[0]
    hits = sm.filter_keys(sel, name)
    assert hits and all(sel.infos[k].extra["name"] == name or name in k for k in hits)
    assert any(name not in k for k in hits)  # found by name, not by key
