"""A training run folder: the marker that shows `ptools train` wrote it, its own files, and what --force may do.

The mechanism is the one `dataset synth` and `generate --dataset` use (`ptools.files.claim_folder`): a marker
file left in the folder shows ptools wrote it. A run folder also holds the user's own files (notes, figures,
a best checkpoint kept by hand), so --force does not replace the folder: it removes only the files ptools
writes, by their names, and only in a folder with the marker. The synthetic set in RUN/data carries synth's
own marker and is replaced only through `synthesize` when its settings differ from the run's.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ptools import __version__
from ptools.errors import PtoolsError
from ptools.files import atomic_path, probe_writable

RUN_MARKER = "run.json"  # written into every run folder by `ptools train`
CKPT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"
DATA_DIR = "data"
TOP_FILES = ("config.toml", "metrics.csv")
# The names train gives its files in each sub-folder (checkpoint.py and monitor.py write them).
OWN_NAMES = {
    CKPT_DIR: re.compile(r"^(latest|interrupted|step_\d+)\.pt$"),
    SAMPLES_DIR: re.compile(r"^step_\d+\.png$"),
    TENSORBOARD_DIR: re.compile(r"^events\.out\.tfevents\..+"),
}


def write_marker(run_dir: Path) -> None:
    """Mark `run_dir` as a `ptools train` run (kept when it is already there: the first start is what counts)."""
    path = run_dir / RUN_MARKER
    if path.is_file():
        return
    meta = {"generator": "ptools train", "ptools": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_path(path, force=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def own_files(run_dir: Path) -> list[Path]:
    """The files in `run_dir` at the names `ptools train` writes (whoever wrote them), marker excluded."""
    found = [run_dir / n for n in TOP_FILES if (run_dir / n).is_file()]
    for sub, pattern in OWN_NAMES.items():
        folder = run_dir / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file() and pattern.match(p.name))
    return found


@dataclass
class Claim:
    """What starting a new run in a folder will remove (nothing is removed until `apply`)."""

    run_dir: Path
    remove: list[Path] = field(default_factory=list)

    def apply(self) -> None:
        for path in self.remove:
            path.unlink(missing_ok=True)
        for sub in OWN_NAMES:  # a sub-folder goes only when nothing of the user's is left in it
            folder = self.run_dir / sub
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def claim_run_dir(run_dir: Path, force: bool) -> Claim:
    """Check that a new run may start in `run_dir` and list what --force will remove; removes nothing.

    Refused: an earlier run there without --force; with --force, files at train's names in a folder
    without the marker (they may be the user's: a config.toml of their own, say); a folder train cannot write.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PtoolsError(f"{run_dir}: exists and is not a folder", hint="choose another --out")
    probe_writable(run_dir)
    for sub in (CKPT_DIR, SAMPLES_DIR):
        if (run_dir / sub).is_dir():
            probe_writable(run_dir / sub)
    existing = own_files(run_dir)
    if not existing:
        return Claim(run_dir)
    shown = ", ".join(str(p.relative_to(run_dir)) for p in existing[:4]) + (" ..." if len(existing) > 4 else "")
    if not force:
        raise PtoolsError(
            f"{run_dir}: already holds a training run ({shown})",
            hint=f"continue it with --resume {run_dir}, choose another --out, or pass --force to remove the "
            "files of that run (only those) and start over",
        )
    if not (run_dir / RUN_MARKER).is_file():
        raise PtoolsError(
            f"{run_dir}: holds {shown} but no {RUN_MARKER}, so they are not known to be files `ptools train` "
            "wrote; --force removes nothing here",
            hint="choose another --out, or remove those files yourself",
        )
    return Claim(run_dir, existing)


def synth_settings_differ(data_dir: Path, n: int, size: int, seed: int) -> list[str]:
    """The settings that a synthetic set in `data_dir` (from its synth.json) was made with and this run does
    not ask for, as "--flag old (now new)" texts; empty when they all agree."""
    from ptools.data.synth import MARKER

    try:
        meta = json.loads((data_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PtoolsError(f"{data_dir / MARKER}: cannot read ({e})", hint="remove the folder or pass --data") from None
    wanted = {"--synth-n": ("n", n), "--image-size": ("size", size), "--seed": ("seed", seed)}
    return [f"{flag} {meta.get(key)} (now {value})" for flag, (key, value) in wanted.items() if meta.get(key) != value]
