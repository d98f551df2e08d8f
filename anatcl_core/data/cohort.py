"""Cohort stage: params.yaml ``cohort``; validation of the inputs and quality-control figures.

Checks the pretraining cohort, the downstream and travelling manifests against the CAT12-VBM
contract (:mod:`anatcl_core.data.validate`), then draws what a reader checks first: one subject's slices
per site, age histograms per site and split, and FreeSurfer descriptors (mean over regions)
against age, the trajectories the anatomical kernels compare. Figures are plain matplotlib
Figures (no pyplot, no backend chosen at import), saved as PNG.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from anatcl_core import atomic
from anatcl_core.config import Positive, PositiveInt, section
from anatcl_core.data import io, layout
from anatcl_core.data import validate
from anatcl_core.data.freesurfer import Channels, select_channels
from anatcl_core.data.manifest import read_manifest, task_columns
from anatcl_core.data.openbhb import OpenBHB

logger = logging.getLogger(__name__)

@section
class CohortConfig:
    """params.yaml ``cohort``; every field is required (params.yaml is the one home of their values).

    Attributes:
        voxel_mm: expected voxel size of every map (None: inferred, but must agree across files).
        fail_on_problems: stop the pipeline when the validator reports a problem.
        age_bin_years: width of the age-histogram bins.
        trajectory_channels: FreeSurfer measures drawn against age (names or CT/GMV/SA aliases).
        dpi: resolution of the PNG figures.
    """

    voxel_mm: Positive | None
    fail_on_problems: bool
    age_bin_years: Positive
    trajectory_channels: Channels
    dpi: PositiveInt


class CohortProblems(ValueError):
    """The validator found problems in the input cohorts."""


def validate_cohorts(config: CohortConfig, data_dir: str | Path, out_dir: str | Path,
                     progress: bool = True) -> list[str]:
    """Validate every cohort under ``data_dir``; write ``validation.txt``; raise if configured to."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    paths = [layout.cohort_path(data_dir, name) for name in layout.COHORT_DIRS
             if name in layout.REQUIRED_COHORTS or layout.cohort_path(data_dir, name).exists()]
    problems = [str(p) for p in validate.validate_paths(paths, config.voxel_mm, progress)]
    atomic.write_text(out_dir / "validation.txt", "".join(f"{p}\n" for p in problems) or "OK: no problems found\n")
    if problems and config.fail_on_problems:
        raise CohortProblems(f"{len(problems)} problem(s) in {data_dir}, e.g. {problems[:3]}; "
                             f"see {out_dir / 'validation.txt'}")
    return problems


def cohort_summary(data_dir: str | Path) -> dict:
    """Subject counts: pretraining per split and site, downstream per task and group."""
    participants = OpenBHB(layout.cohort_path(data_dir, "openbhb"), split=layout.SPLITS).participants
    down = read_manifest(layout.cohort_path(data_dir, "downstream"))
    summary = {
        "pretrain_subjects": int(len(participants)),
        "pretrain_splits": {k: int(v) for k, v in participants["split"].value_counts().sort_index().items()},
        "pretrain_sites": int(participants["site"].nunique()),
        "downstream_subjects": int(len(down)),
        "downstream_tasks": {c: {"cases": int((down[c] == 1).sum()), "controls": int((down[c] == 0).sum())}
                             for c in task_columns(down)},
    }
    if "travelling" in layout.cohort_paths(data_dir):
        summary["travelling_scans"] = int(len(read_manifest(layout.cohort_path(data_dir, "travelling"))))
    return summary


def site_montage(data_dir: str | Path, dpi: int) -> Figure:
    """Mid-sagittal, coronal and axial slices of the first train subject of every site."""
    dataset = OpenBHB(layout.cohort_path(data_dir, "openbhb"), split=layout.SPLITS, crop=None)
    first = dataset.participants.reset_index().groupby("site", sort=True).first()
    fig = Figure(figsize=(6, 1.9 * len(first)), dpi=dpi)
    axes = fig.subplots(len(first), 3, squeeze=False)
    for row, (site, entry) in enumerate(first.iterrows()):
        volume, _ = io.load_volume(dataset.path(int(entry["index"])))  # (X, Y, Z)
        centre = [n // 2 for n in volume.shape]
        slices = (volume[centre[0]], volume[:, centre[1]], volume[:, :, centre[2]])
        for col, (image, name) in enumerate(zip(slices, ("sagittal", "coronal", "axial"))):
            ax = axes[row, col]
            ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
        axes[row, 0].set_ylabel(f"site {site}\n({entry['split']})", fontsize=8)
    fig.suptitle("One subject per site (modulated GM, 0-1)", fontsize=10)
    fig.tight_layout()
    return fig


def age_histograms(data_dir: str | Path, bin_years: float, dpi: int) -> Figure:
    """Age histograms: pretraining cohort per split (stacked by site), downstream per task."""
    participants = OpenBHB(layout.cohort_path(data_dir, "openbhb"), split=layout.SPLITS).participants
    down = read_manifest(layout.cohort_path(data_dir, "downstream"))
    ages = np.concatenate([participants["age"].to_numpy(float), down["age"].to_numpy(float)])
    bins = np.arange(np.floor(ages.min() / bin_years) * bin_years, ages.max() + bin_years, bin_years)
    tasks = task_columns(down)
    fig = Figure(figsize=(4 * (len(layout.SPLITS) + 1), 3.2), dpi=dpi)
    axes = fig.subplots(1, len(layout.SPLITS) + 1)
    for ax, split in zip(axes, layout.SPLITS):
        part = participants[participants["split"] == split]
        groups = [g["age"].to_numpy(float) for _, g in part.groupby("site", sort=True)]
        labels = [str(s) for s in sorted(part["site"].unique())]
        ax.hist(groups, bins=bins, stacked=True, label=labels)
        ax.set_title(f"pretraining: {split} (n={len(part)})", fontsize=9)
        ax.set_xlabel("age (years)")
        ax.legend(title="site", fontsize=6, title_fontsize=7, ncol=2)
    ax = axes[-1]
    for column in tasks:
        for label, style in ((1, "-"), (0, ":")):
            ages_task = down.loc[down[column] == label, "age"].to_numpy(float)
            ax.hist(ages_task, bins=bins, histtype="step", linestyle=style,
                    label=f"{column[3:]} {'case' if label else 'control'}")
    ax.set_title(f"downstream (n={len(down)})", fontsize=9)
    ax.set_xlabel("age (years)")
    ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("subjects")
    fig.tight_layout()
    return fig


def descriptor_trajectories(data_dir: str | Path, channels: Channels, dpi: int) -> Figure:
    """Each FreeSurfer measure (mean over the 68 regions) against age, pretraining cohort."""
    dataset = OpenBHB(layout.cohort_path(data_dir, "openbhb"), split=layout.SPLITS)
    tables = select_channels(dataset.descriptor_tables(), list(channels))  # (N, C, R)
    age = dataset.participants["age"].to_numpy(float)
    split = dataset.participants["split"].to_numpy()
    fig = Figure(figsize=(4 * len(channels), 3.2), dpi=dpi)
    axes = fig.subplots(1, len(channels), squeeze=False)
    for ax, c, name in zip(axes[0], range(len(channels)), channels):
        values = tables[:, c].mean(1)  # (N,)
        for s in layout.SPLITS:
            ax.scatter(age[split == s], values[split == s], s=6, alpha=0.6, label=s)
        order = np.argsort(age)
        window = max(5, len(age) // 15)
        smooth = pd.Series(values[order]).rolling(window, center=True, min_periods=1).median()
        ax.plot(age[order], smooth, color="black", linewidth=1.5, label="running median")
        ax.set_xlabel("age (years)")
        ax.set_title(f"{name} (mean over regions)", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_qc(config: CohortConfig, data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.json`` and the QC figures (PNG) under ``out_dir``; return the figure paths."""
    out_dir = Path(out_dir)
    atomic.write_text(out_dir / "summary.json", json.dumps(cohort_summary(data_dir), indent=2) + "\n")
    figures = {
        "site_montage": site_montage(data_dir, config.dpi),
        "age_histograms": age_histograms(data_dir, config.age_bin_years, config.dpi),
        "descriptor_trajectories": descriptor_trajectories(data_dir, config.trajectory_channels, config.dpi),
    }
    paths = {}
    for name, fig in figures.items():
        paths[name] = out_dir / "figures" / f"{name}.png"
        with atomic.atomic_open(paths[name]) as handle:
            fig.savefig(handle, format="png", dpi=config.dpi, metadata={"Software": None})
    return paths
