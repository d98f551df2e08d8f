"""Age and sex of healthy subjects from frozen features, with per-subject predictions.

BrainFMBench (epics-lab/BrainFMBench, REFERENCE §6) ranks frozen brain-MRI encoders on healthy
lifespan cohorts by age MAE and sex balanced accuracy; the report's findings table pairs these two
numbers between representations (un-CNN against AnatCL, voxels against tables), which needs every
subject's prediction. Both probes follow the OpenBHB protocol of the brain-age probe
(:func:`anatcl_core.evaluation.probes.brain_age_probe`): fitted on the pretraining *train* split,
predicting every subject of the internal and external test splits (no encoder saw them):

- age: the brain-age ridge at its chosen ``alpha`` (the same fit, so the same predictions);
- sex: a class-balanced logistic, C chosen by stratified CV on the train split (``c_grid``).

BrainFMBench's probes are random forests; ours stay linear, like every probe of this compendium.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from anatcl_core.data.openbhb import encode_sex
from anatcl_core.evaluation import probes, transfer
from anatcl_core.evaluation.metrics import balanced_accuracy_rows, bootstrap_ci
from anatcl_core.evaluation.protocol import EvaluateConfig

#: Prefix of this module's arrays in ``predictions.npz``.
PREFIX = "lifespan"
TEST_SPLITS = ("internal_test", "external_test")


def lifespan_probes(config: EvaluateConfig, x: np.ndarray, table: pd.DataFrame, alpha: float) -> tuple[dict, dict]:
    """Sex probe summary and the per-subject age and sex predictions of the test splits.

    Args:
        config: the ``evaluate`` section (``c_grid``, ``brain_age_cv_splits``, ``n_bootstrap``, ``seed``).
        x: ``(N, F)`` features of the pretraining cohort; table: its table (``split``, ``age``, ``sex``).
        alpha: the brain-age probe's chosen ridge penalty.

    Returns:
        ``(summary, arrays)``: ``summary`` = ``n``, ``balanced_accuracy`` (+ ``_ci``), ``C`` of the sex
        probe; ``arrays`` = ``lifespan/{ids,age,age_pred,sex,sex_pred}`` for ``predictions.npz``.
    """
    split = table["split"].to_numpy()
    train, test = split == "train", np.isin(split, TEST_SPLITS)
    x = np.asarray(x, float)
    age = table["age"].to_numpy(float)
    sex = encode_sex(table["sex"], "openbhb sex").astype(int)
    with probes.lean_fits():
        age_pred = probes.ridge_path(x[train], age[train], x[test], [alpha])[0]  # (n_test,)
        inner = StratifiedKFold(config.brain_age_cv_splits, shuffle=True, random_state=config.seed)
        c = probes.select_c(x[train], sex[train], config.c_grid, inner, balanced=True)
        sex_pred = transfer.fit_predict(x[train], sex[train], x[test], c)[0].astype(int)
    y, pred = sex[test][None], sex_pred[None]  # (1, n_test)
    summary = {"n": int(test.sum()), "balanced_accuracy": float(balanced_accuracy_rows(y, pred)[0]),
               "balanced_accuracy_ci": bootstrap_ci(balanced_accuracy_rows, (y, pred), config.n_bootstrap,
                                                    config.seed),
               "C": c}
    arrays = {f"{PREFIX}/ids": table["participant_id"].astype(str).to_numpy()[test].astype(str),
              f"{PREFIX}/age": age[test], f"{PREFIX}/age_pred": age_pred,
              f"{PREFIX}/sex": sex[test], f"{PREFIX}/sex_pred": sex_pred}
    return summary, arrays
