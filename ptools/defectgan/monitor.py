"""What a training run reports: metrics.csv, TensorBoard, progress on stderr, and sample grids."""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ptools.errors import PtoolsError
from ptools.files import atomic_path

if TYPE_CHECKING:
    from PIL import Image

METRIC_COLUMNS = (
    "step",
    "lr_g",
    "lr_d",
    "d_loss",
    "d_adv",
    "d_cls",
    "d_gp",
    "g_loss",
    "g_adv",
    "g_cls",
    "g_cycle",
    "g_map_cycle",
    "g_sparsity",
    "g_mask",
    "g_pair",
    "data_s",
    "step_s",
)
LOSS_COLUMNS = METRIC_COLUMNS[3:15]
ESTIMATE_STEPS = 5  # the run-time estimate is printed after this many timed steps (or 10 s)
PLAIN_EVERY_S = 30.0  # without a TTY a progress line at least this often, whatever --log-every says


def format_duration(seconds: float) -> str:
    """12s, 4m05s, 3h20m, 41.2 days: short enough for a progress line, exact enough to plan by."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86_400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{seconds / 86_400:.1f} days"


def require_tensorboard() -> None:
    """Fail before any work when --log tensorboard is asked for without the package."""
    import importlib.util

    from ptools import install_hint

    if importlib.util.find_spec("tensorboard") is None:
        raise PtoolsError(
            "--log tensorboard: the tensorboard package is not installed",
            hint=f"{install_hint('tensorboard')}, or use --log csv",
        )


class MetricsLog:
    """One CSV row per step (floats at full precision, so runs can be compared exactly), plus TensorBoard.

    On resume the rows after the resumed step are dropped first: they belong to steps that will be redone.
    """

    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.csv"
        if resume_step is not None and self.path.is_file():
            self._truncate_after(resume_step)
        else:
            with atomic_path(self.path, force=True) as tmp:
                tmp.write_text(",".join(METRIC_COLUMNS) + "\n")
        self._file = self.path.open("a", newline="")
        self._writer = csv.writer(self._file)
        self._tb = None
        if tensorboard:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        with atomic_path(self.path, force=True) as tmp, tmp.open("w", newline="") as out:
            csv.writer(out).writerows(kept)

    def write(self, row: dict[str, float]) -> None:
        self._writer.writerow([_cell(row.get(c)) for c in METRIC_COLUMNS])
        self._file.flush()
        if self._tb is not None:
            step = int(row["step"])
            for name in METRIC_COLUMNS[1:]:
                value = row.get(name)
                if value is not None:
                    group = "lr" if name.startswith("lr") else "time" if name.endswith("_s") else "loss"
                    self._tb.add_scalar(f"{group}/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(int(value))


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """metrics.csv back as dicts (empty cells -> None): for tests and benchmarks."""
    with Path(path).open(newline="") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


class Progress:
    """A rich progress bar (step/s, ETA, main losses) on a TTY, plain periodic lines otherwise (CI logs)."""

    def __init__(self, total: int, start: int, every: int, enabled: bool = True, device: str = "cpu") -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.total, self.start, self.every = total, start, max(every, 1)
        self.enabled = enabled
        self.device = device
        self.t0 = time.perf_counter()
        self._last_line = self.t0
        self._first_step_t: float | None = None  # the first iteration pays warm-up costs: rates start after it
        self._estimated = False
        self.latest: dict[str, float] = {}
        self._bar = None
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress
            from rich.table import Column

            # The bar, the step, the rate and the ETA keep their width; the losses take what is left and are
            # cut (…) on a narrow terminal, instead of pushing the rest off an 80-column line.
            losses = Column(no_wrap=True, overflow="ellipsis", ratio=1, min_width=1)
            self._bar = RichProgress(
                TextColumn("train", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=20),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[rate]}", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)),
                TextColumn("ETA", table_column=Column(no_wrap=True)),
                TimeRemainingColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[losses]}", table_column=losses),
                console=self.console,
                transient=False,
                expand=True,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, rate="", losses="")
            self._bar.start()

    def _summary(self) -> str:
        keys = ("d_loss", "g_loss", "g_cycle", "g_sparsity")
        return " ".join(f"{k}={self.latest[k]:.3f}" for k in keys if self.latest.get(k) is not None)

    def update(self, step: int, row: dict[str, Any]) -> None:
        """`step` = iterations completed so far."""
        self.latest.update({k: v for k, v in row.items() if v is not None})
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._first_step_t is None:
            self._first_step_t = now
        elapsed = now - self.t0
        timed = step - self.start - 1  # iterations since the first one, whose warm-up would skew the rate
        rate = timed / (now - self._first_step_t) if timed > 0 else (step - self.start) / max(elapsed, 1e-9)
        if not self._estimated and step < self.total and timed > 0 and (timed >= ESTIMATE_STEPS or elapsed >= 10):
            self._estimated = True
            self._print_estimate(rate, step)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, rate=f"{rate:.2f} step/s", losses=self._summary())
        elif step % self.every == 0 or step == self.total or now - self._last_line >= PLAIN_EVERY_S:
            self._last_line = now
            eta = (self.total - step) / rate if rate > 0 else math.inf
            eta_text = format_duration(eta) if math.isfinite(eta) else "?"
            print(
                f"step {step}/{self.total} {rate:.2f} step/s eta {eta_text} {self._summary()}",
                file=sys.stderr,
                flush=True,
            )

    def _print_estimate(self, rate: float, step: int) -> None:
        """Once, early: how long the whole run will take at the rate measured so far (a warning past a day)."""
        left = (self.total - step) / rate
        wrap = not self.console.is_terminal  # a log line stays one line; a terminal wraps it between words
        text = (
            f"ptools train: {rate:.2f} step/s on {self.device} over the first steps: the remaining "
            f"{self.total - step:,} steps will take about {format_duration(left)}"
        )
        if left > 86_400:
            hint = "a GPU, --preset small, or fewer --steps" if self.device.startswith("cpu") else "fewer --steps"
            self.console.print(f"[yellow]{text}[/yellow] (consider {hint})", highlight=False, soft_wrap=wrap)
        else:
            self.console.print(text, highlight=False, soft_wrap=wrap)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def colorize_control(control: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) control map -> (N,3,H,W) in [0,1], in `ptools dataset preview`'s colours (its legend applies):
    channel 0 ("normal") dark grey, channel i+1 the colour of label i."""
    from ptools.data.preview import NORMAL_COLOUR, PALETTE

    c = control.shape[1]
    palette = torch.tensor([NORMAL_COLOUR] + [PALETTE[i % len(PALETTE)] for i in range(c - 1)], dtype=torch.float32)
    palette = (palette / 255).to(control.device, control.dtype)
    return torch.einsum("nchw,ck->nkhw", control, palette).clamp(0, 1)


# Each translation stands right of its source: input -> (control, map) -> synthetic defect, real defect -> restored.
SAMPLE_COLUMNS = ("input", "control", "map", "synthetic defect", "real defect", "restored")
_MIN_TILE = 128  # tiles are enlarged (nearest) to at least this width, so a 64 px run's titles fit


def render_sample_grid(
    columns: list[torch.Tensor],
    titles: list[str],
    row_names: list[str],
    heading: str,
    row_colours: list[tuple[int, int, int]] | None = None,
) -> Image.Image:
    """Rows of [col0 | col1 | ...] tiles (each column (N,3,H,W) in [0,1]) as a titled picture.

    A heading line (run step), one title over each column and the row's name on its left: a person
    reading a grid from step 20,000 must know which image is which without the source code.
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    from ptools.data.preview import _font

    n, ncol = columns[0].shape[0], len(columns)
    size = columns[0].shape[-1]
    scale = max(1, -(-_MIN_TILE // size))
    tiles = torch.stack([col.float().cpu().clamp(0, 1) for col in columns], dim=1).reshape(n * ncol, 3, size, size)
    if scale > 1:
        tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest")
    pad = 2
    grid = make_grid(tiles, nrow=ncol, padding=pad, pad_value=1.0)
    body = Image.fromarray((grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    font, small = _font(14), _font(12)
    swatch = 14 if row_colours else 0  # a colour key before each row's name: its label's control colour
    left = 8 + swatch + max(int(small.getlength(name)) for name in row_names)
    head_h, title_h = 22, 18
    out = Image.new("RGB", (left + body.width, head_h + title_h + body.height), (255, 255, 255))
    out.paste(body, (left, head_h + title_h))
    draw = ImageDraw.Draw(out)
    draw.text((pad + 2, 3), heading, fill=(0, 0, 0), font=font)
    tile = size * scale
    for c, title in enumerate(titles):
        x = left + pad + c * (tile + pad)
        text = title
        while small.getlength(text) > tile and len(text) > 3:  # never spill into the next column
            text = text[:-2] + "…"
        draw.text((x + (tile - small.getlength(text)) / 2, head_h + 2), text, fill=(0, 0, 0), font=small)
    for r, name in enumerate(row_names):
        y = head_h + title_h + pad + r * (tile + pad) + tile // 2 - 7
        if row_colours:
            draw.rectangle([4, y + 2, 14, y + 12], fill=row_colours[r], outline=(0, 0, 0))
        draw.text((4 + swatch, y), name, fill=(0, 0, 0), font=small)
    return out


def save_sample_grid(
    path: Path,
    columns: list[torch.Tensor],
    titles: list[str],
    row_names: list[str],
    heading: str,
    row_colours: list[tuple[int, int, int]] | None = None,
) -> Path:
    """`render_sample_grid` written as a PNG, atomically."""
    image = render_sample_grid(columns, titles, row_names, heading, row_colours)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, force=True) as tmp:
        image.save(tmp, format="PNG")
    return path
