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
data_dir = "data"
out_dir = "outputs/scratch/pretrain/anatcl_global-s0"  # the pipeline passes outputs/pretrain/<method>-s<seed>

# %%
import pandas as pd

from anatcl_core import project
from anatcl_core.train import loop as train
from anatcl_core.config import load_section

params_file, data_dir = project.inputs(params_file, data_dir)  # from wherever the kernel started
out_dir = project.output(out_dir)

config = load_section(params_file, "pretrain", train.PretrainConfig).for_method(method)
config.methods[method]

# %% [markdown]
# ## Train split, in memory

# %%
data = train.load_train_data(f"{data_dir}/openbhb", config, progress=False)
data.images.shape

# %% [markdown]
# ## Training

# %%
history = train.pretrain(config, method, seed, data, out_dir)
pd.DataFrame(history)
