"""FreeSurfer's Desikan tables as a measurement of the anatomy, not its truth.

The map is rendered from a subject's anatomy (:class:`.anatomy.Anatomy`); the ``(7, 68)`` table
is a second measurement of the same regions by another pipeline, with its own errors::

    log CT_measured  = log CT_true  + site.fs_ct + site.fs_regional[0] + fs_thickness_error * N(0, 1)
    log SA_measured  = log SA_true  + site.fs_sa + site.fs_regional[1] + fs_area_error * N(0, 1)
    log GMV_measured = log GMV_true + site.fs_ct + site.fs_sa + site.fs_regional[2]
                       + fs_volume_error * N(0, 1)

drawn per scan: the same subject scanned twice (or at two sites) gets two tables. Targets
(:mod:`.checks`): test-retest ICC of regional thickness > 0.82, of area and volume > 0.97
(FreeSurfer reliability studies, ``REFERENCE.md`` §6; e.g. Iscan et al., Hum Brain Mapp 2015), and not
1: a table is a noisy measurement. Scanner effects: a global and a regional offset per site and
channel, within the < 10 % cross-site variability of thickness and subcortical volumes (Busa et al.,
ISMRM 2006). Like FreeSurfer's, a measured thickness stays below 5 mm. The other four channels follow the
measured thickness and area.
"""

from __future__ import annotations

import numpy as np

from anatcl_core.synth.anatomy import soft_max

#: Decimals kept per FreeSurfer channel (SA mm^2, GMV mm^3, CT mm, CT SD, three curvature indices).
_DECIMALS = (1, 1, 4, 4, 4, 4, 4)


def desikan_table(log_sa: np.ndarray, log_gmv: np.ndarray, log_ct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ``(7, 68)`` float32 FreeSurfer table from log area, volume and thickness (curvatures follow
    thickness and the root of the area, with 4 % jitter), rounded to FreeSurfer's precision."""
    table = np.empty((7, len(log_ct)))
    table[0], table[1], table[2] = np.exp(log_sa), np.exp(log_gmv), np.exp(log_ct)
    jitter = np.exp(0.04 * rng.standard_normal((4, len(log_ct))))
    root_area = np.sqrt(table[0])
    table[3] = 0.28 * table[2] * jitter[0]
    table[4] = 0.40 * root_area * jitter[1]
    table[5] = 0.08 * root_area * jitter[2]
    table[6] = 0.05 * root_area * jitter[3]
    # FreeSurfer-like precision; also keeps files identical across CPUs whose exp/log differ by an ulp
    table = np.stack([np.round(row, decimals) for row, decimals in zip(table, _DECIMALS)])
    return table.astype(np.float32)


def freesurfer_table(config, anatomy, site, rng: np.random.Generator) -> np.ndarray:
    """One scan's measured ``(7, 68)`` Desikan table (module docstring).

    Args:
        config: :class:`~anatcl_core.synth.config.SynthConfig` (the ``fs_*_error`` fields).
        anatomy: the subject's :class:`~anatcl_core.synth.anatomy.Anatomy` (true log measures).
        site: the scanning :class:`~anatcl_core.synth.cohorts.Site`.
        rng: this scan's own generator.
    """
    error = rng.standard_normal((3, len(anatomy.log_ct)))
    log_ct = anatomy.log_ct + site.fs_ct + site.fs_regional[0] + config.fs_thickness_error * error[0]
    log_sa = anatomy.log_sa + site.fs_sa + site.fs_regional[1] + config.fs_area_error * error[1]
    log_gmv = (anatomy.log_gmv + site.fs_ct + site.fs_sa + site.fs_regional[2]
               + config.fs_volume_error * error[2])  # fmt: skip
    log_ct = np.log(soft_max(np.exp(log_ct), knee=4.0, limit=4.9))  # FreeSurfer clamps thickness at 5 mm
    return desikan_table(log_sa, log_gmv, log_ct, rng)
