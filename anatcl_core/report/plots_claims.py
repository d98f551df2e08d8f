"""Figures of the claims sections: label efficiency, paired differences, representation, budget.

Reference rows (names starting ``ref_``) are drawn dashed and grey-toned so that the methods stand
out; every function returns a matplotlib Figure (no pyplot) and draws nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from anatcl_core.report.plots import method_colours


def _style(method: str) -> dict:
    return {"linestyle": "--", "linewidth": 1.2} if method.startswith("ref_") else {"linewidth": 1.8}


def label_efficiency(curve: pd.DataFrame, n_train: Mapping[str, float], labels: Mapping[str, str],
                     dpi: int = 100) -> Figure:
    """Balanced accuracy (mean over tasks) against labelled training subjects, one line per method.

    Args:
        curve: methods x points (``n25``, ..., ``all``). n_train: point -> mean training size.
    """
    colours = method_colours(list(curve.index))
    fig = Figure(figsize=(6.5, 4), dpi=dpi)
    ax = fig.subplots()
    xs = np.array([n_train[p] for p in curve.columns])
    for method, row in curve.iterrows():
        ax.plot(xs, row.to_numpy(float), marker="o", color=colours[method], label=labels.get(method, method),
                **_style(method))
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [f"{int(round(x))}" for x in xs])
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("labelled training subjects per task")
    ax.set_ylabel("balanced accuracy (mean over tasks)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def paired_differences(pairs: Mapping[str, Mapping[str, dict]], labels: Mapping[str, str],
                       dpi: int = 100) -> Figure:
    """Difference against random init with its 95% CI: one panel per comparison (LOSO, points)."""
    keys = list(dict.fromkeys(k for entry in pairs.values() for k in entry if "/" not in k))
    methods = list(pairs)
    fig = Figure(figsize=(2.6 * max(len(keys), 1), 0.35 * len(methods) + 1.5), dpi=dpi)
    axes = fig.subplots(1, max(len(keys), 1), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, method in enumerate(methods):
            s = pairs[method].get(key)
            if s is None:
                continue
            ax.errorbar(s["difference"], i, xerr=[[s["difference"] - s["ci"][0]], [s["ci"][1] - s["difference"]]],
                        fmt="o", color="grey" if method.startswith("ref_") else "C0", capsize=2)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title("LOSO mean" if key == "loso_mean" else f"labels {key[3:]}", fontsize=9)
        ax.set_xlabel("Δ balanced accuracy", fontsize=8)
    axes[0, 0].set_yticks(range(len(methods)), [labels.get(m, m) for m in methods], fontsize=8)
    fig.tight_layout()
    return fig


def representation(table: pd.DataFrame, labels: Mapping[str, str], dpi: int) -> Figure:
    """Horizontal bars of the descriptor-PC R², age R² and site balanced accuracy per method."""
    columns = [c for c in ("descriptor R²", "age R²", "site BAcc") if c in table.columns]
    fig = Figure(figsize=(3.2 * len(columns), 0.3 * len(table) + 1.5), dpi=dpi)
    axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)
    colours = method_colours(list(table.index))
    for ax, column in zip(axes[0], columns):
        values = table[column].to_numpy(float)
        ax.barh(range(len(table)), np.nan_to_num(values), color=[colours[m] for m in table.index])
        if column == "site BAcc" and "site chance" in table.columns:
            ax.axvline(float(np.nanmean(table["site chance"])), color="black", linestyle=":", linewidth=1)
        ax.set_title(column, fontsize=9)
    axes[0, 0].set_yticks(range(len(table)), [labels.get(m, m) for m in table.index], fontsize=8)
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return fig


def budget(table: pd.DataFrame, labels: Mapping[str, str], dpi: int) -> Figure:
    """LOSO balanced accuracy and descriptor R² against pretraining epochs, one line per family."""
    fig = Figure(figsize=(9, 3.5), dpi=dpi)
    axes = fig.subplots(1, 2)
    families = [f for f in dict.fromkeys(table["family"]) if f != "random"]
    colours = method_colours(families)
    for ax, column in zip(axes, ("LOSO BAcc", "descriptor R²")):
        for family in families:
            part = table[table["family"] == family].sort_values("epochs")
            ax.plot(part["epochs"], part[column], marker="o", color=colours[family], label=labels.get(family, family))
        floor = table[table["family"] == "random"]
        if len(floor):
            ax.axhline(float(floor[column].iloc[0]), color="black", linestyle="--", linewidth=1,
                       label=labels.get("random", "random"))
        ax.set_xlabel("pretraining epochs")
        ax.set_ylabel(column)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
