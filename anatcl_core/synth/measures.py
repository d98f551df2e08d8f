"""What a generated benchmark holds, measured on its files with sklearn estimators and no encoder.

Each function reads a cohort as written (``<out>/openbhb``, ``<out>/downstream``,
``<out>/travelling``) and returns plain numbers; :mod:`.checks` compares them with their published
targets. Manifest-only conventions are used (``dx_<task>``, ``site``, ``age``, ``sex``), so the
measures also run on a user's own cohort in the same layout.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.data import layout, resources
from anatcl_core.data.freesurfer import DEFAULT_CHANNELS, select_channels
from anatcl_core.data.manifest import task_columns

#: Inverse regularisation strengths searched by the inner CV of every logistic probe.
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Ridge penalties searched by every brain-age regression (leave-one-out CV on the training split).
ALPHA_GRID = tuple(np.logspace(-2, 4, 13))


def read_pretraining(root: Path, images: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """participants.tsv, ``(N, 7, 68)`` tables and optionally ``(N, X, Y, Z)`` maps of an OpenBHB root."""
    root = Path(root)
    table = pd.read_csv(root / layout.PARTICIPANTS_FILE, sep="\t", dtype={"participant_id": str})
    files = list(zip(table["split"], table["participant_id"]))
    rois = np.stack([resources.read_roi_table(layout.subject_file(root, s, p, layout.DESIKAN_KIND))
                     for s, p in files])
    maps = np.stack([np.load(layout.subject_file(root, s, p, layout.VBM_KIND))[0] for s, p in files]) if images else None
    return table, rois, maps


def read_manifest(root: Path, images: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """manifest.tsv, ``(N, 7, 68)`` tables and optionally ``(N, X, Y, Z)`` maps of a manifest folder."""
    root = Path(root)
    table = pd.read_csv(root / layout.MANIFEST_FILE, sep="\t", dtype={"participant_id": str, "subject": str})
    rois = np.stack([resources.read_roi_table(root / p) for p in table["roi"]])
    maps = np.stack([np.asarray(nib.load(root / p).dataobj) for p in table["image"]]) if images else None
    return table, rois, maps


def descriptor_features(tables: np.ndarray) -> np.ndarray:
    """``(N, 204)`` log CT, GMV and SA of ``(N, 7, 68)`` Desikan tables (the anatomical kernel's inputs)."""
    return np.log(select_channels(tables, DEFAULT_CHANNELS).reshape(len(tables), -1))


def _brain_voxels(maps: np.ndarray) -> np.ndarray:
    """``(N, V)`` voxels that are non-zero in some map (the brain mask as written)."""
    return maps.reshape(len(maps), -1)[:, (maps != 0).any(axis=0).ravel()]


def travelling_variance_split(root: Path) -> dict[str, float]:
    """Two-way (subject x site) decomposition of the travelling heads' voxel sums of squares.

    Every subject is scanned at every site once (a balanced design), so the shares of the
    subject and site main effects and of the residual (interaction + noise) add up to 1.

    Returns:
        ``subject``, ``site``, ``residual``: shares of the total voxel sum of squares.
    """
    manifest, _, maps = read_manifest(root, images=True)
    voxels = _brain_voxels(maps)
    subjects, sites = manifest["subject"].to_numpy(), manifest["site"].to_numpy()
    grand = voxels.mean(0)
    total = ((voxels - grand) ** 2).sum()
    shares = {}
    for name, factor in (("subject", subjects), ("site", sites)):
        means = pd.DataFrame(voxels).groupby(factor).transform("mean").to_numpy()
        shares[name] = float(((means - grand) ** 2).sum() / total)
    shares["residual"] = 1.0 - shares["subject"] - shares["site"]
    return shares


def site_from_voxels(root: Path, n_components: int = 64, seed: int = 0) -> dict[str, float]:
    """Balanced accuracy of a logistic classifier of site on raw voxel PCs (pretraining maps).

    The PCs are fitted once on every map (unsupervised, no label seen); standardised PCs feed an
    L2 logistic regression, C by an inner 3-fold CV; outer stratified 5-fold CV.
    """
    table, _, maps = read_pretraining(root, images=True)
    scores = PCA(n_components, random_state=seed).fit_transform(_brain_voxels(maps))
    site = table["site"].to_numpy()
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                          {"logisticregression__C": C_GRID}, scoring="balanced_accuracy",
                          cv=StratifiedKFold(3, shuffle=True, random_state=seed))  # fmt: skip
    predicted = cross_val_predict(search, scores, site, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return dict(balanced_accuracy=float(balanced_accuracy_score(site, predicted)),
                chance=1.0 / len(np.unique(site)), n_sites=int(len(np.unique(site))))  # fmt: skip


def _age_errors(features: np.ndarray, table: pd.DataFrame, model) -> dict[str, float]:
    split = table["split"].to_numpy()
    age = table["age"].to_numpy(float)
    model.fit(features[split == "train"], age[split == "train"])
    out = {}
    for name in ("internal_test", "external_test"):
        out[name] = float(mean_absolute_error(age[split == name], model.predict(features[split == name])))
    out["ratio"] = out["external_test"] / out["internal_test"]
    return out


def brain_age_errors(root: Path, n_components: int = 64, seed: int = 0) -> dict[str, dict[str, float]]:
    """OpenBHB's brain-age protocol on raw inputs: ridge trained on ``train``, MAE on both test splits.

    Returns:
        ``{"voxel_pcs": ..., "descriptors": ...}``, each with ``internal_test`` and
        ``external_test`` MAE (years) and their ``ratio`` (external / internal).
    """
    table, rois, maps = read_pretraining(root, images=True)
    ridge = RidgeCV(alphas=ALPHA_GRID)
    return dict(
        voxel_pcs=_age_errors(_brain_voxels(maps), table, make_pipeline(PCA(n_components, random_state=seed),
                                                                         StandardScaler(), ridge)),
        descriptors=_age_errors(descriptor_features(rois), table, make_pipeline(StandardScaler(), ridge)),
    )  # fmt: skip


def studies(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Group the ``dx_`` tasks into studies: tasks sharing their controls belong to one study.

    Returns:
        ``{first task of the study: [its tasks]}`` in manifest order.
    """
    groups: dict[frozenset, list[str]] = {}
    for column in task_columns(manifest):
        controls = frozenset(manifest.index[manifest[column] == 0])
        groups.setdefault(controls, []).append(column.removeprefix(layout.DX_PREFIX))
    return {tasks[0]: tasks for tasks in groups.values()}


def study_recruitment(root: Path) -> dict[str, dict[str, float]]:
    """Per study: its sites and the range of the sites' case shares (any case vs controls)."""
    manifest = pd.read_csv(Path(root) / layout.MANIFEST_FILE, sep="\t", dtype={"participant_id": str})
    out = {}
    for name, tasks in studies(manifest).items():
        labels = manifest[[layout.DX_PREFIX + t for t in tasks]]
        member = labels.notna().any(axis=1)
        case = (labels == 1).any(axis=1)[member]
        share = case.groupby(manifest.loc[member, "site"]).mean()
        out[name] = dict(n_sites=int(len(share)), share_min=float(share.min()), share_max=float(share.max()),
                         n=int(member.sum()), tasks=len(tasks))  # fmt: skip
    return out


def _probe(seed: int = 0):
    """Standardised L2 logistic regression, C chosen by stratified 3-fold CV on the data it is fitted on."""
    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(C_GRID), cv=StratifiedKFold(3, shuffle=True, random_state=seed), scoring="balanced_accuracy",
        max_iter=3000))  # fmt: skip


def leave_site_out_accuracy(features: np.ndarray, labels: np.ndarray, sites: np.ndarray) -> float:
    """Mean over held-out sites of the balanced accuracy of a standardised logistic probe.

    Outer loop: :class:`~sklearn.model_selection.LeaveOneGroupOut` over sites; C chosen by a
    stratified 3-fold CV on the training sites only.
    """
    scores = []
    for train, test in LeaveOneGroupOut().split(features, labels, sites):
        model = _probe().fit(features[train], labels[train])
        scores.append(balanced_accuracy_score(labels[test], model.predict(features[test])))
    return float(np.mean(scores))


def pooled_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of the same probe under stratified 5-fold CV that ignores sites."""
    predicted = cross_val_predict(_probe(seed), features, labels, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return float(balanced_accuracy_score(labels, predicted))


def task_accuracy(root: Path, n_components: int = 64, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per task: leave-site-out balanced accuracy of the two model-free probes, linear on the measured
    FreeSurfer tables (``descriptors``) and on ``n_components`` voxel PCs (``voxels``; PCA fitted once on
    every map of the cohort, no label seen), and of age + sex; and the tables' pooled (site-ignoring)
    accuracy."""
    manifest, tables, maps = read_manifest(root, images=True)
    desc = descriptor_features(tables)
    pcs = PCA(n_components, random_state=seed).fit_transform(_brain_voxels(maps))
    del maps
    out = {}
    for column in task_columns(manifest):
        member = manifest[column].notna().to_numpy()
        labels = manifest.loc[member, column].astype(int).to_numpy()
        sites = manifest.loc[member, "site"].to_numpy()
        age, sex = manifest.loc[member, "age"].to_numpy(float), manifest.loc[member, "sex"].to_numpy(float)
        out[column.removeprefix(layout.DX_PREFIX)] = dict(
            n=int(member.sum()), n_cases=int(labels.sum()),
            descriptors=leave_site_out_accuracy(desc[member], labels, sites),
            voxels=leave_site_out_accuracy(pcs[member], labels, sites),
            descriptors_pooled=pooled_accuracy(desc[member], labels),
            age_sex=leave_site_out_accuracy(np.column_stack([age, age**2 / 100.0, sex]), labels, sites),
        )  # fmt: skip
    return out


def cohens_d(values: np.ndarray, labels: np.ndarray) -> float:
    """Cases minus controls over the pooled SD (``labels`` 1 = case)."""
    cases, controls = values[labels == 1], values[labels == 0]
    pooled = np.sqrt(((len(cases) - 1) * cases.var(ddof=1) + (len(controls) - 1) * controls.var(ddof=1))
                     / (len(cases) + len(controls) - 2))  # fmt: skip
    return float((cases.mean() - controls.mean()) / pooled)


def _hippocampal_gm(root: Path, images: pd.Series, voxel_mm: float) -> np.ndarray:
    """Summed GM of each map inside the atlas's hippocampi (a VBM ROI volume), one file at a time."""
    from anatcl_core.synth.base import CLASSES, load_base

    classes = load_base(voxel_mm).classes
    mask = np.isin(classes, [CLASSES.index(f"{side}-Hippocampus") for side in ("Left", "Right")])
    return np.array([np.asarray(nib.load(Path(root) / path).dataobj)[mask].sum() for path in images])


def effect_sizes(root: Path, voxel_mm: float) -> dict[str, dict[str, float]]:
    """Per task, Cohen's d (cases - controls) of the measures meta-analyses report.

    Mean cortical thickness and total surface area (FreeSurfer tables), entorhinal thickness, the
    largest regional thickness |d| of the 68 regions, and hippocampal GM summed from the maps.
    """
    from anatcl_core.data.freesurfer import DESIKAN_COLUMNS, channel_index

    manifest, tables, _ = read_manifest(root)
    ct, sa = tables[:, channel_index("CT")], tables[:, channel_index("SA")]
    entorhinal = ct[:, [DESIKAN_COLUMNS.index(f"{h}-entorhinal") for h in ("lh", "rh")]].mean(1)
    hippocampus = _hippocampal_gm(root, manifest["image"], voxel_mm)
    out = {}
    for column in task_columns(manifest):
        member = manifest[column].notna().to_numpy()
        labels = manifest.loc[member, column].astype(int).to_numpy()
        regional = [abs(cohens_d(ct[member, r], labels)) for r in range(ct.shape[1])]
        out[column.removeprefix(layout.DX_PREFIX)] = dict(
            mean_ct=cohens_d(ct[member].mean(1), labels), total_sa=cohens_d(sa[member].sum(1), labels),
            entorhinal_ct=cohens_d(entorhinal[member], labels), max_regional_ct=float(max(regional)),
            hippocampus_gm=cohens_d(hippocampus[member], labels),
        )  # fmt: skip
    return out


def focal_contrast(root: Path, voxel_mm: float, spot: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Per map, the log ratio of GM inside a spot of :mod:`.focal` (both sides) to GM in the rest of the
    regions it lies in: what a within-region (VBM) analysis sees and a regional table cannot."""
    from anatcl_core.synth import focal
    from anatcl_core.synth.base import load_base

    index = focal.SPOT_NAMES.index(spot)
    field = focal.basis(voxel_mm)[[index, index + len(focal.SPOTS)]].sum(0)  # (G,) class-centred
    in_gm = load_base(voxel_mm).classes >= 0
    manifest = pd.read_csv(Path(root) / layout.MANIFEST_FILE, sep="\t", dtype={"participant_id": str})
    core, rest = field > 0.2 * field.max(), field < 0
    values = []
    for path in manifest["image"]:
        gm = np.asarray(nib.load(Path(root) / path).dataobj)[in_gm]
        values.append(np.log(gm[core].sum() + 1e-6) - np.log(gm[rest].sum() + 1e-6))
    return manifest, np.array(values)
