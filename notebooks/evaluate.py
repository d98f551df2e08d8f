# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Evaluation of one frozen encoder
#
# Features of the frozen encoder (its `feature_dim`-wide output, projection head dropped) for the
# pretraining cohort, the downstream cohort and the travelling heads; then linear probes only
# (`params.yaml` → `evaluate`):
#
# - brain age and site leakage, OpenBHB challenge protocol (ridge / logistic fitted on the train
#   split, MAE on internal and external test, site balanced accuracy on internal test,
#   score = MAE_ext × BAcc_int^0.3);
# - each diagnosis: standardised features → logistic regression, C chosen by inner CV, stratified
#   subject-level outer CV repeated over seeds; balanced accuracy and ROC-AUC with bootstrap 95% CIs;
# - each clinical score: ridge, alpha chosen by inner CV; MAE, Pearson r, R²;
# - each diagnosis across unseen sites (leave-one-site-out, C by inner group CV over the training
#   sites) and with few labels (label-efficiency curve over fixed folds and nested subsamples),
#   per-subject predictions saved for the report's paired differences;
# - what the features encode: R² of the true descriptors' top principal components and of age,
#   site balanced accuracy (downstream subjects, cross-validated).

# %% tags=["parameters"]
params_file = "params.yaml"
method = "anatcl_global"
seed = 0
checkpoint = "outputs/pretrain/anatcl_global-s0/checkpoint.pt"
arrays_dir = "outputs/cohort/arrays"
out_dir = "outputs/scratch/evaluate/anatcl_global-s0"  # the pipeline passes outputs/evaluate/<method>-s<seed>

# %%
import pandas as pd

from anatcl_core import project
from anatcl_core.config import load_section
from anatcl_core.evaluation import evaluate, protocol

params_file, checkpoint, arrays_dir = project.inputs(params_file, checkpoint, arrays_dir)
out_dir = project.output(out_dir)  # paths from wherever the kernel started

config = load_section(params_file, "evaluate", protocol.EvaluateConfig)
config

# %%
result = evaluate.evaluate_checkpoint(config, checkpoint, arrays_dir, out_dir, progress=False)

# %% [markdown]
# ## Headline metrics

# %%
pd.Series(evaluate.headline(result)).to_frame(f"{method} seed {seed}")
