"""Report sections for the ablations and the cross-scanner reliability study.

Ablations are declared in params.yaml ``report.ablations`` as ``{name: [method, ...]}``; each
method is an entry of ``pretrain.methods`` trained with the shared recipe and budget. An ablation
table shows, per variant, mean ± std over pretraining seeds of the balanced accuracy averaged over
the diagnosis tasks, the brain-age MAE (external test), the leave-sites-out brain-age MAE and the
median between-site ICC(2,1). A variant that was not run in this profile is listed with the one
command that runs it; a variant that ``pretrain.methods`` does not define is listed as such.

Reliability (REFERENCE §1.5): per method, the distribution over embedding dimensions of the
between-site ICC(2,1) on the travelling heads (headline; ICC(3,1) beside it), the share of
embedding variance explained by site and the leave-sites-out brain-age MAE, with the FreeSurfer
descriptors of the same scans as the reference row (:mod:`anatcl_core.evaluation.reliability`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.config import load_params
from anatcl_core.cores import one_blas_thread
from anatcl_core.data import arrays
from anatcl_core.data.freesurfer import select_channels
from anatcl_core.evaluation import reliability
from anatcl_core.report import plots
from anatcl_core.report.figures import save_figures
from anatcl_core.report.tables import summarise, write_tsv

logger = logging.getLogger(__name__)

DESCRIPTORS = "descriptors"


@dataclass
class AblationStatus:
    """Which variants of one ablation have results, which are only defined, which are undefined."""

    name: str
    run: list[str]
    not_run: list[str]
    undefined: list[str]


def pretrain_plan(params_file: str | Path) -> tuple[list[str], list[str]]:
    """``(pretrain.run, names of pretrain.methods)`` of a params file."""
    section = load_params(params_file).get("pretrain", {})
    return [str(m) for m in section.get("run", [])], [str(m) for m in section.get("methods", {})]


def run_command(run: list[str], extra: list[str]) -> str:
    """The ``dvc exp run`` command that adds ``extra`` methods to ``run`` (same seeds and recipe)."""
    methods = list(dict.fromkeys([*run, *extra]))
    return f"dvc exp run -S 'pretrain.run=[{','.join(methods)}]'"


def ablation_status(ablations: dict[str, tuple[str, ...]], present: list[str], run: list[str],
                    defined: list[str]) -> list[AblationStatus]:
    """Split every declared ablation's variants by availability.

    Args:
        ablations: ``report.ablations``; present: methods with results; run: ``pretrain.run``;
        defined: the keys of ``pretrain.methods``.
    """
    out = []
    for name, variants in ablations.items():
        out.append(AblationStatus(
            name, [v for v in variants if v in present],
            [v for v in variants if v not in present and v in defined],
            [v for v in variants if v not in defined]))  # fmt: skip
    return out


def variant_metrics(probes: dict[tuple[str, int], dict]) -> pd.DataFrame:
    """Long table ``method, seed, metric, value`` of the ablation columns of every run."""
    rows = []
    for (method, seed), p in probes.items():
        values = {}
        if p["diagnosis"]:
            values["BAcc (mean over tasks)"] = float(np.mean([r["balanced_accuracy"]
                                                              for r in p["diagnosis"].values()]))
        values["MAE external"] = p["brain_age"]["mae_external"]
        if p.get("site_held_out"):
            values["MAE, sites held out"] = p["site_held_out"]["mae"]
        rel = p.get("reliability", {})
        if rel.get("available"):
            values["ICC(2,1) median"] = rel["median_icc_2_1"]
            values["site share"] = rel["site_share"]
        rows += [dict(method=method, seed=seed, metric=k, value=v) for k, v in values.items()]
    return pd.DataFrame(rows, columns=["method", "seed", "metric", "value"])


# ------------------------------------------------------------------------------ reliability
def descriptor_ratings(arrays_dir: str | Path, channels: tuple[str, ...]) -> np.ndarray | None:
    """``(n_subjects, k_sites, C * 68)`` FreeSurfer descriptors of the travelling heads, or None.

    None when the cohort stage's arrays (``arrays_dir``) hold no travelling cohort, or its table
    lacks ``subject``/``site``, or a scan has no ROI table.
    """
    if "travelling" not in arrays.cohort_names(arrays_dir):
        return None
    cohort = arrays.load_cohort(arrays_dir, "travelling")
    frame = cohort.table
    if not {"subject", "site"} <= set(frame.columns) or not cohort.has_descriptors().all():
        logger.info("%s: no subject/site columns or missing ROI tables; no descriptor reference",
                    arrays.files(arrays_dir, "travelling")["table"])
        return None
    values = select_channels(cohort.descriptors, channels).reshape(len(frame), -1)  # (N, C*R)
    ratings, _, _ = reliability.arrange_by_site(values, frame["subject"].astype(str).to_numpy(),
                                                frame["site"].astype(str).to_numpy())
    return ratings


def icc_distributions(probes: dict[tuple[str, int], dict], seed: int,
                      reference: np.ndarray | None) -> pd.DataFrame:
    """Long table ``method, dimension, icc_2_1`` of one seed's embeddings (+ the descriptors)."""
    frames = []
    for (method, s), p in probes.items():
        rel = p.get("reliability", {})
        if s == seed and rel.get("available"):
            values = np.array([np.nan if v is None else v for v in rel["icc_2_1"]], float)
            frames.append(pd.DataFrame({"method": method, "dimension": np.arange(len(values)),
                                        "icc_2_1": values}))
    if reference is not None:
        frames.append(pd.DataFrame({"method": DESCRIPTORS, "dimension": np.arange(reference.shape[2]),
                                    "icc_2_1": reliability.icc(reference, "2,1")}))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "dimension", "icc_2_1"])
    return frame.dropna(subset=["icc_2_1"])


def reliability_table(probes: dict[tuple[str, int], dict], methods: list[str],
                      reference: np.ndarray | None) -> pd.DataFrame:
    """Per method: median [IQR] of the per-dimension ICC(2,1), median ICC(3,1), site share and the
    leave-sites-out brain-age MAE, each as mean ± std over seeds; the descriptors as last row."""
    rows = {}
    for method in methods:
        runs = [p for (m, _), p in probes.items() if m == method]
        rel = [p["reliability"] for p in runs if p.get("reliability", {}).get("available")]
        held = [p["site_held_out"]["mae"] for p in runs if p.get("site_held_out")]
        row = {"seeds": len(runs)}
        if rel:
            for label, key in (("ICC(2,1) median", "median_icc_2_1"), ("ICC(2,1) Q1", "q1_icc_2_1"),
                               ("ICC(2,1) Q3", "q3_icc_2_1"), ("ICC(3,1) median", "median_icc_3_1"),
                               ("site share", "site_share")):
                row[label] = _pm([r[key] for r in rel])
        if held:
            row["MAE, sites held out"] = _pm(held)
        rows[method] = row
    if reference is not None:
        ref = reliability.icc_table({DESCRIPTORS: reference}).iloc[0]
        rows[DESCRIPTORS] = {"seeds": 0, "ICC(2,1) median": f"{ref['icc_2_1_median']:.3f}",
                             "ICC(2,1) Q1": f"{ref['icc_2_1_q1']:.3f}", "ICC(2,1) Q3": f"{ref['icc_2_1_q3']:.3f}",
                             "ICC(3,1) median": f"{ref['icc_3_1_median']:.3f}",
                             "site share": f"{ref['site_share']:.3f}"}
    return pd.DataFrame.from_dict(rows, orient="index")


def _pm(values: list[float], digits: int = 3) -> str:
    v = np.asarray(values, float)
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {std:.{digits}f}"


# ---------------------------------------------------------------------------- the sections
@dataclass
class Study:
    """What report.html shows in its ablation and reliability sections."""

    ablations: list[AblationStatus]
    tables: dict[str, pd.DataFrame]  # "ablation_<name>" and "reliability"
    figures: dict[str, Path]  # "ablations", "icc_distribution"
    commands: dict[str, str]  # ablation name -> command that runs its missing variants
    full_grid: str  # command running every variant of every ablation
    reliability_note: str  # why the reliability section is empty, or ""


def _ablation_tables(status: list[AblationStatus], probes: dict[tuple[str, int], dict], labels: dict[str, str],
                     tables_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, tuple[pd.Series, pd.Series]]]:
    """Each run ablation's table (mean ± std text; numbers as TSV under ``tables_dir``) and figure panel."""
    long = variant_metrics(probes)
    tables, panels = {}, {}
    for item in status:
        if not item.run:
            continue
        mean, std = summarise(long, item.run)
        write_tsv(pd.concat({"mean": mean, "std": std}, axis=1), tables_dir / f"ablation_{item.name}.tsv")
        text = mean.map(lambda v: f"{v:.3f}") + " ± " + std.map(lambda v: f"{v:.3f}")
        text.index = [labels.get(m, m) for m in mean.index]
        text.columns.name = None
        tables[f"ablation_{item.name}"] = text
        metric = "BAcc (mean over tasks)"
        if metric in mean:
            panels[item.name] = (mean[metric], std[metric])
    compared = {k: v for k, v in panels.items() if len(v[0]) > 1}  # single-variant panels compare nothing
    return tables, compared or panels


def _reliability_note(probes: dict[tuple[str, int], dict]) -> str:
    """Why the reliability section is empty (no run computed it), or ""."""
    if any(p.get("reliability", {}).get("available") for p in probes.values()):
        return ""
    reasons = {p.get("reliability", {}).get("reason", "not computed") for p in probes.values()}
    return (f"No travelling-heads reliability in this run ({'; '.join(sorted(reasons))}). Provide "
            "data/travelling/manifest.tsv with `subject` and `site` columns (every subject scanned "
            "at every site) to compute it.")


@one_blas_thread
def build_study(probes: dict[tuple[str, int], dict], ablations: dict[str, tuple[str, ...]],
                channels: tuple[str, ...], embedding_seed: int, labels: dict[str, str],
                params_file: str | Path, arrays_dir: str | Path, out_dir: str | Path, dpi: int = 100) -> Study:
    """Tables (also written as TSV under ``out_dir/tables``) and figures of both sections.

    Args:
        probes: ``probes.json`` of every (method, seed) run; ablations: ``report.ablations``;
        channels: descriptors of the reference row; embedding_seed: seed of the ICC figure.
    """
    run, defined = pretrain_plan(params_file)
    present = list(dict.fromkeys(m for m, _ in probes))
    status = ablation_status(ablations, present, run, defined)
    commands = {item.name: run_command(run, item.not_run) for item in status if item.not_run}
    tables_dir, figures_dir = Path(out_dir) / "tables", Path(out_dir) / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    tables, panels = _ablation_tables(status, probes, labels, tables_dir)
    figures = {}
    if panels:
        figures["ablations"] = plots.ablation_panels(panels, labels, "balanced accuracy (mean over tasks)", dpi)
    reference = descriptor_ratings(arrays_dir, channels)
    table = reliability_table(probes, present, reference)
    if table.size:
        write_tsv(table, tables_dir / "reliability.tsv")
        table.index = [labels.get(m, m) for m in table.index]
        tables["reliability"] = table
    per_dim = icc_distributions(probes, embedding_seed, reference)
    if len(per_dim):
        figures["icc_distribution"] = plots.icc_boxes(per_dim, labels, dpi)
    paths = save_figures(figures, figures_dir, dpi)
    every = [v for variants in ablations.values() for v in variants if v in defined]
    return Study(status, tables, paths, commands, run_command(run, every), _reliability_note(probes))
