"""Grading by reach on real models and Keras configs, and the bounds every pickle/zip reader keeps.

Payloads would only create a marker file under tmp_path; every test asserts it never appears.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import torch
from typer.testing import CliRunner

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint import summary as sm
from ptools.checkpoint.pickle.restricted import DANGEROUS, SUSPICIOUS, restricted_load
from ptools.checkpoint.pickle.structure import MAX_NODES, build
from ptools.checkpoint.scan import security_report
from ptools.cli import app
from tests.checkpoint.torch_files import TinyNet

ROOT = Path(__file__).resolve().parents[2]
KERAS = ROOT / "tests" / "fixtures" / "keras"


def _run(*args: str, limit_mib: int | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """`ptools ARGS` in a fresh process; (result, peak RSS in MiB)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) forking test process.
    code = (
        "import sys\n"
        "from ptools.cli import main\n"
        "sys.argv = ['ptools'] + sys.argv[1:]\n"
        "try:\n    main()\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "    print('PEAK', int(hwm) // 1024, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    peak = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK ")]
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("PEAK "))
    return proc, peak[0] if peak else -1


# ------------------------------------------------------------------------------ whole models


def test_whole_model_pickle_shows_state_dict_names_and_groups_stock_classes(tmp_path):
    model = TinyNet()
    model.norm = functools.partial(torch.nn.BatchNorm2d, eps=1e-3)  # as torchvision builders keep norm_layer
    whole, sd = tmp_path / "whole.pt", tmp_path / "sd.pt"
    torch.save(model, whole)
    torch.save(model.state_dict(), sd)
    with open_checkpoint(whole) as reader:
        sel = sm.select(reader)
        assert sorted(sel.infos) == sorted(model.state_dict())  # features.0.weight, not _modules.features...
        security = security_report(reader)
    family = {g["family"]: g for g in security["groups"]}
    assert family["torch.nn"]["classes"] == 5  # Conv2d, BatchNorm2d, ReLU, Sequential, Linear
    partial = next(f for f in security["findings"] if f["name"] == "partial")
    assert partial["grade"] == SUSPICIOUS and "BatchNorm2d" in partial["reason"]
    runner = CliRunner()
    diff = runner.invoke(app, ["inspect", str(whole), "--diff", str(sd)])
    assert "same keys" in diff.stdout
    scan = runner.invoke(app, ["inspect", str(whole), "--scan"])
    assert scan.exit_code == 1
    per_class = [
        line
        for line in scan.stdout.splitlines()
        if line.lstrip().startswith(("torch.nn.modules", "suspicious torch.nn.modules"))
    ]
    assert per_class == []  # one grouped line instead of one per class
    assert "torch.nn.* (5 stock classes)" in scan.stdout


def test_partial_wrapping_a_command_is_dangerous(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"f": functools.partial(os.system, f"touch {target}")}, protocol=2))
    with open_checkpoint(path) as reader:
        grades = {f["name"]: f["grade"] for f in reader.findings()}
    assert grades["partial"] == DANGEROUS and grades["system"] == DANGEROUS
    assert not target.exists()


# ------------------------------------------------------------------------------------ Keras


def _keras_with(path: Path, extra_layer: dict) -> None:
    src = zipfile.ZipFile(KERAS / "k3_model.keras")
    with zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "config.json":
                cfg = json.loads(data)
                cfg["config"]["layers"].append(extra_layer)
                data = json.dumps(cfg).encode()
            dst.writestr(info, data)


def test_keras_lambda_and_custom_module_are_flagged(tmp_path):
    lam = tmp_path / "lambda.keras"
    _keras_with(
        lam,
        {
            "module": "keras.layers",
            "class_name": "Lambda",
            "registered_name": None,
            "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}},
        },
    )
    custom = tmp_path / "custom.keras"
    _keras_with(custom, {"module": "evilpkg.layers", "class_name": "Boom", "registered_name": "evilpkg>Boom"})
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(lam), "--scan"])
    assert result.exit_code == 1 and "Lambda" in result.stdout
    result = runner.invoke(app, ["inspect", str(custom), "--scan", "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [(f["module"], f["name"]) for f in doc["security"]["findings"]] == [("evilpkg.layers", "Boom")]


def test_stock_keras_files_have_no_findings():
    runner = CliRunner()
    for name in ("k3_model.keras", "legacy_model.h5", "k3.weights.h5"):
        result = runner.invoke(app, ["inspect", str(KERAS / name), "--scan"])
        assert result.exit_code == 0, (name, result.output)


# ------------------------------------------------------------------------------------ output


def test_names_from_the_file_are_not_rich_markup(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"[link=https://evil.example]click[/link]": torch.ones(1), "[bold]b[/bold]": torch.ones(1)}, path)
    out = CliRunner().invoke(app, ["inspect", str(path), "--keys"]).stdout
    assert "[link=https://evil.example]click[/link]" in out
    assert "[bold]b[/bold]" in out


def test_forty_thousand_globals_are_counted_not_listed(tmp_path):
    path = tmp_path / "many.pkl"
    body = b"".join(b"cmod%d\nC%d\n0" % (i, i) for i in range(40_000))
    path.write_bytes(b"(" + body + b"l.")
    result = CliRunner().invoke(app, ["inspect", str(path), "--scan"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) < 200
    assert any("and 39" in line and "more" in line for line in lines)
    doc = json.loads(CliRunner().invoke(app, ["inspect", str(path), "--scan", "--json"]).stdout)
    assert doc["security"]["counts"]["suspicious"] == 40_000  # --json lists all


# ------------------------------------------------------------------------------------ bounds


def test_deeply_nested_tuple_as_dict_key_is_refused_not_a_crash(tmp_path):
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x02}" + b")" + b"\x85" * 300_000 + b"Ns.")  # hash() of it would overflow the C stack
    proc, _ = _run("inspect", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "nests" in lines[0]


def test_huge_memo_index_costs_no_memory(tmp_path):
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02}r" + struct.pack("<I", 2**28) + b".")  # the C unpickler's memo: 4 GiB
    proc, peak = _run("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert 0 < peak < 400


def test_shared_subobjects_do_not_expand_exponentially():
    data = b"\x80\x02]r" + struct.pack("<I", 0)
    for i in range(80):  # x[i+1] = [x[i], x[i]]: 2**80 paths
        data += b"(j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i) + b"lr" + struct.pack("<I", i + 1)
    built = build(restricted_load(data + b"."))
    assert built.truncated
    assert MAX_NODES < 10**6


def _deflated_member(path: Path, member: str, declared: int, inflated: int) -> None:
    """Rewrite a torch zip so `member` is deflated zeros that inflate to `inflated` bytes but declare `declared`."""
    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(member):
                dst.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(info, data)
    raw = bytearray(path.read_bytes())
    zf = zipfile.ZipFile(io.BytesIO(bytes(raw)))
    info = next(i for i in zf.infolist() if i.filename.endswith(member))
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    blob = bomb.compress(b"\0" * inflated) + bomb.flush()
    # Splice the bomb in place of the member's data and fix sizes in both headers (CRC left wrong: never reached).
    head = info.header_offset
    n, e = struct.unpack_from("<HH", raw, head + 26)
    start = head + 30 + n + e
    new = bytes(raw[:start]) + blob + bytes(raw[start + info.compress_size :])
    new = bytearray(new)
    struct.pack_into("<II", new, head + 18, len(blob), declared)
    delta = len(blob) - info.compress_size
    cd = new.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", new, cd + 16)[0] + delta
    struct.pack_into("<I", new, cd + 16, cd_offset)
    pos = cd_offset
    while new[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", new, pos + 28)
        name = bytes(new[pos + 46 : pos + 46 + name_len]).decode()
        offset = struct.unpack_from("<I", new, pos + 42)[0]
        if name.endswith(member):
            struct.pack_into("<II", new, pos + 20, len(blob), declared)
        elif offset > head:
            struct.pack_into("<I", new, pos + 42, offset + delta)
        pos += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(new))


def test_deflate_bomb_in_data_pkl_is_one_line_exit_2(tmp_path):
    # torch inflates a record only up to its declared size (300 zero bytes here) and unpickles that; so does
    # the scan, without inflating the rest.
    path = tmp_path / "bomb.pt"
    _deflated_member(path, "data.pkl", declared=300, inflated=200 << 20)
    proc, peak = _run("inspect", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and str(path) in lines[0] and "corrupted data.pkl (unknown opcode 0x00 at offset 0)" in lines[0]
    )
    assert peak < 300


def test_deflate_bomb_in_a_storage_is_not_inflated(tmp_path):
    path = tmp_path / "bomb.pt"
    _deflated_member(path, "data/0", declared=16, inflated=300 << 20)
    proc, peak = _run("inspect", str(path), "--stats", "--json")
    assert proc.returncode in (0, 2), proc.stderr
    assert peak < 300
