"""A synthetic multi-site brain-MRI benchmark, written in OpenBHB's own layout.

Real cohorts cannot ship with the compendium, so it generates its own: healthy subjects for
pretraining (OpenBHB per-subject layout), diagnostic cohorts for linear probing (CAT12-style
NIfTI maps + manifest) and travelling heads (every subject at every site). The question it must be
able to answer is the paper's: does anatomical supervision give better representations than age
alone? A first prototype could not answer it: its conditions lay in directions healthy anatomy
never varies in, so no representation of anatomical variation could carry them. This one is built
from stated principles, each checked without training an encoder (:mod:`.checks`, tests):

1. **Images: nuisance dominates.** As in real multi-site MRI, where scanner identity explains a
   large share of what self-supervised embeddings encode, the largest source of voxel variance is
   the site (gain, contrast, deep-GM and cerebellar segmentation gain, bias field, noise,
   smoothness), then age (global atrophy, ventricle growth) and head size. Check: site explains
   more voxel variance than age, sex or the latent anatomy (default profile: 0.48 vs 0.16, 0.02,
   0.29), and best explains the first voxel PC; site is predictable from a few PCs.
2. **Descriptors: individual anatomy dominates.** In the FreeSurfer descriptors, each region and
   measure z-scored as the anatomical kernel sees them, the main variation is a few latent regional
   patterns independent of age (:data:`.anatomy.PATTERNS`), while subtle in raw voxel terms
   (~12 % of a region's volume per SD, against whole-map site effects). Check: the latent factors
   explain more descriptor variance than age, site or sex (default: 0.44 vs 0.23, 0.20, 0.05).
3. **Conditions act along those patterns**, plus their own regional specifics, never along
   directions healthy subjects do not vary in: AD/MCI along the medial-temporal pattern (then
   widespread thinning and ventricle growth with severity), schizophrenia along the
   fronto-temporal thickness pattern, autism along the association-cortex area pattern (young
   subjects). Check, per task: the top <= 8 PCs of the *healthy* descriptors reach balanced
   accuracy >= 0.75, the true descriptors > 0.8, age and sex < 0.6 (cases and controls matched
   on site, sex and age within ~2 years).
4. **Images are rendered from the descriptors**, so the information is in the voxels: the summed
   GM of each atlas region tracks the generated GM volume (r > 0.9).
5. **Tasks are large enough to separate methods**: 600 subjects per task in the default profile.

These were fixed before any method was compared; the generator is never tuned on how methods rank.

Pieces: :mod:`.base` (real MNI152 GM template and Desikan-Killiany atlas from installed
packages, resampled to CAT12's grid at ``voxel_mm``), :mod:`.anatomy` (descriptor model),
:mod:`.cohorts` (sites, recruitment, matching, clinical scores), :mod:`.render` (images),
:mod:`.generate` (:func:`synthesize`, files), :mod:`.config` (:class:`SynthConfig`). Sex is coded
1 male, 0 female. Downstream tasks: ``dx_ad``, ``dx_mci`` (sharing AD's controls), ``dx_scz``,
``dx_asd``; scores ``score_mmse``, ``score_cdr`` (AD study), ``score_panss`` (SCZ cases),
``score_ads`` (ADOS-like severity 1-10, ASD cases).

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
