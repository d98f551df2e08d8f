# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Pretraining of one method with one seed
#
# The encoder (3D ResNet) and its projection head are trained on the train split of the
# pretraining cohort with the method's objective (`params.yaml` → `pretrain.methods.<method>`) and
# the recipe shared by every method (`pretrain`: optimiser, schedule, temperature, age kernel
# width, budget). The FreeSurfer descriptors are normalised with statistics of this train split
# only, stored in the checkpoint. The checkpoint is rewritten after every epoch; a rerun resumes.

# %% tags=["parameters"]
params_file = "params.yaml"
method = "anatcl_global"
seed = 0
arrays_dir = "outputs/cohort/arrays"
out_dir = "outputs/scratch/pretrain/anatcl_global-s0"  # the pipeline passes outputs/pretrain/<method>-s<seed>

# %%
import pandas as pd

from anatcl_core import project
from anatcl_core.config import load_section
from anatcl_core.train.data import load_train_data
from anatcl_core.train.loop import pretrain
from anatcl_core.train.recipe import PretrainConfig

params_file, arrays_dir = project.inputs(params_file, arrays_dir)  # from wherever the kernel started
out_dir = project.output(out_dir)

run = load_section(params_file, "pretrain", PretrainConfig).resolve(method, seed)  # the method's recipe, resolved once
run

# %% [markdown]
# ## Train split, in memory (the cohort stage's arrays)

# %%
data = load_train_data(arrays_dir, run.data, progress=False)
data.images.shape

# %% [markdown]
# ## Training

# %%
history = pretrain(run, data, out_dir)
pd.DataFrame(history)
