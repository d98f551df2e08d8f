# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Report: the paper's tables and figures on this run
#
# Every number below is read from the outputs of the evaluate and pretrain stages; methods are
# summarised as mean ± std over pretraining seeds. The same content is written to a self-contained
# `report.html` (figures embedded). Settings: `params.yaml` → `report`.

# %% tags=["parameters"]
params_file = "params.yaml"
arrays_dir = "outputs/cohort/arrays"
cohort_dir = "outputs/cohort"
pretrain_dir = "outputs/pretrain"
evaluate_dir = "outputs/evaluate"
reference_dir = "outputs/reference"
out_dir = "outputs/scratch/report"  # the pipeline passes outputs/report

# %%
from IPython.display import Image, display

from anatcl_core import project
from anatcl_core.config import load_section
from anatcl_core.report import ablation, build, html, results as stage_results

params_file, arrays_dir, cohort_dir, pretrain_dir, evaluate_dir, reference_dir = project.inputs(
    params_file, arrays_dir, cohort_dir, pretrain_dir, evaluate_dir, reference_dir)  # from wherever the kernel started
out_dir = project.output(out_dir)

config = load_section(params_file, "report", build.ReportConfig)

# %% [markdown]
# ## Tables (mean ± std over seeds)

# %%
results = stage_results.collect(evaluate_dir, pretrain_dir, stage_results.expected_runs(params_file), reference_dir,
                                stage_results.expected_references(params_file))
tables = build.make_tables(results, config, out_dir, arrays_dir)  # with the findings table (findings.json)
for name, table in tables.items():
    print(name)
    display(table)

# %% [markdown]
# ## Figures

# %%
figures = build.make_figures(results, config, arrays_dir, cohort_dir, evaluate_dir, out_dir, params_file)
for path in figures.values():
    display(Image(filename=str(path)))

# %% [markdown]
# ## Ablations and cross-scanner reliability
#
# Ablations: `params.yaml` → `report.ablations` (variants without results are listed with the command
# that runs them). Reliability: between-site ICC(2,1) per embedding dimension on the travelling heads,
# site share of variance, leave-sites-out brain age; FreeSurfer descriptors as the reference.

# %%
study = ablation.build_study(results.probes, config.ablations, config.reliability_channels,
                             config.embedding_seed, config.labels, params_file, arrays_dir, out_dir, config.dpi)
for name, table in study.tables.items():
    print(name)
    display(table)
for name, path in study.figures.items():
    display(Image(filename=str(path)))
print(study.reliability_note or "", "\n".join(f"{k}: {v}" for k, v in study.commands.items()))

# %% [markdown]
# ## The self-contained report

# %%
html.write_report(results, tables, figures, config, cohort_dir, out_dir, study, arrays_dir, params_file)
