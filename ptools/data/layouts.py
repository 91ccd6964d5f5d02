"""Find the samples of a defect dataset on disk (seed layout, label folders, CSV manifest) without torch.

The scan is shared by `DefectDataset` (which uses the usable samples) and `check_dataset` (which also
reports what the scan found wrong: missing partners, duplicate stems, manifest rows naming no file).
"""

from __future__ import annotations

import csv
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ptools.checkpoint._text import oneline
from ptools.errors import PtoolsError

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
NORMAL_DIRS = ("normal", "background")  # folders layout: the defect-free pool (CODEBRIM calls it background)
MASK_DIR = "masks"  # folders layout: optional ROOT/{label}/masks/STEM.png
SEED_DIRS = ("normal", "defect", "defect_segmentation")
LAYOUTS = ("seed", "folders", "csv")
NORMAL_LABELS = frozenset({"", "normal", "background"})  # CSV labels meaning "no defect"


@dataclass(frozen=True)
class Sample:
    """One defect image, its labels, and (when known) its paired normal image and its mask."""

    defect: Path
    labels: tuple[str, ...]
    normal: Path | None = None
    mask: Path | None = None

    @property
    def stem(self) -> str:
        return self.defect.stem


@dataclass(frozen=True)
class Problem:
    """Something wrong with the dataset: `kind` is a stable identifier, `detail` says it for people."""

    kind: str
    path: str
    detail: str
    severity: str = "error"  # "error" fails `dataset check` (exit 1); "warning" is only reported


@dataclass
class DatasetIndex:
    """What a scan found: the usable samples, the normal pool, the label names, and the problems."""

    root: Path
    layout: str
    labels: list[str]
    samples: list[Sample]
    normals: list[Path]
    paired: bool
    problems: list[Problem] = field(default_factory=list)
    # Every file the scan looked at, by role, so `check` can open each once.
    files: dict[str, list[Path]] = field(default_factory=dict)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".")


def _images_by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    """Map stem -> image in `folder`; two files with one stem (a.jpg, a.png) make pairing ambiguous."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if not is_image(path):
            continue
        if path.stem in found:
            problems.append(
                Problem("duplicate_stem", str(path), f"same stem as {found[path.stem].name}; the first is used")
            )
            continue
        found[path.stem] = path
    return found


def _check_root(root: Path) -> None:
    """A folder or a regular file; anything else (a FIFO would block the first read) is refused by type."""
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        raise PtoolsError(f"{root}: no such file or folder") from None
    except OSError as e:
        raise PtoolsError(f"{root}: cannot read ({e.strerror})") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise PtoolsError(f"{root}: not a dataset (not a folder or a regular file: a FIFO, socket or device)")


def _refuse_one_seed_label(root: Path) -> None:
    """ROOT/LABEL itself (normal/, defect/, defect_segmentation/) would read as a folders-layout set with
    the labels "defect" and "defect_segmentation", and every file would be an error: say what it is."""
    if not root.is_dir() or not (root / "defect").is_dir():
        return
    if not (root / "defect_segmentation").is_dir():
        # normal/ + defect/ alone is also a plausible folders-layout set with one label, "defect": only
        # stems paired across the two (the seed layout's pairing) tell a seed label apart.
        if not (root / "normal").is_dir():
            return
        normal = {p.stem for p in (root / "normal").iterdir() if is_image(p)}
        defect = {p.stem for p in (root / "defect").iterdir() if is_image(p)}
        if not defect or len(normal & defect) < len(defect) / 2:
            return
    raise PtoolsError(
        f"{root}: this looks like one label of a seed-layout dataset; pass its parent",
        hint=f"it holds normal/ and defect/ paired by name; the dataset is {root.resolve().parent}",
    )


def detect_layout(root: Path) -> str:
    """Name the layout of `root`, or raise PtoolsError (exit 2) when it is not a dataset at all."""
    _check_root(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise PtoolsError(f"{root}: not a dataset (expected a folder or a .csv manifest)")
    _refuse_one_seed_label(root)
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if any((d / "defect").is_dir() for d in subdirs):
        return "seed"
    names = {d.name for d in subdirs}
    if any(n in names for n in NORMAL_DIRS) and any(
        any(is_image(p) for p in d.iterdir()) for d in subdirs if d.name not in NORMAL_DIRS
    ):
        return "folders"
    if _find_manifest(root) is not None:
        return "csv"
    raise PtoolsError(
        f"{root}: not a dataset (no LABEL/defect folders, no normal/ + LABEL/ folders, no .csv manifest)",
        hint="see `ptools dataset --help` for the layouts, or create one with `ptools dataset synth DIR`",
    )


def _find_manifest(root: Path) -> Path | None:
    if (root / "manifest.csv").is_file():
        return root / "manifest.csv"
    csvs = sorted(p for p in root.glob("*.csv") if p.is_file())
    return csvs[0] if len(csvs) == 1 else None


def scan(root: str | Path, layout: str = "auto") -> DatasetIndex:
    """Scan `root` in the given layout ("auto" detects it)."""
    root = Path(root)
    if layout not in (*LAYOUTS, "auto"):
        raise PtoolsError(f"unknown dataset layout {layout!r}", hint=f"use auto or one of {', '.join(LAYOUTS)}")
    try:
        if layout == "auto":
            layout = detect_layout(root)
        _check_root(root)
        if layout == "seed":
            return _scan_seed(root)
        if layout == "folders":
            return _scan_folders(root)
        return _scan_csv(root)
    except OSError as e:  # a folder that vanished or cannot be listed half-way through the scan
        where = e.filename if e.filename is not None else root
        raise PtoolsError(f"{where}: cannot read ({e.strerror or oneline(e)})") from None


def _scan_seed(root: Path) -> DatasetIndex:
    """ROOT/{label}/normal|defect|defect_segmentation/NAME.*, paired by stem inside each label."""
    if not root.is_dir():
        raise PtoolsError(f"{root}: the seed layout needs a folder")
    problems: list[Problem] = []
    samples: list[Sample] = []
    normals: list[Path] = []
    files: dict[str, list[Path]] = {"normal": [], "defect": [], "mask": []}
    label_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / "defect").is_dir()]
    if not label_dirs:
        _refuse_one_seed_label(root)
        raise PtoolsError(f"{root}: not a seed-layout dataset (no LABEL/defect folder)")
    for label_dir in label_dirs:
        label = label_dir.name
        normal = _images_by_stem(label_dir / "normal", problems)
        defect = _images_by_stem(label_dir / "defect", problems)
        masks = _images_by_stem(label_dir / "defect_segmentation", problems)
        files["normal"] += normal.values()
        files["defect"] += defect.values()
        files["mask"] += masks.values()
        normals += normal.values()
        for stem, path in defect.items():
            if stem not in normal:
                problems.append(Problem("missing_normal", str(path), f"no {label}/normal/{stem}.* to pair with"))
                continue  # a paired layout cannot train defacement on it: left out of the dataset
            if stem not in masks:
                problems.append(Problem("missing_mask", str(path), f"no {label}/defect_segmentation/{stem}.*"))
            samples.append(Sample(path, (label,), normal[stem], masks.get(stem)))
        for stem, path in normal.items():
            if stem not in defect:
                problems.append(
                    Problem("missing_defect", str(path), f"no {label}/defect/{stem}.* to pair with", "warning")
                )
        for stem, path in masks.items():
            if stem not in defect:
                problems.append(Problem("orphan_mask", str(path), f"no {label}/defect/{stem}.* for this mask"))
    labels = [d.name for d in label_dirs]
    return DatasetIndex(root, "seed", labels, samples, normals, True, problems, files)


def _scan_folders(root: Path) -> DatasetIndex:
    """ROOT/normal/* (or background/) and ROOT/{label}/*, masks optional in ROOT/{label}/masks/STEM.*."""
    if not root.is_dir():
        raise PtoolsError(f"{root}: the folders layout needs a folder")
    _refuse_one_seed_label(root)
    normal_dir = next((root / n for n in NORMAL_DIRS if (root / n).is_dir()), None)
    if normal_dir is None:
        seed = any((d / "defect").is_dir() for d in root.iterdir() if d.is_dir())
        raise PtoolsError(
            f"{root}: not a folders-layout dataset (no {' or '.join(f'{n}/' for n in NORMAL_DIRS)} folder)"
            + ("; it is a seed-layout dataset (LABEL/defect folders)" if seed else ""),
            hint="use --layout seed, or --layout auto to detect it" if seed else "see `ptools dataset --help`",
        )
    problems: list[Problem] = []
    normals = list(_images_by_stem(normal_dir, problems).values())
    files: dict[str, list[Path]] = {"normal": list(normals), "defect": [], "mask": []}
    samples: list[Sample] = []
    labels: list[str] = []
    first_seen: dict[str, Path] = {}
    for label_dir in sorted(root.iterdir()):
        if not label_dir.is_dir() or label_dir.name in NORMAL_DIRS or label_dir.name.startswith("."):
            continue
        images = _images_by_stem(label_dir, problems)
        if not images:
            continue
        labels.append(label_dir.name)
        masks = _images_by_stem(label_dir / MASK_DIR, problems)
        files["defect"] += images.values()
        files["mask"] += masks.values()
        for stem, path in images.items():
            if stem in first_seen:
                # The same name under two labels is usually one image counted twice; use the CSV
                # manifest for multi-label images.
                problems.append(Problem("duplicate_stem", str(path), f"same stem as {first_seen[stem]}", "warning"))
            first_seen.setdefault(stem, path)
            samples.append(Sample(path, (label_dir.name,), None, masks.get(stem)))
        for stem, path in masks.items():
            if stem not in images:
                problems.append(Problem("orphan_mask", str(path), f"no {label_dir.name}/{stem}.* for this mask"))
    if not normals:
        problems.append(Problem("no_normals", str(normal_dir), "the normal pool is empty"))
    return DatasetIndex(root, "folders", labels, samples, normals, False, problems, files)


_EXTRA = "\0extra"  # csv.DictReader files the fields beyond the header under the key None, as a list


def _cell(value: str | list[str] | None) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return (value or "").strip()


def _scan_csv(root: Path) -> DatasetIndex:
    """A manifest `path,labels,mask` (labels `;`-separated, empty or "normal" for normal images)."""
    manifest = root if root.is_file() else _find_manifest(root)
    if manifest is None:
        raise PtoolsError(f"{root}: no CSV manifest (manifest.csv, or exactly one *.csv)")
    base = manifest.parent
    problems: list[Problem] = []
    samples: list[Sample] = []
    normals: list[Path] = []
    files: dict[str, list[Path]] = {"normal": [], "defect": [], "mask": []}
    labels: set[str] = set()
    seen: dict[str, int] = {}
    stems: dict[str, str] = {}
    seen_stem: dict[str, int] = {}
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            if "path" not in header or "labels" not in header:
                raise PtoolsError(
                    f"{manifest}: not a dataset manifest (header {','.join(header) or 'empty'})",
                    hint="the header must be path,labels[,mask]",
                )
            rows = [{_EXTRA if k is None else k.strip(): _cell(v) for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as e:
        raise PtoolsError(f"{manifest}: not a UTF-8 CSV manifest ({e.reason})") from None
    except csv.Error as e:  # a field over csv's 128 KiB limit, a NUL byte, a stray quote at the end
        raise PtoolsError(
            f"{manifest}: not a readable CSV manifest (line {reader.line_num}: {oneline(str(e))})"
        ) from None
    for line, row in enumerate(rows, start=2):
        where = f"{manifest}:{line}"
        if _EXTRA in row:
            problems.append(Problem("bad_row", where, f"more fields than the header's {len(header)}"))
            continue
        if not row.get("path"):
            problems.append(Problem("bad_row", where, "empty path"))
            continue
        path = base / row["path"]
        names = tuple(dict.fromkeys(n.strip() for n in row.get("labels", "").split(";") if n.strip()))
        key = str(path.resolve()) if path.exists() else str(path)
        if key in seen:
            problems.append(Problem("duplicate_row", where, f"{row['path']} is also listed on line {seen[key]}"))
            continue
        if path.stem in stems:
            # Outputs and previews are named by stem: two images with one stem would overwrite each other.
            problems.append(
                Problem(
                    "duplicate_stem", where, f"same stem as {stems[path.stem]} (line {seen_stem[path.stem]})", "warning"
                )
            )
        seen[key] = line
        stems.setdefault(path.stem, row["path"])
        seen_stem.setdefault(path.stem, line)
        if not path.is_file():
            problems.append(Problem("missing_file", where, f"{row['path']} does not exist"))
            continue
        if not names or all(n.lower() in NORMAL_LABELS for n in names):
            normals.append(path)
            files["normal"].append(path)
            continue
        names = tuple(n for n in names if n.lower() not in NORMAL_LABELS)
        mask = None
        if row.get("mask"):
            mask = base / row["mask"]
            if not mask.is_file():
                problems.append(Problem("missing_mask", where, f"mask {row['mask']} does not exist"))
                mask = None
            else:
                files["mask"].append(mask)
        files["defect"].append(path)
        labels.update(names)
        samples.append(Sample(path, names, None, mask))
    if not normals:
        problems.append(Problem("no_normals", str(manifest), "no row lists a normal image"))
    return DatasetIndex(root, "csv", sorted(labels), samples, normals, False, problems, files)
