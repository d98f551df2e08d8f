# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Explore the results
#
# Not a pipeline stage: after `make repro`, open this notebook in JupyterLab (`make lab`) and run it
# from the top. It loads the outputs of every stage of the run in `params.yaml` into tidy pandas
# tables (one row per method × seed × task × metric), so any comparison is a `groupby` or a
# seaborn call away. It only reads: `dvc status` stays clean. Loading code: `anatcl_core.report.explore`.

# %% tags=["parameters"]
params_file = "params.yaml"
arrays_dir = "outputs/cohort/arrays"
cohort_dir = "outputs/cohort"
pretrain_dir = "outputs/pretrain"
evaluate_dir = "outputs/evaluate"
reference_dir = "outputs/reference"
method = "anatcl_global"
seed = 0

# %%
import json
from pathlib import Path

import seaborn as sns

from anatcl_core import project
from anatcl_core.config import load_section
from anatcl_core.report import build, explore, plots, results as stage_results

params_file, arrays_dir, cohort_dir, pretrain_dir, evaluate_dir, reference_dir = project.inputs(
    params_file, arrays_dir, cohort_dir, pretrain_dir, evaluate_dir, reference_dir)  # from wherever the kernel started
report_config = load_section(params_file, "report", build.ReportConfig)
labels, dpi = report_config.labels, report_config.dpi
results = stage_results.collect(evaluate_dir, pretrain_dir, stage_results.expected_runs(params_file), reference_dir,
                                stage_results.expected_references(params_file))  # methods, then reference rows (ref_<name>)
results.methods

# %%
# %matplotlib inline

# %% [markdown]
# ## The cohort (cohort stage)

# %%
json.loads(Path(cohort_dir, "summary.json").read_text())

# %% [markdown]
# ## Headline metrics: mean and std over pretraining seeds

# %%
metrics = explore.metrics_table(results)
explore.headline_table(metrics, labels).round(3)

# %% [markdown]
# ## Methods compared across seeds (one dot per seed, bar: mean ± std)

# %%
plots.seed_spread(explore.headline_long(metrics), labels, dpi)

# %% [markdown]
# ## Every metric, tidy: filter and pivot
#
# Columns `method, seed, probe, task, metric, value`; e.g. balanced accuracy per diagnosis task:

# %%
bacc = metrics.query("probe == 'diagnosis' and metric == 'balanced_accuracy'")
bacc.pivot_table(index="method", columns="task", values="value", aggfunc=["mean", "std"]).round(3)

# %%
sns.catplot(bacc, x="task", y="value", hue="method", kind="point", errorbar="sd", dodge=0.3, height=3, aspect=2);

# %% [markdown]
# ## Runs and training curves (pretrain stage)

# %%
explore.runs_table(results, pretrain_dir)

# %%
plots.mean_curves(results.curves, labels, dpi=dpi)

# %% [markdown]
# ## Features of one run (evaluate stage)
#
# The frozen encoder's features of `method` / `seed` (parameters above) beside the downstream
# cohort's covariates; `cohort="openbhb"` or `"travelling"` for the other cohorts.

# %%
features = explore.features(evaluate_dir, method, seed, arrays_dir)
features.iloc[:5, :12]

# %%
dims = features.filter(regex=r"^f\d+$")
dims.corrwith(features["age"]).abs().sort_values(ascending=False).head(5).rename("|r| with age")
