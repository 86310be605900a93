"""Shared figure conventions: one style, PNG and SVG written side by side."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
plt.rcParams.update({"svg.hashsalt": "rankcollapse", "figure.dpi": 110})


def save(fig, png_path: str | Path) -> None:
    """Write ``fig`` as PNG and as SVG (same stem), atomically, then close it."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    for path in (png_path, png_path.with_suffix(".svg")):
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(
            tmp,
            bbox_inches="tight",
            metadata={"Date": None} if path.suffix == ".svg" else None,
        )
        os.replace(tmp, path)
    plt.close(fig)


def band_plot(
    data,
    x: str,
    hue: str,
    col: str,
    row: str | None,
    ylabel: str,
    logy: bool = False,
    hue_order=None,
):
    """Median line with an interquartile band (columns median, q25, q75)."""
    g = sns.FacetGrid(
        data,
        col=col,
        row=row,
        hue=hue,
        hue_order=hue_order,
        sharex=False,
        sharey=False,
        height=2.8,
        aspect=1.3,
        margin_titles=True,
    )

    def draw(data, color, label=None, **kw):
        ax = plt.gca()
        ax.plot(data[x], data["median"], color=color, label=label, lw=1.4)
        ax.fill_between(data[x], data["q25"], data["q75"], color=color, alpha=0.2, lw=0)

    g.map_dataframe(draw)
    if logy:
        g.set(yscale="log")
    g.set_axis_labels(x, ylabel)
    g.add_legend(title=hue)
    return g
