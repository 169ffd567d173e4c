"""A training log written twice: as CSV (``write_log_csv``) and as a PNG of panels
(``plot_log``, matplotlib Agg), both atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffembed.io import atomic_write


def write_log_csv(
    path: Path,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    lineterminator: str = "\n",
) -> None:
    """Write ``rows`` as CSV with ``columns`` (missing values empty, other keys left out),
    atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf,
        fieldnames=list(columns),
        restval="",
        extrasaction="ignore",
        lineterminator=lineterminator,
    )
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


@dataclass(frozen=True)
class Panel:
    """One plot of a log: ``keys`` against the x column; with ``labels`` (one per key) the
    lines are labelled and the panel gets a legend."""

    title: str
    keys: tuple[str, ...]
    ylabel: str = ""
    labels: tuple[str, ...] = ()
    marker: str | None = None


def plot_log(
    rows: Sequence[dict[str, Any]],
    path: Path,
    panels: Sequence[Panel],
    *,
    x: str = "step",
    columns: int = 2,
    figsize: tuple[float, float] = (10, 9),
    dpi: int = 100,
    line_width: float | None = None,
    grid: bool = False,
) -> None:
    """Plot ``panels`` of a training log (each key over the rows that have it) to a PNG (Agg),
    atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, tight_layout=True)
    FigureCanvasAgg(fig)
    n_rows = math.ceil(len(panels) / columns)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(n_rows, columns, i + 1)
        labels = panel.labels or (None,) * len(panel.keys)
        for key, label in zip(panel.keys, labels, strict=True):
            points = [(r[x], r[key]) for r in rows if key in r]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, lw=line_width, marker=panel.marker, label=label)
        ax.set(xlabel=x, ylabel=panel.ylabel, title=panel.title)
        if grid:
            ax.grid(alpha=0.3)
        if panel.labels:
            ax.legend()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
