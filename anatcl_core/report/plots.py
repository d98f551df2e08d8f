"""Report figures (matplotlib Figures, no pyplot): training curves, radar, bars, embedding maps.

Every function takes plain tables (pandas) read from stage outputs and returns a Figure; the
caller saves it. Colours follow the order of the methods given, so a method keeps its colour in
every figure. The spread over seeds (:func:`seed_spread`, :func:`mean_curves`) is drawn with
seaborn from long tables (:mod:`anatcl_core.report.explore`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


def method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per method (tab10 order)."""
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _method_panels(n_methods: int, dpi: int) -> tuple[Figure, np.ndarray]:
    """A grid of one panel per method (up to 4 a row), the panels past ``n_methods`` switched off."""
    ncols = min(4, max(1, n_methods))
    nrows = int(np.ceil(n_methods / ncols)) if n_methods else 1
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), dpi=dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in list(axes.flat)[n_methods:]:
        ax.axis("off")
    return fig, axes


def training_curves(curves: pd.DataFrame, labels: Mapping[str, str], dpi: int) -> Figure:
    """Loss per epoch, one panel per method, one line per seed.

    Args:
        curves: long table with columns ``method``, ``seed``, ``epoch``, ``loss``.
        labels: display name of each method.
    """
    methods = list(dict.fromkeys(curves["method"]))
    fig, axes = _method_panels(len(methods), dpi)
    colours = method_colours(methods)
    for ax, method in zip(axes.flat, methods):
        part = curves[curves["method"] == method]
        for seed, run in part.groupby("seed"):
            ax.plot(run["epoch"], run["loss"], color=colours[method], alpha=0.5 + 0.5 / (1 + seed),
                    label=f"seed {seed}")
        ax.set_title(labels.get(method, method), fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("training loss")
    fig.tight_layout()
    return fig


def radar(means: pd.DataFrame, labels: Mapping[str, str], *, dpi: int, chance: float = 0.5) -> Figure:
    """Balanced accuracy per task on a radar (one polygon per method).

    Args:
        means: methods (index) x tasks (columns) of mean balanced accuracy.
    """
    tasks = list(means.columns)
    angles = np.linspace(0, 2 * np.pi, len(tasks), endpoint=False).tolist()
    fig = Figure(figsize=(5.5, 5.5), dpi=dpi)
    ax = fig.add_subplot(projection="polar")
    colours = method_colours(list(means.index))
    for method, row in means.iterrows():
        values = row.to_numpy(float).tolist()
        ax.plot(angles + angles[:1], values + values[:1], color=colours[method], linewidth=1.5,
                label=labels.get(method, method))
        ax.fill(angles + angles[:1], values + values[:1], color=colours[method], alpha=0.05)
    ax.plot(np.linspace(0, 2 * np.pi, 100), np.full(100, chance), color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(angles)
    ax.set_xticklabels([t.upper() for t in tasks])
    low = float(np.nanmin(means.to_numpy(float))) if means.size else chance
    ax.set_ylim(min(chance, low) - 0.05, 1.0)
    ax.set_title("Balanced accuracy per diagnosis task (mean over seeds)", fontsize=10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=7)
    fig.tight_layout()
    return fig


def grouped_bars(means: pd.DataFrame, stds: pd.DataFrame, labels: Mapping[str, str], ylabel: str,
                 title: str, *, dpi: int, reference: float | None = None) -> Figure:
    """Bars of methods (colours) within groups (x axis), error bars = std over seeds."""
    methods, groups = list(means.index), list(means.columns)
    colours = method_colours(methods)
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(max(5.0, 1.3 * len(groups) + 2), 3.4), dpi=dpi)
    ax = fig.subplots()
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means.loc[method].to_numpy(float), width,
               yerr=stds.loc[method].to_numpy(float), color=colours[method], capsize=2,
               label=labels.get(method, method))
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def embedding_maps(maps: Mapping[str, np.ndarray], age: np.ndarray, condition: np.ndarray,
                   labels: Mapping[str, str], *, dpi: int, kind: str = "PCA") -> Figure:
    """2-D embedding of each method's features, coloured by age (left) and condition (right).

    Args:
        maps: method -> ``(N, 2)`` coordinates of the same N subjects.
        age: ``(N,)`` ages; condition: ``(N,)`` group names (e.g. "control", "ad").
    """
    groups = sorted(set(condition), key=lambda g: (g != "control", g))
    cmap = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(7.5, 3.0 * len(maps)), dpi=dpi)
    axes = fig.subplots(len(maps), 2, squeeze=False)
    for row, (method, xy) in enumerate(maps.items()):
        points = axes[row, 0].scatter(xy[:, 0], xy[:, 1], c=age, s=3, cmap="viridis")
        fig.colorbar(points, ax=axes[row, 0], label="age (years)")
        for i, group in enumerate(groups):
            sel = condition == group
            axes[row, 1].scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(i % 10), label=group,
                                 alpha=0.4 if group == "control" else 0.8)
        axes[row, 0].set_ylabel(f"{labels.get(method, method)}\n{kind} 2", fontsize=9)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("coloured by age", fontsize=9)
    axes[0, 1].set_title("coloured by condition", fontsize=9)
    axes[0, 1].legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    return fig


def ablation_panels(panels: Mapping[str, tuple[pd.Series, pd.Series]], labels: Mapping[str, str],
                    ylabel: str, dpi: int) -> Figure:
    """One panel per ablation: a metric (mean ± std over seeds) against the variant.

    Args:
        panels: ablation name -> (means, stds), both indexed by method in display order.
    """
    ncols = min(3, max(1, len(panels)))
    nrows = int(np.ceil(len(panels) / ncols)) if panels else 1
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows), dpi=dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (name, (mean, std)) in zip(axes.flat, panels.items()):
        x = np.arange(len(mean))
        ax.errorbar(x, mean.to_numpy(float), yerr=std.to_numpy(float), fmt="o", capsize=3, color="C0")
        ax.set_xticks(x)
        ax.set_xticklabels([labels.get(m, m) for m in mean.index], rotation=30, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def icc_boxes(per_dim: pd.DataFrame, labels: Mapping[str, str], dpi: int) -> Figure:
    """Distribution over dimensions of the between-site ICC(2,1), one box per method.

    Args:
        per_dim: long table with columns ``method`` and ``icc_2_1`` (one row per dimension).
    """
    methods = list(dict.fromkeys(per_dim["method"]))
    fig = Figure(figsize=(max(4.5, 0.9 * len(methods) + 2), 3.4), dpi=dpi)
    ax = fig.subplots()
    data = [per_dim.loc[per_dim["method"] == m, "icc_2_1"].to_numpy(float) for m in methods]
    ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(np.arange(1, len(methods) + 1))
    ax.set_xticklabels([labels.get(m, m) for m in methods], rotation=30, ha="right", fontsize=8)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel("ICC(2,1) per dimension")
    ax.set_title("Between-site reliability on the travelling heads", fontsize=10)
    fig.tight_layout()
    return fig


def seed_spread(long: pd.DataFrame, labels: Mapping[str, str], dpi: int, ncols: int = 4) -> Figure:
    """One panel per metric: each seed's value per method (dots), mean ± std over seeds (bar).

    Args:
        long: columns ``method``, ``seed``, ``metric``, ``value`` (e.g. :func:`anatcl_core.report.explore.headline_long`).
        labels: display name of each method.
    """
    methods, metrics = list(dict.fromkeys(long["method"])), list(dict.fromkeys(long["metric"]))
    ncols = min(ncols, max(1, len(metrics)))
    nrows = int(np.ceil(len(metrics) / ncols)) if metrics else 1
    fig = Figure(figsize=(3.4 * ncols, 3.0 * nrows), dpi=dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    palette = method_colours(methods)
    for ax, metric in zip(axes.flat, metrics):
        part = long[long["metric"] == metric]
        sns.stripplot(part, x="method", y="value", hue="method", order=methods, hue_order=methods,
                      palette=palette, size=4, jitter=0.15, legend=False, ax=ax)
        sns.pointplot(part, x="method", y="value", order=methods, errorbar="sd", color="black",
                      linestyle="none", markers="_", markersize=12, capsize=0.2, err_kws={"linewidth": 1}, ax=ax)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([labels.get(m, m) for m in methods], rotation=30, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def mean_curves(curves: pd.DataFrame, labels: Mapping[str, str], *, dpi: int, y: str = "loss") -> Figure:
    """Training curve of each method: mean over seeds with a ± std band, one panel per method.

    Args:
        curves: long table with columns ``method``, ``seed``, ``epoch`` and ``y``.
        labels: display name of each method.
    """
    methods = list(dict.fromkeys(curves["method"]))
    fig, axes = _method_panels(len(methods), dpi)
    palette = method_colours(methods)
    for ax, method in zip(axes.flat, methods):  # one axis each: objectives have different scales
        sns.lineplot(curves[curves["method"] == method], x="epoch", y=y, errorbar="sd",
                     color=palette[method], ax=ax)
        ax.set_title(labels.get(method, method), fontsize=9)
        ax.set_ylabel("")
    axes[0, 0].set_ylabel(f"training {y} (mean ± std over seeds)")
    fig.tight_layout()
    return fig
