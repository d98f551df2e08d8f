"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG, no scripts).

It opens offline: nothing is fetched, no JavaScript runs. Every number on the page comes from the
tables of :mod:`anatcl_core.report.build`, themselves read from stage outputs; every figure's
caption names the stage and the file that made it (:func:`anatcl_core.report.sections.figure_source`).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from anatcl_core.atomic import write_text
from anatcl_core.cores import one_blas_thread
from anatcl_core.report import claims, findings, power, random_networks, sections as report_sections
from anatcl_core.report.ablation import Study
from anatcl_core.report.build import ReportConfig, claim_results, uncnn_pairs
from anatcl_core.report.results import Results, budget_epochs
from anatcl_core.report.tables import numeric_tables

CSS = """
body { font-family: Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption, .caption { font-size: .85em; color: #555; }
img { max-width: 100%; } .note { background: #f7f7f0; border-left: 4px solid #c9c27a; padding: .6em 1em; }
"""

CAPTIONS = {
    "radar": "Balanced accuracy of the diagnosis probes per task (mean over pretraining seeds); dotted: chance.",
    "diagnosis_bars": "Balanced accuracy per task and averaged over tasks; error bars: std over seeds.",
    "brain_age": "Brain-age MAE of a ridge probe fitted on the pretraining train split (OpenBHB protocol).",
    "training_curves": "Training loss per epoch (each method's own objective; scales differ between methods).",
    "embedding": "Downstream subjects' features projected to 2-D, coloured by age and by condition.",
    "ablations": "Ablations: balanced accuracy averaged over the diagnosis tasks against the variant "
                 "(mean ± std over pretraining seeds; same recipe and budget for every variant).",
    "icc_distribution": "Between-site ICC(2,1) (two-way random, absolute agreement) of every embedding "
                        "dimension on the travelling heads (one pretraining seed); descriptors: the "
                        "FreeSurfer measures of the same scans, the reference.",
    "label_efficiency": "Label efficiency: balanced accuracy (mean over tasks and draws) against the number "
                        "of labelled training subjects per task; dashed: reference rows; dotted: chance.",
    "paired_differences": "Paired difference in balanced accuracy against random init (same folds, draws "
                          "and subjects), mean over tasks, with its 95% CI; right of 0: better than random init.",
    "paired_vs_uncnn": "Paired difference in balanced accuracy against the random CNN (un-CNN; same folds, "
                       "draws and subjects), mean over tasks, with its 95% CI; right of 0: better than the un-CNN.",
    "representation": "What each representation encodes (downstream subjects, cross-validated): descriptor-PC "
                      "R², age R², site balanced accuracy (dotted: chance).",
    "budget": "Training budget: LOSO balanced accuracy and descriptor R² against pretraining epochs; dashed: "
              "random init.",
    "qc_site_montage": "QC: one subject per site (mid slices).",
    "qc_age_histograms": "QC: age distributions per split (stacked by site) and per downstream group.",
    "qc_descriptor_trajectories": "QC: FreeSurfer measures (mean over regions) against age.",
}

TABLE_CAPTIONS = {
    "diagnosis_bacc": "Balanced accuracy of the logistic probe per task, stratified nested CV (subjects of all "
                      "sites mixed in every fold); mean ± std over pretraining seeds; ref. rows: one run.",
    "diagnosis_auc": "ROC-AUC of the same probes.",
    "scores_r": "Pearson r of the ridge probe of each clinical score (nested CV).",
    "scores_mae": "MAE of the same score probes.",
    "brain_age": "OpenBHB protocol: ridge brain age fitted on the pretraining train split, MAE on internal "
                 "(seen sites) and external (unseen sites) test; site BAcc: logistic site classifier on "
                 "internal test (lower = less site information); score = MAE_ext × BAcc^0.3; age + sex: "
                 "not applicable.",
}

LIMITS = """
<div class="note">
<p><b>What this synthetic benchmark shows.</b> The whole chain runs end to end on data in the
real layouts (OpenBHB, CAT12 manifests): every method is trained with the same recipe and budget,
the frozen encoders are probed with the paper's protocols without leakage (nested cross-validation,
no pretraining subject in a downstream test set), and the numbers above are what this code does on
this cohort, with their spread over pretraining seeds.</p>
<p><b>What it does not show.</b> The cohort is generated: its anatomy, ageing, disease and site
effects follow a model written for this compendium, at a coarse grid and a small size, and the
networks are narrow and briefly trained. The ranking of methods here is therefore evidence about
this generator and this budget, not about brains: it neither confirms nor refutes the paper's
results on OpenBHB, ADNI, OASIS-3, SchizConnect or ABIDE. Differences smaller than the spread over
seeds should be read as ties. Run the pipeline on real data (<code>dvc add data</code> with an
OpenBHB copy and your manifests) to learn anything about real MRI.</p>
</div>
"""


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(border=0, escape=True, na_rep="–")


def _ci_table(results: Results, seed: int, labels: dict[str, str]) -> pd.DataFrame:
    rows = {}
    runs = [*results.probes.items(), *(((name, seed), p) for name, p in results.references.items())]
    for (method, s), p in runs:
        if s != seed:
            continue
        rows[labels.get(method, method)] = {
            task: f"{r['balanced_accuracy']:.3f} [{r['balanced_accuracy_ci'][0]:.3f}, "
                  f"{r['balanced_accuracy_ci'][1]:.3f}]"
            for task, r in p["diagnosis"].items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _training_table(results: Results, labels: dict[str, str]) -> pd.DataFrame:
    if not len(results.curves):
        return pd.DataFrame()
    last = results.curves.sort_values("epoch").groupby(["method", "seed"], sort=False).tail(1)
    table = last.groupby("method", sort=False).agg(
        seeds=("seed", "nunique"), epochs=("epoch", "max"), final_loss=("loss", "mean"))
    seconds = results.curves.groupby(["method", "seed"])["seconds"].sum().groupby("method").mean()
    table["seconds per run"] = seconds.reindex(table.index).round(1)
    table["final_loss"] = table["final_loss"].round(4)
    table.index = [labels.get(m, m) for m in table.index]
    return table


def figure_html(name: str, path: Path) -> str:
    """One embedded figure: its caption, then the stage and file that made it (e.g. ``cohort stage,
    outputs/cohort/figures/age_histograms.png``)."""
    caption = html.escape(f"{CAPTIONS.get(name, name)} ({report_sections.figure_source(path)})")
    return (f'<figure><img alt="{html.escape(name)}" src="{_png(path)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _study_sections(study: Study, labels: dict[str, str]) -> list[str]:
    parts = ["<h2>Ablations</h2>",
             "<p>Each ablation compares variants trained with the same recipe, budget and seeds. "
             "Columns: balanced accuracy averaged over the diagnosis tasks, brain-age MAE on the "
             "external test sites, brain-age MAE with whole sites held out, median between-site "
             "ICC(2,1) and site share of embedding variance (travelling heads); mean ± std over seeds. "
             f"Every ablation at once: <code>{html.escape(study.full_grid)}</code> "
             "(or <code>profiles/ablations.yaml</code>).</p>"]
    for item in study.ablations:
        if f"ablation_{item.name}" in study.tables and len(item.run) >= 2:
            parts.append(f"<h3>{html.escape(item.name)}</h3>")
            parts.append(_table(study.tables[f"ablation_{item.name}"]))
    missing = report_sections.ablations_not_run(study)
    if len(missing):
        parts += ["<p>Not run in this profile (one row per ablation; each command adds its variants with the "
                  "same seeds and recipe):</p>", _table(missing.set_index("ablation"))]
    if "ablations" in study.figures:
        parts.append(figure_html("ablations", study.figures["ablations"]))
    parts += ["<h2>Cross-scanner reliability</h2>",
              "<p>Travelling heads: every subject scanned at every site. Per embedding dimension, the "
              "between-site ICC(2,1) (two-way random effects, absolute agreement, single measurement; "
              "headline) and ICC(3,1) (consistency: site offsets removed); summarised per method by "
              "the median and quartiles over dimensions; site share = share of the embedding's total "
              "variance explained by site means; MAE, sites held out = brain-age ridge probe trained "
              "on the other sites of the pretraining cohort, leave-site-groups-out folds. Mean ± std "
              "over pretraining seeds; descriptors = the FreeSurfer measures themselves (reference).</p>"]
    if study.reliability_note:
        parts.append(f'<p class="note">{html.escape(study.reliability_note)}</p>')
    if "reliability" in study.tables:
        parts.append(_table(study.tables["reliability"]))
    if "icc_distribution" in study.figures:
        parts.append(figure_html("icc_distribution", study.figures["icc_distribution"]))
    return parts


def _claim_sections(results: Results, tables: dict[str, pd.DataFrame], config: ReportConfig,
                    params_file: str | Path) -> list[str]:
    parts = []
    titles = [("Unseen sites: leave-one-site-out balanced accuracy", "loso_bacc"),
              ("Few labels: label-efficiency curve", "label_efficiency"),
              ("Paired differences against random init", "paired_vs_random"),
              ("What each encoder encodes", "representation")]
    for title, key in titles:
        if key in tables and tables[key].size:
            parts += [f"<h2>{html.escape(title)}</h2>", _table(tables[key]),
                      f"<p class=\"caption\">{html.escape(report_sections.CLAIM_CAPTIONS[key])}</p>"]
    variants = [v for vs in config.budget.values() for v in vs]
    if variants:
        numeric, _ = claim_results(results, config)
        budget = claims.budget_table(config.budget, budget_epochs(params_file, variants), numeric)
        parts += ["<h2>Training budget</h2>", f"<p>{html.escape(report_sections.CLAIM_CAPTIONS['budget'])}</p>"]
        if len(budget):
            parts.append(_table(budget.set_index("variant").round(3)))
        note = report_sections.budget_note(budget, variants, "python -m anatcl_core.cli.profile profiles/budget.yaml "
                                                             "&& dvc repro")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
    return parts


def _random_network_sections(results: Results, tables: dict[str, pd.DataFrame], config: ReportConfig) -> list[str]:
    """The answer to "does pretraining beat a random CNN, and a random ResNet?", the costs, the power, the findings table."""
    parts = []
    _, vs_random = claim_results(results, config)
    widths = results.references.get(random_networks.UNCNN, {}).get("widths")
    said = random_networks.answers(vs_random, uncnn_pairs(results, config), config.labels, widths)
    if said:
        parts += ["<h2>Does pretraining beat a random network?</h2>",
                  "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in said) + "</ul>"]
    if "paired_vs_uncnn" in tables and tables["paired_vs_uncnn"].size:
        parts += [_table(tables["paired_vs_uncnn"]), f"<p class=\"caption\">{html.escape(CAPTIONS['paired_vs_uncnn'])}</p>"]
    if "feature_cost" in tables and tables["feature_cost"].size:
        parts += ["<h3>Cost of the features</h3>", _table(tables["feature_cost"].round(4)),
                  "<p class=\"caption\">Seconds per volume of each row's feature extraction (every cohort: "
                  "pretraining, downstream, travelling heads), mean over seeds, at the stage's threads.</p>"]
    if "power" in tables and len(tables["power"]):
        sentence = power.resolution_sentence(tables["power"])
        parts += ["<h3>Power: the smallest paired difference this run resolves</h3>",
                  *([f"<p>{html.escape(sentence)}</p>"] if sentence else []), _table(tables["power"].round(4)),
                  "<p class=\"caption\">95% CI half-widths of every paired difference in balanced accuracy "
                  "(against random init and against the un-CNN), per probe point: a difference resolves (CI clear "
                  "of zero) from about its half-width up.</p>"]
    if "findings" in tables and len(tables["findings"]):
        parts += ["<h2>Published real-data findings, reproduced or not</h2>", _table(tables["findings"]),
                  f"<p class=\"caption\">{html.escape(findings.RULE)}</p>"]
    return parts


@one_blas_thread
def write_report(results: Results, tables: dict[str, pd.DataFrame], figures: dict[str, Path],
                 config: ReportConfig, cohort_dir: str | Path, out_dir: str | Path,
                 study: Study | None = None, arrays_dir: str | Path | None = None,
                 params_file: str | Path = "params.yaml") -> Path:
    """Write ``out_dir/report.html`` and return its path (with the ablation and reliability
    sections of :func:`anatcl_core.report.ablation.build_study` when ``study`` is given; the cohort as a
    table when the cohort stage's ``arrays_dir`` is given)."""
    labels = config.labels
    summary_path = Path(cohort_dir) / "summary.json"
    cohort = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    seeds = sorted({s for _, s in results.probes})
    parts = [f"<h1>{html.escape(config.title)}</h1>",
             f"<p>Methods: {html.escape(', '.join(labels.get(m, m) for m in results.methods))}; "
             f"pretraining seeds {seeds}. Tables give mean ± std over seeds; every number is read "
             "from the pipeline's stage outputs.</p>"]
    numeric = numeric_tables(results)
    found = report_sections.observations(numeric["diagnosis_bacc"][0], numeric["brain_age"][0], labels)
    claim_numeric, pairs = claim_results(results, config)
    found += report_sections.claim_observations(claim_numeric, pairs, labels)
    if found:
        parts += ["<h2>Observations</h2>", "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in found) + "</ul>"]
    parts += _random_network_sections(results, tables, config)
    if arrays_dir is not None:
        parts += ["<h2>Cohort</h2>", _table(report_sections.cohort_table(arrays_dir)),
                  "<p class=\"caption\">Subjects, age, share of males and sites per pretraining split, "
                  "downstream task and group, and travelling-heads scans.</p>"]
    elif cohort:
        parts += ["<h2>Cohort</h2>", f"<pre>{html.escape(json.dumps(cohort, indent=1))}</pre>"]
    sections = [
        ("Diagnosis: balanced accuracy", "diagnosis_bacc"),
        ("Diagnosis: ROC-AUC", "diagnosis_auc"),
        ("Clinical scores: Pearson r", "scores_r"),
        ("Clinical scores: MAE", "scores_mae"),
        ("Brain age (OpenBHB protocol), site leakage and challenge score", "brain_age"),
    ]
    for title, key in sections:
        if key in tables and tables[key].size and key not in report_sections.CLAIM_CAPTIONS:
            parts += [f"<h2>{html.escape(title)}</h2>", _table(tables[key]),
                      f"<p class=\"caption\">{html.escape(TABLE_CAPTIONS[key])}</p>"]
    ci = _ci_table(results, config.embedding_seed, labels)
    if ci.size:
        parts += [f"<h2>Diagnosis: balanced accuracy with bootstrap 95% CI (seed {config.embedding_seed})</h2>",
                  _table(ci)]
    parts += _claim_sections(results, tables, config, params_file)
    training = _training_table(results, labels)
    if training.size:
        parts += ["<h2>Training</h2>", _table(training)]
    if study is not None:
        parts += _study_sections(study, labels)
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        parts.append(figure_html(name, path))
    parts += ["<h2>Reading these results</h2>", LIMITS]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(config.title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    return write_text(Path(out_dir) / "report.html", page)

