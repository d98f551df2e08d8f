"""A synthetic multi-site brain-MRI benchmark, written in OpenBHB's own layout.

Real cohorts cannot ship with the compendium, so it generates its own: healthy subjects for
pretraining (OpenBHB per-subject layout), diagnostic studies for linear probing (CAT12-style NIfTI
maps + manifest) and travelling heads (every subject at every site). The question it must be able
to answer is the paper's: does anatomical supervision give better representations than age alone,
where foundation models are claimed to help (unseen sites, few labels)? Every nuisance and effect
below has a target taken from a published multi-site figure; each is measured on the files, with
sklearn estimators and no encoder, by :mod:`.checks` (``python -m anatcl_core.synth.checks``
prints value vs target; ``tests/test_synth_properties.py`` asserts them). The targets were fixed
before any encoder was trained on this data; the generator is never tuned on how methods rank.

**Images: the subject dominates, sites differ modestly** (CAT12-like maps).

* Travelling subjects (12 subjects x 5 centres): the subject explains 70-80 % of grey-matter
  variance, centre + subject + error > 90 % (Suckling et al., Hum Brain Mapp 2012); cross-site
  variability of thickness and subcortical volumes < 10 % (Busa et al., ISMRM 2006). Target: in
  the travelling heads (``n_travelling`` x ``n_sites``) subject >= 0.5, site <= 0.25 of voxel
  variance. Sites share the pipeline's smoothness (extra FWHM 0-``site_fwhm_max_mm``), differ by
  a few per cent in gain, contrast and bias field (``site_intensity_sd``, ``site_contrast_sd``,
  ``site_bias``) and in the segmentation of deep GM and cerebellum (``site_tissue_sd``); every scan
  also has its own bias field (``scan_bias``) and noise.
* The source study of a scan is recognisable at ~72 % across 17 studies (Wachinger et al., Med
  Image Anal 2021); CNN features trained on OpenBHB leave site at 5-12 % over 64 sites (chance
  1.6 %; OpenBHB challenge). Target: a logistic classifier on 64 raw voxel PCs recovers the site
  well above chance (>= 3x chance) and clearly below 1 (<= 0.85), the ~0.72 regime at our 8 sites.
* Brain age on unseen sites: OpenBHB baselines' external/internal MAE 3.5-7.1 / 2.55-2.72 years
  (ratios 1.4-2.7), driven by scanner shift, not by ages outside the training range. Pretraining
  sites recruit over overlapping age ranges (:data:`.cohorts.AGE_PROFILES`; external sites inside
  the training sites' range). Target: ridge on voxel PCs ratio <= 2, on the descriptors <= 1.5.

**Descriptors: individual anatomy dominates.** In the FreeSurfer descriptors, each region and
measure z-scored as the anatomical kernel sees them, the main variation is a few latent regional
patterns independent of age (:data:`.anatomy.PATTERNS`): they explain more descriptor variance
than age, site or sex. Images are rendered from the descriptors (the summed GM of each atlas region
tracks the generated GM volume, median r > 0.9).

**Recruitment like real multi-site studies** (:data:`.cohorts.STUDIES`): an ADNI-like study
(AD, MCI, controls; tasks ``ad``, ``mci``), two schizophrenia studies as in SchizConnect
(``scz_a``, ``scz_b``), an ABIDE-like autism study with the DSM-IV subtypes (``asd`` = any
subtype, ``autistic``, ``asperger``, ``pddnos``, each against the study's controls). Each study has
``n_downstream_sites`` (>= 5) sites whose case shares differ (ABIDE I: 30-70 % per site; here
33-70 %), with cases and controls drawn from the site's own age range and sex ratio (matching
within site); 2,350 subjects at the default ``downstream_scale``. Target: age + sex reach
leave-site-out balanced accuracy <= 0.62.

**Effects: conditions act along anatomical patterns** (a shift of one latent factor, giving the
univariate effect sizes meta-analyses report) **plus a regional signature** (small thickness
changes spread over the regions the literature names), which no healthy pattern follows and which
makes each task solvable from the true descriptors. Targets (Cohen's d, cases - controls):

* AD: hippocampal volume d = -1.5 to -1.6, MCI -0.8 to -0.9 (Shi et al., Hippocampus 2009
  meta-analysis; volume loss 24 % and 12 %); AD cortical signature of thinning (Dickerson et al.,
  Cereb Cortex 2009). Checked: AD hippocampal GM and entorhinal thickness d in [-2, -1], MCI
  hippocampal d in [-1.2, -0.5].
* Schizophrenia: mean cortical thickness d = -0.53, total surface area -0.25, largest in frontal
  and temporal regions (van Erp et al., Biol Psychiatry 2018, ENIGMA). Checked: mean thickness d in
  [-0.8, -0.3], area in [-0.5, -0.1].
* Autism: small effects, thicker frontal and thinner temporal cortex, regional |d| up to ~0.2
  (van Rooij et al., Am J Psychiatry 2018, ENIGMA). Checked: largest regional thickness |d| <= 0.5.
  Deviation, stated: at ENIGMA's effect sizes no descriptor classifier would reach the
  benchmark's requirement below, so the signature is ~2x ENIGMA's (largest regional |d| ~0.4).
* Every task: the true descriptors reach leave-site-out balanced accuracy >= 0.75 (logistic,
  C by inner CV on the training sites; the benchmark's requirement, issue 9), and pooled CV
  costs 0-7 points less (Nunes et al. 2020; Rozycki et al. 2018; Dufumier et al. 2024).

Pieces: :mod:`.base` (real MNI152 GM template and Desikan-Killiany atlas from installed
packages, resampled to CAT12's grid at ``voxel_mm``), :mod:`.anatomy` (descriptor model),
:mod:`.cohorts` (sites, recruitment, clinical scores), :mod:`.render` (images), :mod:`.generate`
(:func:`synthesize`, files), :mod:`.config` (:class:`SynthConfig`), :mod:`.measures` and
:mod:`.checks` (calibration). Sex is coded 1 male, 0 female. Downstream tasks (``dx_<task>``):
``ad``, ``mci`` (sharing the ADNI-like controls), ``scz_a``, ``scz_b``, ``asd``, ``autistic``,
``asperger``, ``pddnos`` (the four sharing the ABIDE-like controls); scores ``score_mmse``,
``score_cdr`` (whole ADNI-like study), ``score_panss`` (schizophrenia cases of both studies),
``score_ads`` (ADOS-like severity 1-10, autism cases of every subtype).

Command line: ``python -m anatcl_core.synth --params params.yaml --out DIR``.
"""

from anatcl_core.synth.config import SynthConfig

__all__ = ["SynthConfig", "synthesize"]


def __getattr__(name):
    # synthesize pulls in nibabel/scipy: import it lazily so `import anatcl_core.synth.ensure` stays light
    if name == "synthesize":
        from anatcl_core.synth.generate import synthesize

        return synthesize
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
