"""The static scan: every pickle in every place a loader could look is read, and nothing in a file ever runs.

Each payload would only create a marker file under tmp_path; every test asserts it never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.pickle.restricted import DANGEROUS, SAFE, SUSPICIOUS, classify, restricted_load
from ptools.checkpoint.pickle.static_scan import scan_region, scan_stream
from ptools.checkpoint.torch.legacy import MAGIC_NUMBER
from ptools.cli import app
from tests.checkpoint.torch_files import Payload


def _system(target: Path, proto0: bool = False) -> bytes:
    """A protocol-0/2 `os.system('touch target')` pickle fragment (no PROTO, no STOP)."""
    cmd = f"touch {target}".encode()
    if proto0:
        return b"cos\nsystem\n(S'" + cmd + b"'\ntR"
    return b"cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R"


def _dangerous(reader) -> set[str]:
    return {f"{f['module']}.{f['name']}" for f in reader.findings() if f["grade"] == DANGEROUS}


def _zip_checkpoint(path: Path, edit=None) -> None:
    """A real torch.save archive, its members rewritten by edit(name, data) -> data | None (dropped)."""
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            data = edit(info.filename, data) if edit else data
            if data is not None:
                dst.writestr(info, data)


# ------------------------------------------------------------------------- stand-ins that raise


@pytest.mark.parametrize(
    "before",
    [
        b"c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R0",  # stand-in refuses rot13
        b"ccopyreg\n_reconstructor\nN\x85R0",  # copyreg._reconstructor of nothing raises
        b"cbuiltins\nrange\n\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x01\x85R0",  # range(2**56)
        b"\x97",  # NEXT_BUFFER without buffers: the loader stops
        b"\x82\x07",  # EXT1 7: unregistered extension code
    ],
    ids=["codecs", "reconstructor", "range", "next_buffer", "ext1"],
)
def test_a_raising_step_does_not_hide_a_later_global(tmp_path, before):
    target = tmp_path / "pwned"
    data = b"\x80\x05" + before + _system(target) + b"."
    result = restricted_load(data)
    assert result.error  # the loader stopped early...
    assert result.globals[("os", "system")].grade == DANGEROUS  # ...the scan did not
    assert not target.exists()


def test_stream_broken_after_a_global_is_unsafe_not_corrupted(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x02" + _system(target) + b"\xff\xff garbage")
    result = CliRunner().invoke(app, ["inspect", str(path), "--scan"])
    assert result.exit_code == 1, result.output
    assert "os.system" in result.stdout
    assert not target.exists()


# --------------------------------------------------------------------- every stream, every member


def test_pickles_after_stop_and_after_the_first_are_scanned(tmp_path):
    target = tmp_path / "pwned"
    for name, data in {
        "second.pkl": pickle.dumps({"ok": 1}, protocol=2) + b"\x80\x02" + _system(target) + b".",
        "trailing.pkl": pickle.dumps({"ok": 1}, protocol=2) + b"garbage " + _system(target, proto0=True),
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        with open_checkpoint(path) as reader:
            assert _dangerous(reader) == {"os.system"}, name
    assert not target.exists()


def test_trailing_pickle_in_data_pkl(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "t.pt"
    _zip_checkpoint(path, lambda n, d: d + b"\x80\x02" + _system(target) + b"." if n.endswith("data.pkl") else d)
    with open_checkpoint(path) as reader:
        assert _dangerous(reader) == {"os.system"}
        assert reader.tensors()  # the checkpoint itself is still summarised
    assert not target.exists()


def test_duplicate_member_names_are_all_scanned(tmp_path):
    target = tmp_path / "pwned"
    evil = pickle.dumps({"w": Payload("os.system", target)}, protocol=2)
    path = tmp_path / "dup.pt"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("data.pkl"):
                dst.writestr(info.filename, evil)  # first: the one some readers take
            dst.writestr(info, src.read(info.filename))  # last: the one Python's zipfile takes
    with open_checkpoint(path) as reader:
        assert _dangerous(reader) == {"posix.system"}
        assert any("members with this name" in f["source"] for f in reader.findings())
    assert not target.exists()


def test_member_only_in_a_local_header_is_scanned(tmp_path):
    target = tmp_path / "pwned"
    hidden = io.BytesIO()
    with zipfile.ZipFile(hidden, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Payload("os.system", target), protocol=2))
    raw = hidden.getvalue()
    local_only = raw[: raw.rfind(b"PK\x01\x02")]  # its local header and data, no directory entry
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    path = tmp_path / "hidden.pt"
    path.write_bytes(local_only + good.read_bytes())
    with open_checkpoint(path) as reader:
        assert _dangerous(reader) == {"posix.system"}
        assert any("local header only" in f["source"] for f in reader.findings())
    assert not target.exists()


def test_storage_whose_bytes_are_a_protocol0_pickle(tmp_path):
    target = tmp_path / "pwned"
    payload = b"(" + _system(target, proto0=True) + b"."
    t = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    path = tmp_path / "s.pt"
    torch.save({"w": torch.ones(2), "blob": t}, path)
    with open_checkpoint(path) as reader:
        assert "os.system" in _dangerous(reader)
    assert not target.exists()


@pytest.mark.parametrize("first", [b"(", b"I7\n0", b"]0", b"N0"])
def test_protocol0_whatever_its_first_opcode(tmp_path, first):
    target = tmp_path / "pwned"
    path = tmp_path / "p0.pkl"
    path.write_bytes(first + _system(target, proto0=True) + b".")
    with open_checkpoint(path) as reader:
        assert reader.format == "pickle"
        assert _dangerous(reader) == {"os.system"}
    assert not target.exists()


@pytest.mark.parametrize("proto", [0, 1, 2])
def test_legacy_magic_however_spelled(tmp_path, proto):
    target = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    head = pickle.dumps(MAGIC_NUMBER, protocol=proto) + pickle.dumps(1001, protocol=proto)
    if proto == 2:  # LONG4 instead of LONG1
        head = b"\x80\x02\x8b\x0a\x00\x00\x00" + MAGIC_NUMBER.to_bytes(10, "little") + b"." + head[15:]
    path.write_bytes(head + pickle.dumps({"x": Payload("os.system", target)}, protocol=proto))
    with open_checkpoint(path) as reader:
        assert reader.format == "torch-legacy"
        assert _dangerous(reader) == {"posix.system"}
    assert not target.exists()


def test_torch_tar_format(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "old.pt"
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001}),
        "storages": pickle.dumps(0) + b"\0" * 8 + b"raw data then " + _system(target, proto0=True),
        "tensors": pickle.dumps(0),
        "pickle": pickle.dumps({"a": 1}, protocol=2),
    }
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open_checkpoint(path) as reader:
        assert reader.format == "torch-tar"
        assert _dangerous(reader) == {"os.system"}
    assert not target.exists()


# ------------------------------------------------------------------------------ nothing runs


def test_no_mode_but_unsafe_calls_torch_jit_load(tmp_path, monkeypatch):
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    path = tmp_path / "scripted.pt"
    model.save(str(path))
    flat = tmp_path / "flat.pt"
    torch.save(model.state_dict(), flat)
    marker = tmp_path / "jit-ran"
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: marker.touch())
    monkeypatch.setattr(torch.jit, "_load_for_lite_interpreter", lambda *a, **k: marker.touch(), raising=False)
    runner = CliRunner()
    modes = [[], ["--scan"], ["--keys"], ["--stats"], ["--diff", str(flat)], ["--diff", str(flat), "--stats"]]
    for extra in modes:
        result = runner.invoke(app, ["inspect", str(path), *extra])
        assert result.exit_code == 0, (extra, result.output)
        assert not marker.exists(), extra
    # The archive's own keys pair with the state_dict of the same model.
    assert "same keys" in runner.invoke(app, ["inspect", str(path), "--diff", str(flat)]).stdout


# ---------------------------------------------------------------------------------- grading


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("argparse", "_os.system"),
        ("ptools", "x.__globals__.get"),
        ("builtins", "__builtins__"),
        ("builtins", "object.__subclasses__"),
        ("imaplib", "IMAP4"),
        ("_operator", "methodcaller"),
        ("copyreg", "add_extension"),
        ("functools", "reduce"),
        ("pty", "spawn"),
    ],
)
def test_names_that_reach_code_are_dangerous(module, name):
    assert classify(module, name)[0] == DANGEROUS


@pytest.mark.parametrize(
    ("module", "name"),
    [("collections", "Counter"), ("builtins", "ValueError"), ("torch", "FloatTensor"), ("traceback", "StackSummary")],
)
def test_no_false_alarm_where_weights_only_is_content(module, name):
    assert classify(module, name)[0] == SAFE


def test_stack_global_with_dotted_name_is_resolved_and_dangerous(tmp_path):
    target = tmp_path / "pwned"

    class Dotted:
        def __reduce__(self):
            return getattr, (None, "x")  # replaced below

    cmd = f"touch {target}"
    data = (
        b"\x80\x04\x8c\x08argparse\x94\x8c\n_os.system\x94\x93\x94"
        + b"\x8c"
        + bytes([len(cmd)])
        + cmd.encode()
        + b"\x85R."
    )
    streams = scan_region(data)
    assert ("argparse", "_os.system") in streams[0].globals
    result = restricted_load(data)
    assert result.globals[("argparse", "_os.system")].grade == DANGEROUS
    assert not target.exists()


def test_computed_global_is_dangerous():
    # STACK_GLOBAL whose operands come out of a call: the name is only known at load time.
    data = b"\x80\x04cbuiltins\nstr\n\x8c\x02os\x85R\x8c\x06system\x93."
    result = restricted_load(data)
    assert result.globals[("<computed>", "STACK_GLOBAL")].grade == DANGEROUS


def test_user_class_stays_suspicious():
    assert classify("mypkg.models", "Net")[0] == SUSPICIOUS
    assert classify("__main__", "Config")[0] == SUSPICIOUS


def test_scan_stream_measures_depth_and_memo():
    s = scan_stream(b"\x80\x02" + b")" + b"\x85" * 50 + b".")
    assert s.end is not None and s.max_depth == 51
    s = scan_stream(b"\x80\x02N" + b"r" + struct.pack("<I", 2**31) + b".")
    assert s.max_memo == 2**31


def test_os_environ_untouched_by_scanning(tmp_path):
    before = dict(os.environ)
    restricted_load(b"\x80\x02cos\nputenv\nX\x01\x00\x00\x00AX\x01\x00\x00\x00B\x86R.")
    assert dict(os.environ) == before
