"""Report stage: params.yaml ``report``; the paper's tables and figures from the stage outputs.

Everything is read from disk: ``outputs/evaluate/<method>-s<seed>/probes.json`` and
``features.npz``, ``outputs/pretrain/<method>-s<seed>/dvclive/`` (curves) and the cohort stage's summary
and QC figures. Methods are summarised as mean ± std over their pretraining seeds. The tables are
written as TSV (numbers) and the headline numbers as ``metrics.json`` (``dvc metrics show``);
:mod:`anatcl_core.report.html` assembles the self-contained ``report.html``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from pydantic import Field  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from anatcl_core.report import claims, plots
from anatcl_core import live
from anatcl_core.report import plots_claims  # noqa: E402
from anatcl_core.config import NonNegativeInt, PositiveInt, load_params, section  # noqa: E402
from anatcl_core.data.freesurfer import Channels  # noqa: E402
from anatcl_core.data.manifest import read_manifest, task_columns  # noqa: E402

logger = logging.getLogger(__name__)


@section
class ReportConfig:
    """params.yaml ``report``.

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

    title: str = "AnatCL compendium report"
    embedding: Literal["pca", "tsne"] = "pca"
    embedding_seed: NonNegativeInt = 0
    dpi: PositiveInt = 100
    labels: dict[str, str] = field(default_factory=dict)
    ablations: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]] = field(default_factory=dict)
    reliability_channels: Channels = ("CT", "GMV", "SA")
    budget: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]] = field(default_factory=dict)
    paired_bootstrap: PositiveInt = 1000


@dataclass
class Results:
    """Per-(method, seed) probe results and training curves, in run order; reference rows
    (``ref_<name>`` -> probes, one run each) and the output folder of every run."""

    probes: dict[tuple[str, int], dict]
    curves: pd.DataFrame
    references: dict[str, dict] = field(default_factory=dict)
    folders: dict[str, list[Path]] = field(default_factory=dict)
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.probes))

    @property
    def rows(self) -> list[str]:
        """Methods, then reference rows: the rows of every results table."""
        return self.methods + list(self.references)

    def runs_of(self) -> dict[str, list[dict]]:
        """Row -> its probes.json contents (one per seed; one for a reference row)."""
        out: dict[str, list[dict]] = {}
        for (method, _), p in self.probes.items():
            out.setdefault(method, []).append(p)
        out.update({name: [p] for name, p in self.references.items()})
        return out


def expected_runs(params_file: str | Path) -> list[tuple[str, int]]:
    """The (method, seed) pairs of params.yaml ``pretrain.run`` x ``pretrain.seeds``, in order."""
    section = load_params(params_file).get("pretrain", {})
    return [(str(m), int(s)) for m in section.get("run", []) for s in section.get("seeds", [])]


def expected_references(params_file: str | Path) -> list[str]:
    """The reference rows of params.yaml ``reference.run`` (none without that section)."""
    return [str(r) for r in (load_params(params_file).get("reference") or {}).get("run", [])]


def collect(evaluate_dir: str | Path, pretrain_dir: str | Path, runs: list[tuple[str, int]],
            reference_dir: str | Path | None = None, references: list[str] = ()) -> Results:
    """Read the ``probes.json`` and dvclive curves of every (method, seed) in ``runs``, and the
    ``probes.json`` of every reference row under ``reference_dir/<name>`` (``outputs/reference``).

    Outputs of runs no longer listed (left on disk by an earlier configuration) are ignored.

    Raises:
        FileNotFoundError: a listed run or reference row has no ``probes.json``.
    """
    probes = {}
    for method, seed in runs:
        path = Path(evaluate_dir) / f"{method}-s{seed}" / "probes.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run the evaluate stage of {method} seed {seed}")
        probes[(method, seed)] = json.loads(path.read_text())
    frames = []
    for (method, seed) in probes:
        frame = live.read_curves(Path(pretrain_dir) / f"{method}-s{seed}")
        if len(frame):
            frames.append(frame.assign(method=method, seed=seed))
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "seed", "epoch", "loss"])
    folders: dict[str, list[Path]] = {}
    for method, seed in probes:
        folders.setdefault(method, []).append(Path(evaluate_dir) / f"{method}-s{seed}")
    refs = {}
    for name in references:
        path = Path(reference_dir) / name / "probes.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run the reference stage of {name}")
        refs[f"ref_{name}"] = json.loads(path.read_text())
        folders[f"ref_{name}"] = [path.parent]
    return Results(probes, curves, refs, folders)


def _per_seed(results: Results, getter) -> pd.DataFrame:
    """Long table method, seed, metric, value from ``getter(probes) -> {metric: value}``."""
    runs = [*results.probes.items(), *(((name, 0), p) for name, p in results.references.items())]
    rows = [dict(method=m, seed=s, metric=k, value=v) for (m, s), p in runs for k, v in getter(p).items()]
    return pd.DataFrame(rows, columns=["method", "seed", "metric", "value"])


def summarise(long: pd.DataFrame, methods: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and std (ddof 1; 0 with one seed) over seeds: methods x metrics, in the given order."""
    grouped = long.groupby(["method", "metric"], sort=False)["value"]
    metrics = list(dict.fromkeys(long["metric"]))
    mean = grouped.mean().unstack().reindex(index=methods, columns=metrics)
    std = grouped.std(ddof=1).fillna(0.0).unstack().reindex(index=methods, columns=metrics)
    return mean, std


def numeric_tables(results: Results) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """(mean, std) tables: diagnosis BAcc (+ average), AUC, scores (r, MAE), brain age."""
    def bacc(p):
        out = {t: r["balanced_accuracy"] for t, r in p["diagnosis"].items()}
        return {**out, "average": float(np.mean(list(out.values())))} if out else out

    getters = {
        "diagnosis_bacc": bacc,
        "diagnosis_auc": lambda p: {t: r["roc_auc"] for t, r in p["diagnosis"].items()},
        "scores_r": lambda p: {s: r["pearson_r"] for s, r in p["scores"].items()},
        "scores_mae": lambda p: {s: r["mae"] for s, r in p["scores"].items()},
        "brain_age": lambda p: {**({
            "MAE internal": p["brain_age"]["mae_internal"], "MAE external": p["brain_age"]["mae_external"],
            "site BAcc": p["brain_age"]["site_bacc_internal"], "score": p["brain_age"]["challenge_score"]}
            if "brain_age" in p else {}),
            **({"travelling ICC(2,1)": p["travelling_icc"]} if "travelling_icc" in p else {})},
    }
    return {name: summarise(_per_seed(results, g), results.rows) for name, g in getters.items()}


def format_table(mean: pd.DataFrame, std: pd.DataFrame, labels: dict[str, str], digits: int = 3) -> pd.DataFrame:
    """``mean ± std`` strings with display names (``–`` where missing; reference rows, one run
    each, without a std)."""
    text = mean.map(lambda v: f"{v:.{digits}f}") + " ± " + std.map(lambda v: f"{v:.{digits}f}")
    single = [m for m in mean.index if str(m).startswith("ref_")]
    text.loc[single] = mean.loc[single].map(lambda v: f"{v:.{digits}f}")
    text = text.where(mean.notna(), "–")
    text.index = [labels.get(m, m) for m in mean.index]
    return text


def claim_results(results: Results, config: ReportConfig) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """The claims' numeric tables and paired differences against random init (:mod:`anatcl_core.report.claims`),
    computed once per ``results`` (the bootstrap is the report's costliest step)."""
    key = ("claims", config.paired_bootstrap)
    if key not in results.cache:
        tables = claims.claim_tables(results.runs_of())
        pairs = claims.paired_against(claims.load_predictions(results.folders), "random", config.paired_bootstrap)
        results.cache[key] = (tables, pairs)
    return results.cache[key]


def make_tables(results: Results, config: ReportConfig, out_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Formatted tables (mean ± std over seeds; claims tables as means, paired differences with
    their CI); with ``out_dir``, also TSVs and ``metrics.json``."""
    numeric = numeric_tables(results)
    tables = {name: format_table(m, s, config.labels) for name, (m, s) in numeric.items()}
    claim_numeric, pairs = claim_results(results, config)
    for name, frame in claim_numeric.items():
        tables[name] = frame.rename(index=lambda m: config.labels.get(m, m)).round(3)
    tables["paired_vs_random"] = claims.paired_table(pairs, config.labels)
    if out_dir is not None:
        folder = Path(out_dir) / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        for name, (mean, std) in numeric.items():
            pd.concat({"mean": mean, "std": std}, axis=1).to_csv(folder / f"{name}.tsv", sep="\t")
        for name, frame in claim_numeric.items():
            frame.to_csv(folder / f"{name}.tsv", sep="\t")
        tables["paired_vs_random"].to_csv(folder / "paired_vs_random.tsv", sep="\t")
        extra = claims.claim_metrics(claim_numeric, pairs)
        headline = {}
        for method in results.rows:
            entry = {"n_seeds": int(sum(1 for m, _ in results.probes if m == method)) or 1}
            bacc, ba = numeric["diagnosis_bacc"], numeric["brain_age"]
            if "average" in bacc[0]:
                entry["bacc_average"] = float(bacc[0].loc[method, "average"])
                entry["bacc_average_std"] = float(bacc[1].loc[method, "average"])
            if "MAE external" in ba[0].columns and np.isfinite(ba[0].loc[method, "MAE external"]):
                entry["brain_age_mae_external"] = float(ba[0].loc[method, "MAE external"])
                entry["site_bacc"] = float(ba[0].loc[method, "site BAcc"])
                entry["challenge_score"] = float(ba[0].loc[method, "score"])
            entry.update(extra.get(method, {}))
            headline[method] = entry
        (Path(out_dir) / "metrics.json").write_text(json.dumps(headline, indent=2) + "\n")
    return tables


def observations(bacc: pd.DataFrame, brain_age: pd.DataFrame, labels: dict[str, str],
                 floor: str = "random") -> list[str]:
    """Plain-language findings computed from the result tables (nothing in them is hard-coded).

    Args:
        bacc: mean balanced accuracy, methods x tasks, with an ``average`` column.
        brain_age: mean brain-age table, methods x (``MAE internal``, ``MAE external``, ...).
        labels: display names of the methods.
        floor: the method every other is compared with (the randomly initialised encoder).

    Returns:
        One sentence per finding; empty when the tables lack what a finding needs.
    """
    name = lambda m: labels.get(m, m)  # noqa: E731
    found = []
    if "average" in bacc.columns and floor in bacc.index and len(bacc.index) > 1:
        trained = bacc["average"].drop(index=[m for m in bacc.index if m == floor or m.startswith("ref_")])
        best, floor_bacc = trained.idxmax(), float(bacc.loc[floor, "average"])
        if floor_bacc >= trained.max():
            found.append(
                f"The randomly initialised encoder ({name(floor)}) reaches a mean balanced accuracy of "
                f"{floor_bacc:.3f}, at or above every trained method (best: {name(best)}, {trained.max():.3f}): "
                "on this cohort the diagnosis probes show no benefit of pretraining."
            )
        else:
            found.append(
                f"The best trained method on diagnosis, {name(best)} ({trained.max():.3f}), is "
                f"{trained.max() - floor_bacc:+.3f} above the random-init floor ({floor_bacc:.3f})."
            )
    if {"MAE internal", "MAE external"} <= set(brain_age.columns) and len(brain_age.index):
        ratio = brain_age["MAE external"] / brain_age["MAE internal"]
        external = brain_age["MAE external"]
        if ratio.min() > 1.5:
            verdict = "the probes do not transfer to scanners they have not seen"
        elif ratio.max() <= 1.2:
            verdict = ("unseen scanners cost the brain-age probes little here (OpenBHB's baselines: 1.4-2.7 times), "
                       "so site robustness shows in the leave-one-site-out diagnosis tasks instead")
        else:
            verdict = "unseen scanners cost some methods more than others"
        found.append(
            f"Brain-age error on unseen sites is {ratio.min():.1f}-{ratio.max():.1f} times the error on seen sites "
            f"({external.min():.1f}-{external.max():.1f} years on unseen sites): {verdict}."
        )
    return found


def _conditions(frame: pd.DataFrame) -> np.ndarray:
    """Group of each downstream subject: the task whose case it is, else ``control``."""
    condition = np.full(len(frame), "control", dtype=object)
    for column in task_columns(frame):
        condition[(frame[column] == 1).to_numpy()] = column.removeprefix("dx_")
    return condition


def budget_epochs(params_file: str | Path, variants) -> dict[str, int]:
    """Pretraining epochs of each variant (its ``epochs`` override, else ``pretrain.epochs``)."""
    section = load_params(params_file).get("pretrain", {})
    methods = section.get("methods", {})
    return {v: int((methods.get(v) or {}).get("epochs") or section.get("epochs", 0)) for v in variants}


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
    if tables["representation"].size:
        figures["representation"] = plots_claims.representation(tables["representation"], labels, dpi)
    variants = [v for vs in config.budget.values() for v in vs]
    budget = claims.budget_table(config.budget, budget_epochs(params_file, variants), tables)
    if len(budget) and budget.groupby("family").size().max() >= 2:
        figures["budget"] = plots_claims.budget(budget, labels, dpi)
    return figures


def embedding_coordinates(x: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """``(N, F)`` standardised features -> ``(N, 2)`` by PCA or t-SNE (PCA-initialised)."""
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if kind == "tsne":
        return TSNE(2, init="pca", random_state=seed, perplexity=30.0).fit_transform(x)
    return PCA(2, random_state=seed).fit_transform(x)


def make_figures(results: Results, config: ReportConfig, data_dir: str | Path, cohort_dir: str | Path,
                 evaluate_dir: str | Path, out_dir: str | Path, params_file: str | Path) -> dict[str, Path]:
    """Draw and save every report figure (PNG); QC figures of the cohort stage are included as is.

    ``params_file`` gives the budget variants' epochs (:func:`budget_epochs`).
    """
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    numeric = numeric_tables(results)
    labels, dpi = config.labels, config.dpi
    figures: dict[str, plt.Figure] = {}
    bacc_mean, bacc_std = numeric["diagnosis_bacc"]
    tasks = [c for c in bacc_mean.columns if c != "average"]
    if tasks:
        figures["radar"] = plots.radar(bacc_mean[tasks], labels, dpi=dpi)
        figures["diagnosis_bars"] = plots.grouped_bars(bacc_mean, bacc_std, labels, "balanced accuracy",
                                                       "Diagnosis probes (mean ± std over seeds)", 0.5, dpi)
    ba_mean, ba_std = numeric["brain_age"]
    figures["brain_age"] = plots.grouped_bars(ba_mean[["MAE internal", "MAE external"]],
                                              ba_std[["MAE internal", "MAE external"]], labels,
                                              "MAE (years)", "Brain age, OpenBHB protocol", None, dpi)
    if len(results.curves):
        figures["training_curves"] = plots.training_curves(results.curves, labels, dpi)
    figures.update(claim_figures(results, config, params_file))
    manifest = read_manifest(Path(data_dir) / "downstream")
    maps = {}
    for method in results.methods:
        path = Path(evaluate_dir) / f"{method}-s{config.embedding_seed}" / "features.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as saved:
                if list(saved["downstream_ids"]) != manifest["participant_id"].astype(str).tolist():
                    raise ValueError(f"{path}: features are not those of {data_dir}/downstream")
                maps[method] = embedding_coordinates(saved["downstream_features"], config.embedding, 0)
    if maps:
        figures["embedding"] = plots.embedding_maps(maps, manifest["age"].to_numpy(float), _conditions(manifest),
                                                    labels, config.embedding.upper(), dpi)
    paths = {}
    for name, fig in figures.items():
        paths[name] = folder / f"{name}.png"
        fig.savefig(paths[name], dpi=dpi, metadata={"Software": None})
        plt.close(fig)
    for qc in sorted((Path(cohort_dir) / "figures").glob("*.png")):
        paths[f"qc_{qc.stem}"] = qc
    return paths
