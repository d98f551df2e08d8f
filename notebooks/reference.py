# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Reference row: a feature set probed like an encoder
#
# One of `params.yaml` → `reference.run`: the true FreeSurfer descriptors, voxel principal
# components fitted on the healthy pretraining train scans, age + sex, or the training-free un-CNN
# (random 3D CNN features, `reference.uncnn_widths` channels per block). The features of every
# cohort go through exactly the probes, folds and draws of the evaluate stage (`params.yaml` →
# `evaluate`), so the report can put them in every table and pair them with each method.

# %% tags=["parameters"]
params_file = "params.yaml"
name = "descriptors"
arrays_dir = "outputs/cohort/arrays"
out_dir = "outputs/scratch/reference/descriptors"  # the pipeline passes outputs/reference/<name>

# %%
import pandas as pd

from anatcl_core import project
from anatcl_core.config import load_section
from anatcl_core.evaluation import evaluate, protocol, references

params_file, arrays_dir = project.inputs(params_file, arrays_dir)
out_dir = project.output(out_dir)  # paths from wherever the kernel started

config = load_section(params_file, "reference", references.ReferenceConfig)
eval_config = load_section(params_file, "evaluate", protocol.EvaluateConfig)
config

# %%
result = references.evaluate_reference(name, config, eval_config, arrays_dir, out_dir)

# %% [markdown]
# ## Headline metrics

# %%
pd.Series(evaluate.headline(result)).to_frame(f"reference {name}")
