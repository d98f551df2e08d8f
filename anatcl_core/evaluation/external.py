"""Any BrainFMBench extractor as a reference row: params.yaml ``reference.external``.

A folder of BrainFMBench's contract (``models/<slug>/`` with ``model.yaml`` and ``extract.py``,
:mod:`anatcl_core.export.check`) is run on our cohorts: every cohort's grey-matter maps are written
as ``<scratch>/<cohort>/<participant_id>/normalized.nii.gz`` (NIfTI, the CAT12 grid's affine at the
arrays' voxel size, uncropped), the folder's ``extract(input_dir, output_csv, weights_dir)`` runs in
a subprocess of this environment with every socket connection refused
(:func:`anatcl_core.export.sandbox.run_extract`), and its ``f0..f{D-1}`` columns are probed like every
reference row (:func:`anatcl_core.evaluation.evaluate.evaluate_features`), so the report pairs them
with each method (paired CIs). The row is ``ref_<name>``, ``name`` its key in ``reference.external``
(listed in ``reference.run`` too: the reference stage's matrix); ``weights_dir`` is the folder's
``weights/`` (put the files of its ``weights.txt`` there; nothing is downloaded), an empty one if
absent (the extractor then says what it does without weights). A researcher who clones
BrainFMBench puts un-CNN beside AnatCL in two words of params.yaml: ``external: {bfmb_uncnn:
BrainFMBench/models/uncnn}`` and ``bfmb_uncnn`` in ``run``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from anatcl_core.data import arrays, io, layout
from anatcl_core.data.files import PANDAS_ERRORS, one_line, read_csv
from anatcl_core.evaluation import evaluate, protocol
from anatcl_core.export import sandbox

logger = logging.getLogger(__name__)

WEIGHTS_DIR = "weights"
INPUT_FILE = "normalized.nii.gz"


def write_maps(cohort: arrays.Cohort, out: Path, progress: bool = True) -> None:
    """``<out>/<participant_id>/normalized.nii.gz`` for every subject: the uncropped map, CAT12 affine."""
    voxel_mm = io.infer_voxel_mm(cohort.images.shape[-3:])
    if voxel_mm is None:
        raise ValueError(f"images of shape {cohort.images.shape[-3:]} are on no CAT12 grid; cannot write NIfTI maps")
    affine = layout.grid_affine(voxel_mm)
    for pid, image in tqdm(zip(cohort.table["participant_id"].astype(str), cohort.images),
                           total=len(cohort.table), desc="maps", disable=not progress, leave=False):
        folder = out / layout.check_participant_id(pid)
        folder.mkdir(parents=True)
        io.save_nifti(np.asarray(image[0], np.float32), affine, folder / INPUT_FILE)


def read_features(path: Path, ids: list[str], dim: int) -> np.ndarray:
    """The ``(N, D)`` features of an extractor's CSV in ``ids``' order.

    Raises:
        ValueError: a header, width or subject set that is not the contract's (naming the file).
    """
    frame = read_csv(path, f"a features CSV (subject_id,f0..f{dim - 1})", ValueError, dtype={"subject_id": str},
                     keep_default_na=False, na_values={f"f{j}": ["", "nan", "NaN"] for j in range(dim)})  # id "None" stays
    expected = ["subject_id", *(f"f{j}" for j in range(dim))]
    if list(frame.columns) != expected:
        raise ValueError(f"{path}: columns {list(frame.columns)[:3]}... ({frame.shape[1]}); expected "
                         f"subject_id,f0..f{dim - 1} (embedding_dim {dim})")
    frame = frame.set_index("subject_id")
    missing = sorted(set(ids) - set(frame.index))
    if missing or frame.index.duplicated().any():
        raise ValueError(f"{path}: subjects {missing[:5]} missing or ids repeated; expected one row per map")
    try:
        return frame.loc[ids].to_numpy(np.float64)
    except PANDAS_ERRORS as err:
        raise ValueError(f"{path}: values that are not numbers ({one_line(err)}); expected f0..f{dim - 1} floats") from None


def external_features(folder: str | Path, cohorts: dict[str, arrays.Cohort], timeout_s: float = 3 * 3600.0,
                      progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Run the extractor of ``folder`` on every cohort; (cohort -> ``(N, D)`` features, model.yaml).

    Raises:
        ValueError: a folder that is not a submission, or an extract that fails or uses the network.
    """
    folder = Path(folder)
    meta_file = folder / "model.yaml"
    if not meta_file.is_file() or not (folder / "extract.py").is_file():
        raise ValueError(f"{folder}: reference.external entry is no BrainFMBench folder (model.yaml, extract.py)")
    meta = yaml.safe_load(meta_file.read_text(encoding="utf-8")) or {}
    dim = meta.get("embedding_dim")
    if type(dim) is not int or dim < 1:
        raise ValueError(f"{meta_file}: embedding_dim {dim!r}; expected a positive int")
    out = {}
    with tempfile.TemporaryDirectory(prefix="external-") as tmp:
        scratch = Path(tmp)
        weights = folder / WEIGHTS_DIR if (folder / WEIGHTS_DIR).is_dir() else scratch / "no_weights"
        weights.mkdir(exist_ok=True)
        for name, cohort in cohorts.items():
            write_maps(cohort, scratch / name, progress)
            csv_path = scratch / f"{name}.csv"
            done, network = sandbox.run_extract(Path(sys.executable), folder,
                                                [str(scratch / name), str(csv_path), str(weights)], scratch, timeout_s)
            if network or done.returncode:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise ValueError(f"{folder}/extract.py on the {name} cohort: "
                                 + (f"network use ({network[0][0]})" if network else f"failed: {last}"))
            for line in done.stderr.splitlines():
                if "Warning" in line:
                    logger.warning("%s: %s", folder, line.strip())
            out[name] = read_features(csv_path, cohort.table["participant_id"].astype(str).tolist(), dim)
    return out, meta


def evaluate_external(folder: str | Path, eval_config: protocol.EvaluateConfig, arrays_dir: str | Path,
                      out_dir: str | Path, name: str, progress: bool = True) -> dict:
    """Reference row ``ref_<name>``: the extractor's features of every cohort through every probe.

    Returns:
        The ``probes.json`` content (``method`` = ``ref_<name>``, ``seed`` None, ``external`` the
        folder and its model.yaml name).
    """
    cohorts = arrays.load_arrays(arrays_dir)
    evaluate.check_no_overlap(cohorts["openbhb"].table["participant_id"],
                              cohorts["downstream"].table["participant_id"])
    x, meta = external_features(folder, cohorts, progress=progress)
    info = {"method": "ref_" + name, "seed": None, "feature_dim": int(x["downstream"].shape[1]),
            "external": {"folder": str(folder), "name": str(meta.get("name", ""))}}
    return evaluate.evaluate_features(eval_config, x, cohorts, out_dir, info)
