"""Pickles PyTables keeps in HDF5 files, found with h5py and graded without unpickling them.

PyTables stores any attribute value HDF5 cannot hold natively as a protocol-0 pickle in a scalar ASCII
string attribute, and unpickles every such attribute (a bytes value ending in ".") when a node's
attributes are read, which opening a node does. A VLArray of `ObjectAtom` (attribute PSEUDOATOM =
"object") holds one pickle per row, unpickled when a row is read. Whatever file ptools opens as HDF5
(a Keras `.h5` too) has both scanned, so a file PyTables would run code from is flagged.
"""

from __future__ import annotations

from typing import Any

from ptools.checkpoint.pickle.restricted import ScanResult, add_static_globals
from ptools.checkpoint.pickle.static_scan import scan_region

MAX_OBJECTS = 100_000  # groups and datasets visited
MAX_ATTRS = 10_000  # attributes per object
MAX_ATTR_BYTES = 16 << 20
MAX_ROWS = 100_000  # VLArray rows scanned


def pytables_pickles(h5: Any, budget: int, notes: list[str] | None = None) -> list[tuple[str, bytes]]:
    """(where, bytes) of every value PyTables would hand to pickle.loads from this open h5py file.

    `budget` bounds the bytes read from VLArray rows (the memory promise of the command)."""
    notes = notes if notes is not None else []
    objects: list[Any] = [h5]
    try:
        h5.visititems(lambda _name, obj: objects.append(obj) if len(objects) < MAX_OBJECTS else True)
    except Exception as e:  # noqa: BLE001 - damaged metadata: scan what was reached
        notes.append(f"HDF5 tree not fully walked ({type(e).__name__})")
    found: list[tuple[str, bytes]] = []
    for obj in objects:
        found += _attr_pickles(obj, notes)
        rows, budget = _vlarray_pickles(obj, budget, notes)
        found += rows
    return found


def scan_hdf5(h5: Any, budget: int) -> ScanResult:
    """Every pickle PyTables would load from this file, statically scanned and graded."""
    result = ScanResult()
    for where, raw in pytables_pickles(h5, budget, result.notes):
        streams = scan_region(raw)
        if any(s.globals for s in streams):
            add_static_globals(result, streams, where, False)
    return result


def _attr_pickles(obj: Any, notes: list[str]) -> list[tuple[str, bytes]]:
    import h5py

    where = getattr(obj, "name", "/") or "/"
    try:
        names = list(obj.attrs.keys())[:MAX_ATTRS]
    except Exception:  # noqa: BLE001
        return []
    found = []
    for name in names:
        try:
            aid = h5py.h5a.open(obj.id, name.encode("utf-8", "surrogateescape"))
            tid = aid.get_type()
            if aid.shape != () or not isinstance(tid, h5py.h5t.TypeStringID) or tid.get_cset() != h5py.h5t.CSET_ASCII:
                continue  # PyTables unpickles scalar ASCII strings only
            if aid.get_storage_size() > MAX_ATTR_BYTES:
                notes.append(f"{where} attribute {name}: larger than {MAX_ATTR_BYTES >> 20} MiB, not scanned")
                continue
            value = obj.attrs[name]
        except Exception:  # noqa: BLE001 - an attribute h5py cannot read is one PyTables cannot unpickle either
            continue
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        raw = raw.rstrip(b"\x00")
        if raw.endswith(b".") and raw not in (b"0", b"0."):  # PyTables' own test for a pickled value
            found.append((f"HDF5 attribute {where}@{name} (PyTables unpickles it)", raw))
    return found


def _vlarray_pickles(obj: Any, budget: int, notes: list[str]) -> tuple[list[tuple[str, bytes]], int]:
    import h5py
    import numpy as np

    if not isinstance(obj, h5py.Dataset):
        return [], budget
    try:
        pseudo = obj.attrs.get("PSEUDOATOM")
        if pseudo is None or bytes(pseudo if not isinstance(pseudo, str) else pseudo.encode()) != b"object":
            return [], budget
        if h5py.check_vlen_dtype(obj.dtype) is None or obj.ndim != 1:
            return [], budget
        rows = min(int(obj.shape[0]), MAX_ROWS)
    except Exception:  # noqa: BLE001
        return [], budget
    found = []
    for i in range(rows):
        try:
            row = np.asarray(obj[i], dtype=np.uint8)
        except Exception:  # noqa: BLE001 - an unreadable row is not loaded by PyTables either
            continue
        budget -= row.nbytes
        if budget < 0:
            notes.append(f"{obj.name}: rows beyond {i} not scanned (larger than this file could hold)")
            break
        found.append((f"VLArray {obj.name} row {i} (PyTables unpickles each row)", row.tobytes()))
    return found, budget
