"""Report stage: params.yaml ``report``; the paper's tables and figures from the stage outputs.

Everything is read from disk (:mod:`anatcl_core.report.results`): ``outputs/evaluate/<method>-s<seed>/``
``probes.json`` and ``features.npz``, ``outputs/pretrain/<method>-s<seed>/dvclive/`` (curves) and the
cohort stage's summary and QC figures. Methods are summarised as mean ± std over their pretraining
seeds (:mod:`anatcl_core.report.tables`). The tables are written as TSV (numbers) and the headline
numbers as ``metrics.json`` (``dvc metrics show``); :mod:`anatcl_core.report.html` assembles the
self-contained ``report.html``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from matplotlib.figure import Figure
from pydantic import Field

from anatcl_core.atomic import write_text
from anatcl_core.config import NonNegativeInt, PositiveInt, Text, section
from anatcl_core.cores import one_blas_thread
from anatcl_core.data.freesurfer import Channels
from anatcl_core.report import claims, findings, plots, plots_claims, power, random_networks
from anatcl_core.report.finding_measures import RunMeasures, travelling_ratings
from anatcl_core.report.embedding import embedding_figure
from anatcl_core.report.figures import save_figures
from anatcl_core.report.results import Results, budget_epochs
from anatcl_core.report.tables import format_table, headline_metrics, numeric_tables, write_tsv

logger = logging.getLogger(__name__)

#: The findings' verdicts and the benchmark's power for ``dvc metrics`` (beside ``metrics.json``).
FINDINGS_FILE = "findings.json"


@section
class ReportConfig:
    """params.yaml ``report`` (every field required: params.yaml is the one home of its values).

    Attributes:
        title: heading of ``report.html``.
        embedding: ``pca`` or ``tsne`` for the embedding maps of the downstream cohort.
        embedding_seed: pretraining seed whose features the maps show.
        dpi: resolution of the PNG figures.
        labels: display name of each method (methods without one show their key).
        ablations: ablation name -> its variants (``pretrain.methods`` keys), one table and figure
            panel each (:mod:`anatcl_core.report.ablation`).
        reliability_channels: FreeSurfer descriptors of the reliability section's reference row.
        budget: method -> its training-budget variants (``pretrain.methods`` keys with an
            ``epochs`` override), for the budget curve (:mod:`anatcl_core.report.claims`).
        paired_bootstrap: subject resamples of the paired differences against random init.
    """

    title: Text
    embedding: Literal["pca", "tsne"]
    embedding_seed: NonNegativeInt
    dpi: PositiveInt
    labels: dict[str, Text]
    ablations: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]]
    reliability_channels: Channels
    budget: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]]
    paired_bootstrap: PositiveInt


def _predictions(results: Results) -> dict[str, list[dict]]:
    if "predictions" not in results.cache:
        results.cache["predictions"] = claims.load_predictions(results.folders)
    return results.cache["predictions"]


def claim_results(results: Results, config: ReportConfig) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """The claims' numeric tables and paired differences against random init (:mod:`anatcl_core.report.claims`),
    computed once per ``results`` (the bootstrap is the report's costliest step)."""
    key = ("claims", config.paired_bootstrap)
    if key not in results.cache:
        tables = claims.claim_tables(results.runs_of())
        pairs = claims.paired_against(_predictions(results), "random", config.paired_bootstrap)
        results.cache[key] = (tables, pairs)
    return results.cache[key]


def uncnn_pairs(results: Results, config: ReportConfig) -> dict[str, dict]:
    """Paired differences of every row against the random CNN (``ref_uncnn``); ``{}`` without it."""
    key = ("vs_uncnn", config.paired_bootstrap)
    if key not in results.cache:
        results.cache[key] = claims.paired_against(_predictions(results), random_networks.UNCNN,
                                                   config.paired_bootstrap)
    return results.cache[key]


def findings_results(results: Results, config: ReportConfig, arrays_dir: str | Path | None) -> pd.DataFrame:
    """The findings table (:mod:`anatcl_core.report.findings`; the ICC finding needs the travelling
    cohort's table in ``arrays_dir``)."""
    key = ("findings", config.paired_bootstrap, str(arrays_dir))
    if key not in results.cache:
        ratings = travelling_ratings(results.folders, arrays_dir) if arrays_dir is not None else {}
        measure = RunMeasures(_predictions(results), ratings, config.paired_bootstrap)
        results.cache[key] = findings.findings_table(measure, lambda m: config.labels.get(m, m))
    return results.cache[key]


@one_blas_thread
def make_tables(results: Results, config: ReportConfig, out_dir: str | Path | None = None,
                arrays_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Formatted tables (mean ± std over seeds; claims tables as means, paired differences with
    their CI; the findings table, its ICC finding from ``arrays_dir``'s travelling cohort); with
    ``out_dir``, also TSVs, ``metrics.json`` and ``findings.json`` (one verdict per finding under
    ``findings``, the smallest resolvable paired differences under ``power``)."""
    numeric = numeric_tables(results)
    tables = {name: format_table(m, s, config.labels) for name, (m, s) in numeric.items()}
    claim_numeric, pairs = claim_results(results, config)
    for name, frame in claim_numeric.items():
        tables[name] = frame.rename(index=lambda m: config.labels.get(m, m)).round(3)
    tables["paired_vs_random"] = claims.paired_table(pairs, config.labels)
    vs_uncnn = uncnn_pairs(results, config)
    if vs_uncnn:
        tables["paired_vs_uncnn"] = claims.paired_table(vs_uncnn, config.labels)
    found = findings_results(results, config, arrays_dir)
    tables["findings"] = findings.display_table(found)
    tables["feature_cost"] = random_networks.feature_costs(results.folders, results.runs_of(), config.labels)
    tables["power"] = power.resolution_table(pairs, vs_uncnn)
    if out_dir is not None:
        folder = Path(out_dir) / "tables"
        written = {name: pd.concat({"mean": mean, "std": std}, axis=1) for name, (mean, std) in numeric.items()}
        written.update(claim_numeric)
        written.update({name: tables[name] for name in ("paired_vs_random", "paired_vs_uncnn", "feature_cost", "power")
                        if name in tables})
        written["findings"] = found
        for name, frame in written.items():
            write_tsv(frame, folder / f"{name}.tsv")
        verdicts = {"findings": findings.findings_metrics(found), "power": power.power_metrics(tables["power"])}
        write_text(Path(out_dir) / FINDINGS_FILE, json.dumps(verdicts, indent=2) + "\n")
        headline = headline_metrics(results, numeric, claims.claim_metrics(claim_numeric, pairs))
        write_text(Path(out_dir) / "metrics.json", json.dumps(headline, indent=2) + "\n")
    return tables


def claim_figures(results: Results, config: ReportConfig, params_file: str | Path) -> dict:
    """Label-efficiency curve, paired differences, representation bars and (when run) budget curve."""
    tables, pairs = claim_results(results, config)
    labels, dpi, figures = config.labels, config.dpi, {}
    curve = tables["label_efficiency"].dropna(axis=1, how="all")
    if curve.size:
        runs = results.runs_of()
        first = next(iter(next(iter(runs.values()))[0].get("label_efficiency", {}).values()))
        n_train = {pt: v["n_train"] for pt, v in first["points"].items()}
        figures["label_efficiency"] = plots_claims.label_efficiency(curve, n_train, labels, dpi)
    if pairs:
        figures["paired_differences"] = plots_claims.paired_differences(pairs, labels, dpi)
    vs_uncnn = uncnn_pairs(results, config)
    if vs_uncnn:
        figures["paired_vs_uncnn"] = plots_claims.paired_differences(vs_uncnn, labels, dpi)
    if tables["representation"].size:
        figures["representation"] = plots_claims.representation(tables["representation"], labels, dpi)
    variants = [v for vs in config.budget.values() for v in vs]
    budget = claims.budget_table(config.budget, budget_epochs(params_file, variants), tables)
    if len(budget) and budget.groupby("family").size().max() >= 2:
        figures["budget"] = plots_claims.budget(budget, labels, dpi)
    return figures


@one_blas_thread
def make_figures(results: Results, config: ReportConfig, arrays_dir: str | Path, cohort_dir: str | Path,
                 evaluate_dir: str | Path, out_dir: str | Path, params_file: str | Path) -> dict[str, Path]:
    """Draw and save every report figure (PNG); QC figures of the cohort stage are included as is.

    ``params_file`` gives the budget variants' epochs (:func:`budget_epochs`).
    """
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    numeric = numeric_tables(results)
    labels, dpi = config.labels, config.dpi
    figures: dict[str, Figure] = {}
    bacc_mean, bacc_std = numeric["diagnosis_bacc"]
    tasks = [c for c in bacc_mean.columns if c != "average"]
    if tasks:
        figures["radar"] = plots.radar(bacc_mean[tasks], labels, dpi=dpi)
        figures["diagnosis_bars"] = plots.grouped_bars(bacc_mean, bacc_std, labels, "balanced accuracy",
                                                       "Diagnosis probes (mean ± std over seeds)", dpi=dpi,
                                                       reference=0.5)
    ba_mean, ba_std = numeric["brain_age"]
    figures["brain_age"] = plots.grouped_bars(ba_mean[["MAE internal", "MAE external"]],
                                              ba_std[["MAE internal", "MAE external"]], labels,
                                              "MAE (years)", "Brain age, OpenBHB protocol", dpi=dpi)
    if len(results.curves):
        figures["training_curves"] = plots.training_curves(results.curves, labels, dpi)
    figures.update(claim_figures(results, config, params_file))
    embedding = embedding_figure(results.methods, arrays_dir, evaluate_dir, config.embedding_seed,
                                 config.embedding, labels, dpi)
    if embedding is not None:
        figures["embedding"] = embedding
    paths = save_figures(figures, folder, dpi)
    for qc in sorted((Path(cohort_dir) / "figures").glob("*.png")):
        paths[f"qc_{qc.stem}"] = qc
    return paths

