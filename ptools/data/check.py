"""Validate a defect dataset before training: partners, decodability, sizes, masks, modes, balance.

Read-only: files are opened and decoded, never written. Works without torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptools.checkpoint._text import oneline
from ptools.data.imageio import ImageError, decode, open_image
from ptools.data.layouts import Problem, scan

IMBALANCE_RATIO = 10.0  # largest label count / smallest above which balance is flagged
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
MAX_VALUES_SHOWN = 8


@dataclass(frozen=True)
class FileInfo:
    size: tuple[int, int]
    mode: str
    values: tuple[int, ...] | None = None  # masks: the distinct grey levels


@dataclass
class CheckReport:
    """What `check_dataset` found; `ok` is False when any problem has severity "error"."""

    root: str
    layout: str
    labels: list[str]
    paired: bool
    counts: dict[str, int]
    normals: int
    samples: int
    files_checked: int
    balance: float | None  # smallest label count / largest (1.0 = balanced)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))


def _inspect(path: Path, is_mask: bool) -> FileInfo | Problem:
    try:
        with open_image(path) as img:
            size, mode = img.size, img.mode
            decode(img)  # a full decode: header-only opens miss truncated files
            values = None
            if is_mask:
                grey = img if img.mode in ("L", "1", "P") else img.convert("L")  # P: class indices
                hist = np.bincount(np.asarray(grey, dtype=np.uint8).ravel(), minlength=256)
                values = tuple(int(v) for v in np.flatnonzero(hist))
    except ImageError as e:
        text = str(e)
        if "cannot identify image file" in text:
            return Problem("unreadable", str(path), "not an image PIL can identify")
        kind = "truncated" if "truncated" in text.lower() else "unreadable"
        return Problem(kind, str(path), text)
    except (OSError, ValueError) as e:  # converting a damaged image
        return Problem("unreadable", str(path), oneline(str(e)))
    return FileInfo(size, mode, values)


def _mask_problems(path: Path, info: FileInfo) -> list[Problem]:
    values = info.values or ()
    out: list[Problem] = []
    if not set(values) <= {0, 255} and not set(values) <= {0, 1}:
        shown = ", ".join(str(v) for v in values[:MAX_VALUES_SHOWN])
        shown += " ..." if len(values) > MAX_VALUES_SHOWN else ""
        out.append(Problem("mask_not_binary", str(path), f"{len(values)} grey levels: {shown}"))
    if values == (0,):
        out.append(Problem("mask_empty", str(path), "the mask marks no pixel"))
    elif 0 not in values:
        out.append(Problem("mask_full", str(path), "the mask covers the whole image"))
    return out


def check_dataset(
    root: str | Path, layout: str = "auto", progress: Callable[[int, int], None] | None = None
) -> CheckReport:
    """Scan and decode every file of the dataset at `root`.

    Raises PtoolsError (exit 2) when `root` is not a dataset at all; everything else is a Problem.
    """
    index = scan(root, layout)
    problems = list(index.problems)
    infos: dict[Path, FileInfo] = {}
    roles = [(p, role == "mask") for role, paths in index.files.items() for p in paths]
    for done, (path, is_mask) in enumerate(roles, start=1):
        result = _inspect(path, is_mask)
        if isinstance(result, Problem):
            problems.append(result)
        else:
            infos[path] = result
            if is_mask:
                problems += _mask_problems(path, result)
        if progress:
            progress(done, len(roles))

    usable = 0
    counts: Counter[str] = Counter({label: 0 for label in index.labels})
    for sample in index.samples:
        defect = infos.get(sample.defect)
        if defect is None:
            continue
        normal = infos.get(sample.normal) if sample.normal else None
        if sample.normal is not None and normal is None:
            continue  # its normal could not be decoded: already reported
        usable += 1
        counts.update(sample.labels)
        if normal is not None and normal.size != defect.size:
            problems.append(
                Problem("size_mismatch", str(sample.defect), f"defect {_wh(defect)} but normal {_wh(normal)}")
            )
        mask = infos.get(sample.mask) if sample.mask else None
        if mask is not None and mask.size != defect.size:
            problems.append(Problem("size_mismatch", str(sample.mask), f"mask {_wh(mask)} but defect {_wh(defect)}"))

    images = [(p, i) for role in ("normal", "defect") for p in index.files.get(role, []) if (i := infos.get(p))]
    gray = [p for p, i in images if i.mode in GRAY_MODES]
    if gray and len(gray) < len(images):
        colour = len(images) - len(gray)
        # Report the minority: those are the odd ones out.
        if len(gray) <= colour:
            odd, what = gray, f"grayscale while {colour} other images are colour"
        else:
            odd = [p for p, i in images if i.mode not in GRAY_MODES]
            what = f"colour while {len(gray)} others are grayscale"
        problems += [Problem("mode_mix", str(p), f"{infos[p].mode}: {what}") for p in odd]

    for label, count in counts.items():
        if count == 0:
            problems.append(Problem("empty_label", label, "no usable defect sample has this label"))
    nonzero = [c for c in counts.values() if c > 0]
    balance = (min(nonzero) / max(nonzero)) if nonzero else None
    if balance is not None and balance < 1 / IMBALANCE_RATIO:
        problems.append(
            Problem(
                "imbalance",
                str(index.root),
                f"largest label has {max(nonzero)} samples, smallest {min(nonzero)} "
                f"(more than {IMBALANCE_RATIO:g}x apart)",
                "warning",
            )
        )
    if usable == 0:
        problems.append(Problem("no_samples", str(index.root), "no usable defect sample"))
    problems.sort(key=lambda p: (p.severity != "error", p.kind, p.path))
    return CheckReport(
        root=str(index.root),
        layout=index.layout,
        labels=list(index.labels),
        paired=index.paired,
        counts=dict(counts),
        normals=len(index.normals),
        samples=usable,
        files_checked=len(roles),
        balance=balance,
        problems=problems,
    )


def _wh(info: FileInfo) -> str:
    return f"{info.size[0]}x{info.size[1]}"
