"""Reference rows: feature sets probed exactly like an encoder (params.yaml ``reference``).

Every results table and figure shows, beside the pretrained encoders and the randomly initialised
one, what simpler representations of the same subjects reach under the same probes, folds and
draws (:func:`anatcl_core.evaluation.evaluate.evaluate_features`):

- ``descriptors``: the true FreeSurfer tables (``evaluate.descriptor_channels`` of every region,
  flattened): what a FreeSurfer user has without any network;
- ``voxel_pcs``: the top ``voxel_components`` principal components of the grey-matter maps, the
  PCA fitted on the healthy pretraining *train* split only (the cohort stage's stacked arrays, all
  voxels of the uncropped grid; other cohorts projected in batches): a linear representation
  learned from the same scans as the encoders;
- ``age_sex``: age and sex (0/1), the floor a diagnosis probe must beat. Its brain-age probes and
  age read-out are left out (they would predict age from age);
- ``uncnn``: a training-free 3D CNN (:mod:`anatcl_core.evaluation.uncnn`) of ``uncnn_widths``
  channels per block, weights from ``evaluate.seed``, on the maps of the uncropped grid: the random
  network that beats AnatCL on real lifespan cohorts (BrainFMBench);
- any BrainFMBench extractor folder: ``external`` maps a row name (listed in ``run`` too) to the
  folder, whose ``extract`` is run on our cohorts (:mod:`anatcl_core.evaluation.external`).

Each row's feature-extraction cost goes to its ``dvclive/metrics.json`` (``feature_extraction``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import AfterValidator, Field
from sklearn.decomposition import PCA

from anatcl_core.config import PositiveInt, section
from anatcl_core.cores import one_blas_thread, resolve_threads
from anatcl_core.data import arrays
from anatcl_core.data.freesurfer import select_channels
from anatcl_core.data.openbhb import encode_sex
from anatcl_core.evaluation import evaluate, external, protocol, uncnn

logger = logging.getLogger(__name__)

REFERENCES: tuple[str, ...] = ("descriptors", "voxel_pcs", "age_sex", "uncnn")
#: Prefix of a reference row's name among the methods of the report (``ref_descriptors``, ...).
PREFIX = "ref_"


@section
class ReferenceConfig:
    """params.yaml ``reference``: which rows to compute (``run``), the voxel PCA's size, the
    un-CNN's channels per block (each a multiple of 8; published 64/128/256/512) and the external rows.

    Every field is required: params.yaml is the one home of their values. ``external``: row name ->
    BrainFMBench extractor folder (``models/<slug>``); each name must also be in ``run`` (the
    reference stage's matrix) and may not be one of :data:`REFERENCES`.
    """

    run: Annotated[tuple[str, ...], Field(min_length=1)]
    voxel_components: PositiveInt
    uncnn_widths: Annotated[tuple[PositiveInt, ...], Field(min_length=1), AfterValidator(uncnn.check_widths)]
    external: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], str]

    def __post_init__(self) -> None:
        unknown = [r for r in self.run if r not in REFERENCES and r not in self.external]
        if unknown:
            raise ValueError(f"run lists {unknown}: neither a built-in reference {REFERENCES} nor a key of external")
        clash = sorted(set(self.external) & set(REFERENCES))
        if clash:
            raise ValueError(f"external rows {clash} reuse built-in reference names; rename them")


def descriptor_features(cohorts: dict[str, arrays.Cohort], channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``(N, C * R)`` FreeSurfer descriptors of every cohort.

    Raises:
        ValueError: if a subject has no ROI table (a manifest row without ``roi``).
    """
    out = {}
    for name, cohort in cohorts.items():
        missing = cohort.table["participant_id"][~cohort.has_descriptors()].tolist()
        if missing:
            raise ValueError(f"{name} cohort: the descriptors reference needs a roi for every row; "
                             f"participant(s) {missing[:5]} have none")
        tables = cohort.descriptors  # (N, 7, R)
        out[name] = select_channels(tables, list(channels)).reshape(len(tables), -1).astype(np.float64)
    return out


@one_blas_thread
def voxel_pcs(cohorts: dict[str, arrays.Cohort], n_components: int, seed: int,
              batch_size: int = 256) -> dict[str, np.ndarray]:
    """PCA of the pretraining train split's maps; every cohort projected on its components."""
    table = cohorts["openbhb"].table
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    images = cohorts["openbhb"].images
    fit = np.asarray(images[train], np.float32).reshape(len(train), -1)  # (n_train, V)
    keep = fit.std(0) > 0
    pca = PCA(min(n_components, len(train)), random_state=seed).fit(fit[:, keep])
    out = {}
    for name, cohort in cohorts.items():
        parts = [pca.transform(np.asarray(cohort.images[i:i + batch_size], np.float32)
                               .reshape(-1, keep.size)[:, keep])
                 for i in range(0, len(cohort.table), batch_size)]
        out[name] = np.concatenate(parts)
    logger.info("voxel PCA: %d components explain %.2f of train-split variance", pca.n_components_,
                pca.explained_variance_ratio_.sum())
    return out


def age_sex_features(cohorts: dict[str, arrays.Cohort]) -> dict[str, np.ndarray]:
    """``(N, 2)`` age and sex code of every cohort."""
    return {name: np.column_stack([c.table["age"].to_numpy(float),
                                   encode_sex(c.table["sex"], f"{name} sex").astype(float)])
            for name, c in cohorts.items()}


def evaluate_reference(name: str, config: ReferenceConfig, eval_config: protocol.EvaluateConfig,
                       arrays_dir: str | Path, out_dir: str | Path) -> dict:
    """Build reference row ``name``'s features and run every evaluate probe on them.

    Writes the same files as an encoder's evaluate stage under ``out_dir``.

    Returns:
        The ``probes.json`` content (``method`` = ``ref_<name>``, ``seed`` = None).
    """
    if name not in config.run:
        raise ValueError(f"reference {name!r} is not in reference.run {list(config.run)}")
    torch.set_num_threads(resolve_threads(eval_config.num_threads))
    if name in config.external:  # a BrainFMBench extractor folder
        return external.evaluate_external(config.external[name], eval_config, arrays_dir, out_dir, name)
    cohorts = arrays.load_arrays(arrays_dir)
    evaluate.check_no_overlap(cohorts["openbhb"].table["participant_id"],
                              cohorts["downstream"].table["participant_id"])
    start = time.perf_counter()
    meta = {"method": PREFIX + name, "seed": None}
    if name == "descriptors":
        x = descriptor_features(cohorts, eval_config.descriptor_channels)
    elif name == "voxel_pcs":
        x = voxel_pcs(cohorts, config.voxel_components, eval_config.seed)
    elif name == "uncnn":
        x = {k: uncnn.uncnn_features(c.images, config.uncnn_widths, eval_config.seed, desc=f"un-CNN {k}")
             for k, c in cohorts.items()}
        meta["widths"] = list(config.uncnn_widths)
    else:
        x = age_sex_features(cohorts)
    timing = evaluate.extraction_timing(time.perf_counter() - start, x)
    meta["feature_dim"] = int(x["downstream"].shape[1])
    return evaluate.evaluate_features(eval_config, x, cohorts, out_dir, meta,
                                      age_probes=name != "age_sex", timing=timing)
