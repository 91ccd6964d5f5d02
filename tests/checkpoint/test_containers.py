"""Containers whose loaders execute code are flagged in every mode; their benign twins (and files that once
raised false alarms) are not graded dangerous; numeric .npy/.npz values equal numpy's own reading."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ptools.checkpoint import open_checkpoint
from ptools.cli import app
from tests.checkpoint.container_cases import BENIGN_ONLY, MALICIOUS_AND_TWINS, loader_imports, npy_bytes

SEEDS = (1107, 52361)  # drawn for this file; other seeds give other files


def _modes(runner, path) -> list:
    return [
        runner.invoke(app, ["inspect", str(path)]),
        runner.invoke(app, ["inspect", str(path), "--scan", "--json"]),
        runner.invoke(app, ["inspect", str(path), "--keys"]),
    ]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(MALICIOUS_AND_TWINS))
def test_malicious_container_is_flagged_in_all_three_modes(runner, tmp_path, kind, seed):
    marker = tmp_path / "MARKER"
    case = MALICIOUS_AND_TWINS[kind](random.Random(f"{seed}:{kind}:bad"), tmp_path, True, marker)
    human, scan, keys = _modes(runner, case.path)
    for result in (scan, human, keys):
        assert result.exit_code == 1, (case.note, result.output)
    security = json.loads(scan.stdout)["security"]
    assert security["grade"] == "dangerous", (case.note, security["findings"])
    assert any(f["grade"] == "dangerous" for f in security["findings"])
    assert "UNSAFE" in human.stdout and "UNSAFE" in keys.stdout
    assert not marker.exists(), case.note


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(MALICIOUS_AND_TWINS))
def test_benign_twin_is_not_graded_dangerous(runner, tmp_path, kind, seed):
    case = MALICIOUS_AND_TWINS[kind](random.Random(f"{seed}:{kind}:good"), tmp_path, False, tmp_path / "MARKER")
    result = runner.invoke(app, ["inspect", str(case.path), "--scan", "--json"])
    if result.exit_code == 2:  # e.g. a plain HDF5 file without Keras weights and without a risky pickle
        assert "dangerous" not in result.output
        return
    security = json.loads(result.stdout)["security"]
    assert security["grade"] != "dangerous", (case.note, security["findings"])
    if not case.allow_suspicious:
        assert result.exit_code == 0 and security["grade"] in ("safe", "none"), (case.note, security["findings"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(BENIGN_ONLY))
def test_former_false_alarms_stay_quiet(runner, tmp_path, kind, seed):
    case = BENIGN_ONLY[kind](random.Random(f"{seed}:{kind}"), tmp_path)
    result = runner.invoke(app, ["inspect", str(case.path), "--scan", "--json"])
    if kind == "text":
        assert result.exit_code == 2 and "unrecognised format" in result.output, (case.note, result.output)
        # Python's own unpickler would import nothing from these bytes either.
        assert loader_imports(case.path.read_bytes()) == [], case.note
        return
    security = json.loads(result.stdout)["security"]
    assert security["grade"] != "dangerous", (case.note, security["findings"])
    if not case.allow_suspicious:
        assert result.exit_code == 0 and security["grade"] == "safe", (case.note, security["findings"])
    if kind in ("exotic-dtype", "nested-tensor", "bytes-pickle"):
        # The loader agrees nothing outside its allow-list is needed (torch.nested registers its helpers).
        import torch.nested  # noqa: F401

        loaded = torch.load(case.path, weights_only=True)
        if kind == "exotic-dtype":  # and ptools reads the same stored bytes for each tensor
            with open_checkpoint(case.path) as reader:
                for key, tensor in loaded.items():
                    want = tensor.view(torch.uint8 if tensor.element_size() == 1 else torch.int16).numpy().tobytes()
                    assert reader.read_raw(key)[0].tobytes() == want, key


@pytest.mark.parametrize("seed", SEEDS)
def test_numeric_npy_and_npz_read_as_numpy_reads_them(tmp_path, seed):
    from tests.checkpoint.container_cases import _numeric

    rng = random.Random(f"{seed}:numeric")
    arrays = {f"a{i}": _numeric(rng) for i in range(6)}
    for name, arr in arrays.items():
        (tmp_path / f"{name}.npy").write_bytes(npy_bytes(arr, 3, rng.choice([(1, 0), (2, 0)])))
        with open_checkpoint(tmp_path / f"{name}.npy") as reader:
            (info,) = reader.tensors()
            mine = reader.read(info.key)
            want = np.load(tmp_path / f"{name}.npy")
            assert info.shape == want.shape and mine.dtype == want.dtype.newbyteorder("=")
            np.testing.assert_array_equal(mine, want)
            assert reader.findings() == []
    saver = np.savez_compressed if rng.random() < 0.5 else np.savez
    saver(tmp_path / "all.npz", **arrays)
    with open_checkpoint(tmp_path / "all.npz") as reader, np.load(tmp_path / "all.npz") as want:
        assert reader.format == "npz" and sorted(t.key for t in reader.tensors()) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(reader.read(key), want[key])


def test_keras_npz_weights_are_read_from_their_pickle_without_loading_it(tmp_path):
    from tests.checkpoint.container_cases import keras_npz_case

    case = keras_npz_case(random.Random(3), tmp_path, False, tmp_path / "MARKER")
    with open_checkpoint(case.path) as reader, np.load(case.path, allow_pickle=True) as want:
        for layer in want.files:
            for var, value in want[layer][()].items():
                np.testing.assert_array_equal(reader.read(f"{layer}.{var}"), value)


def test_npy_headers_numpy_refuses_are_one_line_errors(runner, tmp_path):
    good = npy_bytes(np.arange(6, dtype="<f4"), 3)
    bad = {
        "short.npy": good[:-4],  # data shorter than the header's shape needs
        "hdr.npy": good[:10] + b"{'descr': '<f4', 'shape': (6,)}".ljust(len(good) - 10),
        "shape.npy": good.replace(b"(6,)", b"(-6,)"),
        "version.npy": good[:6] + b"\x09\x00" + good[8:],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        result = runner.invoke(app, ["inspect", str(tmp_path / name)])
        assert result.exit_code == 2, (name, result.output)
        assert name in result.output and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("module", "cls", "registered", "flagged"),
    [
        ("keras_hub.src.models.gemma.gemma_backbone", "GemmaBackbone", "keras_hub>GemmaBackbone", False),
        ("keras_nlp.src.models.bert.bert_backbone", "BertBackbone", "keras_nlp>BertBackbone", False),
        (
            "keras_cv.src.models.backbones.resnet_v2.resnet_v2_backbone",
            "ResNetV2Backbone",
            "keras_cv>ResNetV2Backbone",
            False,
        ),
        ("keras_hub.src.utils.preset_utils", "upload_preset", "keras_hub>upload_preset", True),  # an exported function
        (
            "keras_hub.src.utils.preset_utils",
            "PresetLoader",
            "keras_hub>PresetLoader",
            True,
        ),  # a class it does not export
        ("keras.layers", "Dense", None, False),
        ("keras.utils", "get_file", None, True),
        ("keras.layers", "TFSMLayer", None, True),
    ],
)
def test_keras_objects_are_checked_against_an_allow_list_of_classes(module, cls, registered, flagged):
    from ptools.checkpoint.keras.h5 import config_code_findings

    layer = {"module": module, "class_name": cls, "config": {"name": "x"}, "registered_name": registered}
    config = {"class_name": "Functional", "module": "keras", "config": {"layers": [layer]}, "registered_name": None}
    assert bool(config_code_findings(config)) == flagged
