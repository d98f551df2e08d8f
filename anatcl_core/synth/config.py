"""The synthetic cohort's knobs: params.yaml ``synth:`` (field = yaml key = keyword argument)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from anatcl_core.config import Fraction, NonNegative, NonNegativeInt, PositiveInt, section

#: Grid spacings the generator is meant for: from CAT12's own 1.5 mm (the real maps' grid; finer
#: invents detail no input has) to 12 mm (a 16x19x16 grid, the coarsest the tests render; coarser
#: grids lose whole regions and 1,000 mm ran for ever). profiles/*.yaml use 1.5, 4.5 and 9.
VOXEL_MM_RANGE = (1.5, 12.0)
#: Ten OpenBHBs (3,984 subjects each): beyond it a typo, not a study (~1 s and 8.5 MB a map at 1.5 mm).
MAX_PRETRAIN = 40_000
#: Ten times the nominal downstream cohort (2,350 subjects).
MAX_DOWNSTREAM_SCALE = 10.0


@section
class SynthConfig:
    """Every parameter of the synthetic benchmark (params.yaml ``synth:``).

    Every field is required: params.yaml is the one home of their values (a missing key is an
    error naming it). params.yaml's default (CPU) profile: 4.5 mm grid (41x49x41), 480 pretraining subjects at 8 sites, 2,350
    downstream subjects in four studies of 5 sites each (:data:`.cohorts.STUDIES`: ADNI-like AD/MCI,
    two schizophrenia studies, ABIDE-like autism with its DSM-IV subtypes; eight tasks), 10
    travelling heads at each of the 8 sites: 2,910 maps, ~60 s on one core, ~335 MB.

    Paper-scale profile (documented, not the default; ~1 s per map at 1.5 mm, i.e. ~2.5 h on one
    core for ~8,200 maps, ~40 GB on disk, almost all of it the 8.5 MB pretraining ``.npy`` maps)::

        voxel_mm: 1.5            # CAT12's 121x145x121 grid
        n_pretrain: 3984         # OpenBHB's size
        n_sites: 70
        n_external_sites: 10
        downstream_scale: 1.7

    Attributes:
        seed: master seed; every random draw derives from it (same seed -> byte-identical files).
        voxel_mm: grid spacing of the rendered maps, within :data:`VOXEL_MM_RANGE`; CAT12's field
            of view is kept (:func:`anatcl_core.data.layout.grid_shape`).
        n_pretrain: healthy subjects of the OpenBHB-like pretraining cohort (all splits), at most
            :data:`MAX_PRETRAIN`.
        n_sites: acquisition sites of the pretraining cohort, external ones included.
        n_external_sites: sites seen only in the ``external_test`` split.
        internal_test_fraction: share of the train sites' subjects held out as ``internal_test``.
        downstream_scale: multiplier of every downstream group's nominal size
            (:data:`.cohorts.STUDIES`; 1 = 2,350 subjects); > 0 (each group keeps >= 1 subject) and
            at most :data:`MAX_DOWNSTREAM_SCALE`.
        n_downstream_sites: sites per downstream study (each study recruits at its own); >= 1,
            the benchmark's checks ask >= 5.
        n_travelling: subjects scanned at every pretraining site (travelling heads).
        latent_sd: log-scale amplitude of one latent anatomical pattern (1 SD of its factor).
        region_sd: log-scale idiosyncratic variation of each region and measure.
        head_size_sd: log-scale SD of total intracranial volume.
        age_effect: multiplier of the lifespan trajectories (1 = nominal).
        ad_effect: shift of AD at full severity along its anatomical patterns, in latent SDs.
        scz_effect: same for schizophrenia.
        asd_effect: same for autism.
        site_intensity_sd: log-scale SD of a site's global intensity (scanner/segmentation gain).
        site_contrast_sd: log-scale SD of a site's contrast exponent on GM probabilities.
        site_bias: amplitude of a site's smooth multiplicative bias field (log scale).
        scan_bias: amplitude of each scan's own smooth bias field (log scale; positioning and
            shimming differ from session to session, at every site alike).
        site_noise_max: largest voxel noise SD of a site (modulated GM units); sites draw below it.
        site_fwhm_max_mm: largest extra smoothing FWHM of a site; sites draw below it.
        site_tissue_sd: log-scale SD of a site's GM gain in deep GM and cerebellum (T1 contrast,
            coverage); cortex, hippocampus and amygdala are not affected.
        transition_mm: FWHM of the smoothing between neighbouring regions' modulations.
        deformation_mm: scale of the local deformation carrying surface-area differences.
        fs_thickness_error, fs_area_error, fs_volume_error: log-scale SD of a scan's FreeSurfer
            measurement error of regional thickness, area and GM volume (:mod:`.measurement`;
            test-retest ICC > 0.82 for thickness, > 0.97 for area and volume).
        fs_site_regional_sd: log-scale SD of a site's regional offsets of FreeSurfer thickness and
            volume (half of it for area).
        focal_sd: log-scale SD of each within-region spot's individual amplitude (:mod:`.focal`).
    """

    seed: NonNegativeInt
    voxel_mm: Annotated[float, Field(ge=VOXEL_MM_RANGE[0], le=VOXEL_MM_RANGE[1])]
    n_pretrain: Annotated[int, Field(ge=1, le=MAX_PRETRAIN)]
    n_sites: Annotated[int, Field(ge=2)]
    n_external_sites: PositiveInt
    internal_test_fraction: Fraction
    downstream_scale: Annotated[float, Field(gt=0, le=MAX_DOWNSTREAM_SCALE)]
    n_downstream_sites: PositiveInt
    n_travelling: NonNegativeInt
    latent_sd: NonNegative
    region_sd: NonNegative
    head_size_sd: NonNegative
    age_effect: float
    ad_effect: float
    scz_effect: float
    asd_effect: float
    site_intensity_sd: NonNegative
    site_contrast_sd: NonNegative
    site_bias: NonNegative
    scan_bias: NonNegative
    site_noise_max: NonNegative
    site_fwhm_max_mm: NonNegative
    site_tissue_sd: NonNegative
    transition_mm: NonNegative
    deformation_mm: NonNegative
    fs_thickness_error: NonNegative
    fs_area_error: NonNegative
    fs_volume_error: NonNegative
    fs_site_regional_sd: NonNegative
    focal_sd: NonNegative

    def __post_init__(self) -> None:
        if self.n_external_sites >= self.n_sites:
            raise ValueError(f"n_external_sites = {self.n_external_sites}: expected < n_sites "
                             f"({self.n_sites})")
