"""Figures of a run: attribution maps of every method over the same test images (the paper's Fig. 2)
and the mean MIF/LIF curves per method and dataset, saved as PNG and PDF.

Figures are drawn on matplotlib's Agg canvas without pyplot (no display, no global backend switch)
and written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from xaibench.io import atomic_write_bytes

CURVE_LABELS = {"mif": "MIF", "lif": "LIF", "random": "random"}


def save_figure(figure: Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write <stem>.png and <stem>.pdf atomically; returns the paths."""
    FigureCanvasAgg(figure)
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(atomic_write_bytes(Path(f"{stem}.{fmt}"), buffer.getvalue()))
    return paths


def _display_image(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """[C, H, W] in [-1, 1] -> an array imshow draws (grey or RGB in [0, 1]) and its colour map."""
    pixels = ((image.float().cpu() + 1) / 2).clamp(0, 1)
    if pixels.shape[0] == 1:
        return pixels[0].numpy(), "gray"
    return pixels[:3].permute(1, 2, 0).numpy(), None


def attribution_maps(images: torch.Tensor, maps: Mapping[str, torch.Tensor], *,
                     masks: torch.Tensor | None = None, captions: Sequence[str] | None = None,
                     title: str = "", centre: bool = True) -> Figure:
    """A grid: first row the images [N, C, H, W] (true lesion outlined where `masks` [N, H, W] is given),
    then one row per method of its map [N, H, W] over the image, red = above, blue = below.

    With `centre` (the default) each map is drawn minus its own mean over the image: red marks the
    patches that count more for the target than the image's average patch, blue those that count less.
    A constant shift changes no ranking, so the MIF/LIF curves, SRG and localization see exactly what
    is drawn; without it a map whose values share a large common offset (OFA's phi sums to the class
    evidence, spread over all patches) shows as one flat colour. Each map has its own symmetric colour
    scale (max |value| of that image), so methods on different scales can be compared by their pattern.
    """
    n_images = images.shape[0]
    n_rows = 1 + len(maps)
    figure = Figure(figsize=(1.5 * n_images + 0.9, 1.5 * n_rows + (0.4 if title else 0.1)))
    axes = figure.subplots(n_rows, n_images, squeeze=False)
    for column in range(n_images):
        pixels, cmap = _display_image(images[column])
        ax = axes[0, column]
        ax.imshow(pixels, cmap=cmap, interpolation="nearest")
        if masks is not None:
            ax.contour(masks[column].float().cpu().numpy(), levels=[0.5], colors="lime", linewidths=0.8)
        if captions is not None:
            ax.set_title(captions[column], fontsize=7)
        for row, (name, values) in enumerate(maps.items(), start=1):
            ax = axes[row, column]
            value = values[column].float().cpu().numpy()
            if centre:
                value = value - value.mean()
            scale = float(np.abs(value).max()) or 1.0
            ax.imshow(pixels, cmap=cmap, interpolation="nearest", alpha=0.5)
            ax.imshow(value, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -scale, scale), interpolation="nearest",
                      alpha=0.75)
    for row, name in enumerate(["image", *maps]):
        axes[row, 0].set_ylabel(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def curves_figure(curves: pd.DataFrame, *, dataset_labels: Mapping[str, str] | None = None,
                  method_labels: Mapping[str, str] | None = None) -> Figure:
    """One panel per dataset: mean MIF (dashed) and LIF (solid) curve of each method, target probability
    against the fraction of patches removed; the random ordering (mean over methods) dotted in black.

    curves: rows (dataset, method, curve in {mif, lif, random}, x, y), y already averaged over images.
    """
    import seaborn as sns

    dataset_labels = dataset_labels or {}
    method_labels = method_labels or {}
    datasets = list(dict.fromkeys(curves["dataset"]))
    frame = curves.assign(Method=curves["method"].map(lambda m: method_labels.get(m, m)),
                          Curve=curves["curve"].map(lambda c: CURVE_LABELS.get(c, c)))
    figure = Figure(figsize=(3.6 * len(datasets) + 1.6, 3.2))
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
    with sns.axes_style("whitegrid"):
        for ax, dataset in zip(axes, datasets):
            part = frame[frame["dataset"] == dataset]
            ordered = part[part["curve"].isin(["lif", "mif"])]
            sns.lineplot(data=ordered, x="x", y="y", hue="Method", style="Curve", style_order=["LIF", "MIF"],
                         errorbar=None, ax=ax, legend=ax is axes[-1])
            random = part[part["curve"] == "random"].groupby("x")["y"].mean()
            if len(random):
                ax.plot(random.index, random.to_numpy(), color="black", linestyle=":", linewidth=1.2,
                        label="random order")
            ax.set_title(dataset_labels.get(dataset, dataset))
            ax.set_xlabel("fraction of patches removed")
            ax.set_ylabel("target probability")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.grid(True, alpha=0.3)
    legend_ax = axes[-1]
    handles, labels = legend_ax.get_legend_handles_labels()
    if legend_ax.get_legend() is not None:
        legend_ax.get_legend().remove()
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    return figure
