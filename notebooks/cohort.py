# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Cohort: validation and quality control
#
# The pretraining cohort (OpenBHB layout), the downstream cohort and the travelling heads are checked
# against the CAT12-VBM contract (grid, orientation, value range, coverage, ROI tables, ids, split
# overlap). Then the figures a reader checks first: one subject per site, the age distributions per
# site and split, and the FreeSurfer measures against age. Every cohort is finally stacked into
# arrays with its table and FreeSurfer tables: the only input of every later stage, written only once
# the validation passed. Settings: `params.yaml` → `cohort`.

# %% tags=["parameters"]
params_file = "params.yaml"
data_dir = "data"
out_dir = "outputs/scratch/cohort"  # the pipeline passes outputs/cohort

# %%
from IPython.display import Image, display

from anatcl_core import project
from anatcl_core.config import load_section
from anatcl_core.data import cohort, stacking

params_file, data_dir = project.inputs(params_file, data_dir)  # from wherever the kernel started
out_dir = project.output(out_dir)

config = load_section(params_file, "cohort", cohort.CohortConfig)
config

# %% [markdown]
# ## Validation

# %%
problems = cohort.validate_cohorts(config, data_dir, out_dir, progress=False)
print(f"{len(problems)} problem(s)", *problems[:20], sep="\n")

# %% [markdown]
# ## Subjects

# %%
cohort.cohort_summary(data_dir)

# %% [markdown]
# ## Quality-control figures

# %%
figures = cohort.run_qc(config, data_dir, out_dir)
for path in figures.values():
    display(Image(filename=str(path)))

# %% [markdown]
# ## Arrays for every later stage (images, tables, FreeSurfer tables)

# %%
stacking.write_arrays(data_dir, f"{out_dir}/arrays", progress=False)
