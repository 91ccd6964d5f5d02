"""The restricted unpickler: payloads never run, globals are graded and located, data stand-ins hold values."""

from __future__ import annotations

import argparse
import collections
import pickle

import numpy as np
import pytest
import torch

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.pickle.restricted import DANGEROUS, SAFE, SUSPICIOUS, grade_global, restricted_load
from ptools.checkpoint.pickle.structure import build
from tests.checkpoint.torch_files import PAYLOAD_KINDS, Payload, UserConfig, save_malicious

EXPECTED_GLOBAL = {
    "os.system": ("posix", "system"),
    "exec": ("builtins", "exec"),
    "eval": ("builtins", "eval"),
    "popen": ("subprocess", "Popen"),
}


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_payload_in_bare_pickle_never_runs_and_is_graded_dangerous(tmp_path, kind):
    target = tmp_path / "pwned"
    data = pickle.dumps({"x": [1, Payload(kind, target)]}, protocol=2)
    result = restricted_load(data)
    assert not target.exists()
    ref = result.globals[EXPECTED_GLOBAL[kind]]
    assert ref.grade == DANGEROUS
    assert ref.where == ["x.1"]
    assert str(target) in ref.calls[0]  # the command it would have run is shown


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("kind", ["os.system", "popen"])
def test_payload_in_torch_file_is_reported_and_tensors_still_listed(tmp_path, kind, legacy):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    save_malicious(path, kind, target, legacy=legacy)
    with open_checkpoint(path) as reader:
        findings = reader.findings()
        keys = [t.key for t in reader.tensors()]
        assert reader.format == ("torch-legacy" if legacy else "torch-zip")
        if legacy:  # data would go through torch.load: refused for a flagged file
            with pytest.raises(Exception, match="allow-list"):
                reader.read("weight")
    assert not target.exists()
    assert keys == ["weight"]
    assert [(f["module"], f["name"], f["grade"]) for f in findings] == [(*EXPECTED_GLOBAL[kind], DANGEROUS)]
    assert findings[0]["where"] == ["config.payload"]


def test_protocol0_exploit_and_getattr_chain(tmp_path):
    target = tmp_path / "pwned"
    classic = f"cos\nsystem\n(S'touch {target}'\ntR.".encode()
    result = restricted_load(classic)
    assert result.globals[("os", "system")].grade == DANGEROUS
    # getattr(__import__('os'), 'system')('touch ...'): every step is a placeholder, nothing resolves.
    chain = (
        b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R"
        b"X\x06\x00\x00\x00system\x86R"
        + b"X"
        + len(f"touch {target}").to_bytes(4, "little")
        + f"touch {target}".encode()
        + b"\x85R."
    )
    result = restricted_load(chain)
    assert result.error is None
    assert {k for k, g in result.globals.items() if g.grade == DANGEROUS} == {
        ("builtins", "getattr"),
        ("builtins", "__import__"),
    }
    assert not target.exists()


def test_unknown_class_with_newobj_and_build_is_recorded_as_suspicious():
    result = restricted_load(pickle.dumps({"cfg": UserConfig()}, protocol=2))
    ref = result.globals[("tests.checkpoint.torch_files", "UserConfig")]
    assert ref.grade == SUSPICIOUS
    structure = build(result).structure
    assert structure["cfg"]["__class__"] == "tests.checkpoint.torch_files.UserConfig"
    assert structure["cfg"]["lr"] == 0.1  # its state is still shown
    assert structure["cfg"]["layers"] == [2, 3]


def test_data_stand_ins_hold_values():
    obj = {
        "lr": np.float64(0.5),
        "steps": np.int64(3),
        "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
        "ns": argparse.Namespace(a=1, b="x"),
        "dd": collections.defaultdict(list, {"k": [1]}),
        "od": collections.OrderedDict(a=1),
        "b": b"\x00\x01",
        "s": {1, 2},
        "c": complex(1, 2),
    }
    result = restricted_load(pickle.dumps(obj, protocol=2))
    assert result.error is None, result.error
    assert not result.unsafe, [g.qualname for g in result.unsafe]
    built = build(result)
    s = built.structure
    assert s["lr"] == 0.5 and s["steps"] == 3
    assert s["ns"]["a"] == 1 and s["ns"]["b"] == "x"
    assert s["dd"]["k"] == [1]
    assert s["c"] == complex(1, 2)
    arr = built.refs["arr"].array.numpy()
    np.testing.assert_array_equal(arr, obj["arr"])


def test_grading_table():
    assert grade_global("os", "system")[0] == DANGEROUS
    assert grade_global("subprocess", "check_output")[0] == DANGEROUS
    assert grade_global("runpy", "run_path")[0] == DANGEROUS
    assert grade_global("importlib", "import_module")[0] == DANGEROUS
    assert grade_global("builtins", "getattr")[0] == DANGEROUS
    assert grade_global("torch.nn.modules.linear", "Linear")[0] == SUSPICIOUS


def test_nested_pickle_in_a_byte_storage_is_scanned(tmp_path):
    target = tmp_path / "pwned"
    hidden = pickle.dumps(Payload("os.system", target), protocol=2)
    blob = torch.frombuffer(bytearray(hidden), dtype=torch.uint8)
    path = tmp_path / "hidden.pt"
    torch.save({"w": torch.zeros(2), "blob": blob, "raw": hidden}, path)
    with open_checkpoint(path) as reader:
        findings = reader.findings()
    names = {(f["module"], f["name"]) for f in findings}
    assert ("<nested pickle>", "storage 1") in names
    assert ("<nested pickle>", "raw") in names
    assert ("posix", "system") in names
    assert not target.exists()


def test_whole_module_pickle_is_suspicious_but_summarised(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2), path)
    with open_checkpoint(path) as reader:
        grades = {f["grade"] for f in reader.findings()}
        keys = sorted(t.key for t in reader.tensors())
    assert grades == {SUSPICIOUS}
    assert keys == ["bias", "weight"]  # the model's own state_dict keys


def test_allow_listed_torch_file_has_only_safe_globals(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"p": torch.nn.Parameter(torch.ones(2)), "m": torch.nn.Linear(2, 2).state_dict()}, path)
    with open_checkpoint(path) as reader:
        assert reader.findings() == []
        assert {g["grade"] for g in reader.pickle_globals()} == {SAFE}
        info = {t.key: t for t in reader.tensors()}
    assert info["p"].extra["parameter"] is True


def test_memory_bombs_from_allow_listed_builtins_are_refused():
    # list(range(10**12)) and bytes(10**12): only allow-listed names, yet they would exhaust memory.
    bomb = b"\x80\x02cbuiltins\nlist\ncbuiltins\nrange\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R\x85R."
    result = restricted_load(bomb)
    assert result.obj is None and "too long" in result.error
    result = restricted_load(b"\x80\x02cbuiltins\nbytes\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R.")
    assert result.obj is None and "huge" in result.error


def test_oversized_bytearray8_keeps_findings_and_prints_nothing(capfd):
    # A BYTEARRAY8 claiming ~10**17 bytes after a payload: CPython would print a stray SystemError.
    data = b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00a\x85R\x96\rtq\x0eRq\x0fX\x06\x00\x00\x00."
    result = restricted_load(data)
    assert result.globals[("os", "system")].calls == ["os.system('a')"]
    assert result.error is not None
    assert "SystemError" not in capfd.readouterr().err
