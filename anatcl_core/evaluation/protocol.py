"""The evaluation protocol: params.yaml ``evaluate``, the probes' folds, grids, draws and seeds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from anatcl_core.config import NonNegativeInt, Positive, PositiveInt, Threads, section
from anatcl_core.data.freesurfer import Channels

#: A non-empty grid of positive regularisation values.
Grid = Annotated[tuple[Positive, ...], Field(min_length=1)]


#: A number of cross-validation folds or groups.
Folds = Annotated[int, Field(ge=2)]


@section
class EvaluateConfig:
    """params.yaml ``evaluate`` (field = yaml key = keyword argument of the probes).

    Every field is required: params.yaml is the one home of their values (a missing key is an
    error naming it), and the probes take them as required arguments.

    ``site_held_out_groups``: the pretraining cohort's sites are dealt (sorted, round robin) into
    this many groups; the leave-sites-out brain-age probe holds out one group per fold.
    ``loso_inner_splits``: inner group folds (over training sites) of the leave-one-site-out
    diagnosis probe. ``label_sizes``, ``label_draws``, ``label_splits``: points (labelled training
    subjects; the whole training part is always added), draws and outer folds of the
    label-efficiency curve (:mod:`anatcl_core.evaluation.transfer`), ``label_inner_splits`` the stratified
    folds choosing C on each subsample (2: a 25-subject subsample has ~8-12 cases). ``descriptor_channels``: FreeSurfer
    measures whose top ``representation_components`` principal components the representation
    probe reads out (``representation_splits``-fold CV, :mod:`anatcl_core.evaluation.representation`).
    """

    batch_size: PositiveInt
    c_grid: Grid
    alpha_grid: Grid
    site_c_grid: Grid
    n_splits: Folds
    n_repeats: PositiveInt
    inner_splits: Folds
    brain_age_cv_splits: Folds
    n_bootstrap: PositiveInt
    seed: NonNegativeInt
    num_threads: Threads
    site_held_out_groups: Folds
    loso_inner_splits: Folds
    label_sizes: Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
    label_draws: PositiveInt
    label_splits: Folds
    label_inner_splits: Folds
    descriptor_channels: Channels
    representation_components: PositiveInt
    representation_splits: Folds
    #: Probe protocols run on every feature set: ``linear`` (always; the paper's) and optionally
    #: ``brainfmbench`` (their random forest, :mod:`anatcl_core.evaluation.brainfmbench`).
    probes: Annotated[tuple[Literal["linear", "brainfmbench"], ...], Field(min_length=1)]

    def __post_init__(self) -> None:
        if "linear" not in self.probes:
            raise ValueError(f"evaluate.probes {list(self.probes)}: must hold 'linear' (every table reads it)")
