"""Property checks of a generated benchmark, computed without training any encoder.

They test the design principles of :mod:`anatcl_core.synth` on the files as written:

* :func:`task_separability`: per diagnosis task, cross-validated balanced accuracy of a logistic
  regression on age and sex (must stay near chance: cases and controls are matched), on the true
  z-scored descriptors, and on the top principal components of the *healthy* descriptors (the
  conditions must lie along directions healthy anatomy varies in).
* :func:`image_properties`: what the voxels carry: share of voxel variance explained by site vs
  age vs sex vs the latent anatomical factors, the same per top voxel PC, site predictability, thickness-age correlation, and
  per-region agreement between summed GM in the atlas region and the generated GM volume.
* :func:`descriptor_variance_shares`: the same decomposition in the z-scored descriptors, where
  the latent factors must lead (the reverse of the voxels, where site leads).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.data import layout
from anatcl_core.freesurfer import DEFAULT_CHANNELS, channel_index, select_channels
from anatcl_core.synth.base import load_base

TASKS = ("ad", "mci", "scz", "asd")


def read_pretraining(root: Path, images: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """participants.tsv, ``(N, 7, 68)`` tables and optionally ``(N, X, Y, Z)`` maps of an OpenBHB root."""
    root = Path(root)
    table = pd.read_csv(root / layout.PARTICIPANTS_FILE, sep="\t", dtype={"participant_id": str})
    files = [(s, p) for s, p in zip(table["split"], table["participant_id"])]
    rois = np.stack([np.load(layout.subject_file(root, s, p, layout.DESIKAN_KIND)) for s, p in files])
    maps = np.stack([np.load(layout.subject_file(root, s, p, layout.VBM_KIND))[0] for s, p in files]) if images else None
    return table, rois, maps


def read_manifest(root: Path, images: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """manifest.tsv, ``(N, 7, 68)`` tables and optionally ``(N, X, Y, Z)`` maps of a manifest folder."""
    root = Path(root)
    table = pd.read_csv(root / layout.MANIFEST_FILE, sep="\t", dtype={"participant_id": str, "subject": str})
    rois = np.stack([np.load(root / p) for p in table["roi"]])
    maps = np.stack([np.asarray(nib.load(root / p).dataobj) for p in table["image"]]) if images else None
    return table, rois, maps


def balanced_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Mean cross-validated balanced accuracy of a standardised L2 logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, labels, cv=cv, scoring="balanced_accuracy").mean())


def task_separability(out_dir: Path, n_components: int = 8) -> dict[str, dict[str, float]]:
    """Balanced accuracy per task from age+sex, true descriptors and top healthy-descriptor PCs.

    Descriptors are the anatomical kernel's channels (CT, GMV, SA), z-scored with the healthy
    pretraining cohort's statistics, as the kernel sees them.
    """
    _, healthy, _ = read_pretraining(Path(out_dir) / "openbhb")
    healthy = select_channels(healthy, DEFAULT_CHANNELS).reshape(len(healthy), -1)
    mean, std = healthy.mean(0), healthy.std(0) + 1e-8
    pca = PCA(n_components).fit((healthy - mean) / std)
    manifest, tables, _ = read_manifest(Path(out_dir) / "downstream")
    desc = (select_channels(tables, DEFAULT_CHANNELS).reshape(len(tables), -1) - mean) / std
    results = {}
    for task in TASKS:
        member = manifest[f"dx_{task}"].notna().to_numpy()
        labels = manifest.loc[member, f"dx_{task}"].astype(int).to_numpy()
        age, sex = manifest.loc[member, "age"].to_numpy(), manifest.loc[member, "sex"].to_numpy()
        results[task] = dict(
            n=int(member.sum()),
            age_sex=balanced_accuracy(np.column_stack([age, age**2, sex]), labels),
            descriptors=balanced_accuracy(desc[member], labels),
            healthy_pcs=balanced_accuracy(pca.transform(desc[member]), labels),
        )
    return results


def _r2(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-column R^2 of an OLS fit of ``targets (N, K)`` on ``design (N, P)`` (intercept added)."""
    design = np.column_stack([np.ones(len(design)), design])
    coef, *_ = np.linalg.lstsq(design, targets, rcond=None)
    residual = targets - design @ coef
    centred = targets - targets.mean(0)
    return 1.0 - (residual**2).sum(0) / (centred**2).sum(0)


def image_properties(out_dir: Path, config, n_components: int = 10) -> dict[str, object]:
    """Voxel-level variance sources and descriptor recoverability on the healthy pretraining maps.

    Args:
        out_dir: a generated benchmark. config: the :class:`SynthConfig` that generated it (its
            grid, and the latent factors, which are re-drawn since they are not on disk).
    """
    table, rois, maps = read_pretraining(Path(out_dir) / "openbhb", images=True)
    base = load_base(config.voxel_mm)
    drawn_ids, factors, _ = healthy_factors(config)
    if list(drawn_ids) != list(table["participant_id"]):
        raise ValueError(f"{out_dir}: its participants do not match the given config's cohort")
    voxels = maps[:, base.mask]  # (N, V)
    centred = voxels - voxels.mean(0)
    site = pd.get_dummies(table["site"]).to_numpy(float)[:, 1:]
    age = table["age"].to_numpy(float)
    age_design = np.column_stack([age, age**2, age**3]) / np.array([100.0, 1e4, 1e6])
    sex = table["sex"].to_numpy(float)[:, None]
    total = (centred**2).sum()

    def share(design):
        return float((_r2(design, centred) * (centred**2).sum(0)).sum() / total)

    pca = PCA(n_components).fit(centred)
    scores = pca.transform(centred)
    pcs = {name: _r2(d, scores).round(3).tolist() for name, d in (("site", site), ("age", age_design), ("sex", sex))}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    site_acc = cross_val_score(model, scores, table["site"], cv=cv).mean()

    mean_ct = rois[:, channel_index("CT")].mean(1)
    gmv = rois[:, channel_index("GMV")]  # (N, 68)
    sums = np.stack([maps[:, base.classes == r].sum(1) for r in range(gmv.shape[1])], axis=1)  # (N, 68)
    filled = (base.classes[..., None] == np.arange(gmv.shape[1])).sum((0, 1, 2)) > 0
    region_r = np.array([np.corrcoef(sums[:, r], gmv[:, r])[0, 1] for r in np.flatnonzero(filled)])
    return dict(
        variance_share=dict(site=share(site), age=share(age_design), sex=share(sex), latent=share(factors)),
        pc_r2=pcs,
        pc_variance_ratio=pca.explained_variance_ratio_.round(3).tolist(),
        site_accuracy=float(site_acc),
        site_chance=float(table["site"].value_counts(normalize=True).max()),
        thickness_age_r=float(np.corrcoef(mean_ct, age)[0, 1]),
        region_sum_r_median=float(np.median(region_r)),
        region_sum_r_min=float(region_r.min()),
        n_regions=int(filled.sum()),
    )



def healthy_factors(config) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Re-draw the pretraining cohort's anatomy (no rendering): ids, ``(N, L)`` factors, ``(N, 7, 68)``."""
    from anatcl_core.synth import cohorts
    from anatcl_core.synth.anatomy import make_population, sample_anatomy

    population = make_population(cohorts.generator(config.seed, "population", 0))
    sites = cohorts.pretraining_sites(config)
    table = cohorts.pretraining_table(config, sites)
    draws = [
        sample_anatomy(config, population, cohorts.generator(config.seed, "pretrain", 1, i), row.age, row.sex,
                       sites[row.site].fs_ct, sites[row.site].fs_sa)
        for i, row in enumerate(table.itertuples(index=False))
    ]  # fmt: skip
    return list(table["participant_id"]), np.stack([d.factors for d in draws]), np.stack([d.table for d in draws])


def descriptor_variance_shares(config) -> dict[str, float]:
    """Share of the z-scored healthy descriptors' variance (CT, GMV, SA) explained by each source.

    Reports the OLS R^2 (pooled over features) of: the latent factors (re-drawn with
    :func:`healthy_factors`), age (cubic), site, sex.
    """
    from anatcl_core.synth import cohorts

    table = cohorts.pretraining_table(config, cohorts.pretraining_sites(config))
    _, factors, tables = healthy_factors(config)
    desc = select_channels(tables, DEFAULT_CHANNELS).reshape(len(tables), -1)
    desc = (desc - desc.mean(0)) / (desc.std(0) + 1e-8)
    age = table["age"].to_numpy(float)
    designs = dict(
        latent=factors,
        age=np.column_stack([age, age**2, age**3]) / np.array([100.0, 1e4, 1e6]),
        site=pd.get_dummies(table["site"]).to_numpy(float)[:, 1:],
        sex=table["sex"].to_numpy(float)[:, None],
    )
    return {name: float(_r2(design, desc).mean()) for name, design in designs.items()}
