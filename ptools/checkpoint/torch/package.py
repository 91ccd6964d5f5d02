"""torch.package archives: Python source that `PackageImporter` runs, and the pickles that make it run, graded.

A package (`torch.package.PackageExporter`) is a zip holding `.data/extern_modules` (modules taken from
the loading environment), `.data/<n>.storage` tensor data, pickles (`<package>/<resource>`) and the
packaged modules' own source (`pkg/mod.py`, `pkg/__init__.py`). `PackageImporter.load_pickle` unpickles
a resource; every global it names is imported from the archive first, which executes that module's
source (and its parents' `__init__.py`), or from the environment when the module is extern. So a
package runs code by design: each source file is graded (dangerous when it reaches commands, code
execution, files or the network by name; suspicious otherwise, since it runs all the same), and
each pickle's globals are graded as in any pickle, a packaged class taking the grade of its source.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint.base import CheckpointReader, TensorInfo
from ptools.checkpoint.pickle.restricted import (
    DANGEROUS,
    SAFE,
    SUSPICIOUS,
    GlobalRef,
    ScanResult,
    add_static_globals,
    grade_global,
    restricted_load,
)
from ptools.checkpoint.pickle.static_scan import looks_like_pickle_head, scan_region
from ptools.checkpoint.pickle.structure import PickleContents, build
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

MAX_SOURCE_BYTES = 16 << 20
_ZIP = b"PK\x03\x04"
# Builtins that run code or reach files when a module's source calls them.
_RISKY_BUILTINS = {"eval", "exec", "compile", "__import__", "open", "breakpoint"}


def sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(_ZIP) or len(head) < 30:
        return False
    first = head[30 : 30 + struct.unpack_from("<H", head, 26)[0]]
    if first.endswith(b"/data.pkl") or b"/data/" in first:
        return False  # torch.save and TorchScript write data.pkl or a storage first (and cost nothing to tell)
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith(".data/extern_modules") for n in zf.namelist())
    except Exception:  # noqa: BLE001 - a zip zipfile cannot read is not recognised here (the zip readers report it)
        return False


def grade_source(text: str) -> tuple[str, list[str]]:
    """(grade, reasons) for Python source that will run: dangerous when it names a way to run commands or
    code, touch files or reach the network; suspicious otherwise (it runs, and static reading proves no more)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return SUSPICIOUS, ["does not parse as Python (the import would fail there)"]
    reasons: list[str] = []
    for node in ast.walk(tree):
        if len(reasons) >= 8:
            break
        if isinstance(node, ast.Import):
            for alias in node.names:
                grade, why = grade_global(alias.name, "module")
                if grade == DANGEROUS:
                    reasons.append(f"imports {alias.name} ({why})")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            for alias in node.names:
                grade, why = grade_global(node.module, alias.name)
                if grade == DANGEROUS:
                    reasons.append(f"imports {node.module}.{alias.name} ({why})")
        elif isinstance(node, ast.Name) and node.id in _RISKY_BUILTINS:
            reasons.append(f"uses {node.id}()")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr.endswith("__"):
            if node.attr in ("__globals__", "__builtins__", "__subclasses__", "__code__", "__import__"):
                reasons.append(f"reaches {node.attr}")
    return (DANGEROUS, reasons) if reasons else (SUSPICIOUS, [])


class TorchPackageReader(CheckpointReader):
    """Every source file and pickle of a torch.package archive, graded; tensors of its pickles listed."""

    format = "torch-package"

    def __init__(self, path: Path) -> None:
        from ptools.checkpoint.torch.zip import size_limit
        from ptools.checkpoint.torch.zip_members import FileBytes, ZipError, list_members, member_head, read_member

        super().__init__(path)
        self.scan = ScanResult()
        self._code: list[dict[str, Any]] = []
        self.contents = PickleContents()
        try:
            f = open(path, "rb")  # noqa: SIM115
        except OSError as e:
            raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
        limit = size_limit(path)
        with f:
            buf = FileBytes(f.fileno())
            members = list_members(buf)
            prefix = next(
                (m.name[: -len(".data/extern_modules")] for m in members if m.name.endswith(".data/extern_modules")), ""
            )
            sources: dict[str, tuple[str, str]] = {}  # module -> (member, grade)
            pickles: list[str] = []
            extern = ""
            for m in members:
                rel = m.name[len(prefix) :] if m.name.startswith(prefix) else m.name
                try:
                    if rel.endswith(".py"):
                        text = read_member(buf, m, min(limit, MAX_SOURCE_BYTES)).decode("utf-8", "replace")
                        self._grade_module(rel, text, sources)
                    elif rel == ".data/extern_modules":
                        extern = read_member(buf, m, 1 << 20).decode("utf-8", "replace")
                    elif rel.endswith(".pkl") or looks_like_pickle_head(member_head(buf, m)):
                        data = read_member(buf, m, limit)
                        streams = scan_region(data)
                        if not streams:
                            continue
                        if rel.endswith(".pkl") and streams[0].end is not None:
                            part = restricted_load(data, static=streams[0], source=rel)
                            self.scan.merge(part)
                            if self.scan.obj is None:
                                self.scan.obj, self.scan.storages = part.obj, part.storages
                            streams = streams[1:]
                        add_static_globals(self.scan, streams, rel, False)
                        pickles.append(rel)
                except ZipError as e:
                    self.scan.notes.append(f"{rel}: {e}")
        self._link_globals(sources)
        self.contents = build(self.scan) if self.scan.obj is not None else PickleContents()
        self.contents.infos.clear()  # tensor data of packages is not read (storages live in .data/)
        modules = sorted(sources)
        self._meta = {
            "reader": "every source file and pickle graded; nothing imported or unpickled with real globals",
            "modules": f"{len(modules)} packaged ({', '.join(modules[:4])}{', ...' if len(modules) > 4 else ''})",
            "pickles": ", ".join(pickles[:6]) + (", ..." if len(pickles) > 6 else ""),
            "extern_modules": ", ".join(extern.split()[:8]) + (", ..." if len(extern.split()) > 8 else ""),
        }

    def _grade_module(self, rel: str, text: str, sources: dict[str, tuple[str, str]]) -> None:
        module = rel[:-3].replace("/", ".")
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        grade, reasons = grade_source(text)
        sources[module] = (rel, grade)
        why = "; ".join(reasons) if reasons else "Python source that PackageImporter runs when it is imported"
        self._code.append(
            {
                "module": rel,
                "name": module,
                "grade": grade,
                "reason": f"packaged source: {why}",
                "count": 1,
                "where": [rel],
                "calls": [],
                "source": rel,
            }
        )

    def _link_globals(self, sources: dict[str, tuple[str, str]]) -> None:
        """A global from a packaged module runs that module's source: it takes the source's grade."""
        for (module, _name), ref in self.scan.globals.items():
            parts = module.split(".")
            owners = [".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in sources]
            if not owners:
                continue
            rel, grade = sources[owners[0]]
            if ref.grade == SAFE or grade == DANGEROUS:
                ref.grade = grade
            ref.reason = f"a class of the package itself: importing it runs {rel}"

    def tensors(self) -> list[TensorInfo]:
        return list(self.contents.infos.values())

    def structure(self) -> Any:
        return self.contents.structure

    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self._meta.items() if v}

    def pickle_globals(self) -> list[dict[str, Any]]:
        return [g.as_dict() for g in self.scan.globals.values()] + list(self._code)

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != SAFE]

    def read(self, key: str) -> np.ndarray:
        raise PtoolsError(f"{self.path}: tensor data of torch.package archives is not read")


def open_reader(path: Path) -> TorchPackageReader:
    return TorchPackageReader(path)


__all__ = ["GlobalRef", "TorchPackageReader", "grade_source", "open_reader", "sniff"]
