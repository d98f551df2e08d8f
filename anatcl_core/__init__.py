"""AnatCL compendium core library, one package per concern, in the order they may import each other.

============================  ======================================================================
``anatcl_core`` (top level)   foundations every package may use: ``config`` (params sections),
                              ``atomic`` (the one atomic writer), ``project`` (paths, a stage's
                              library closure), ``cores`` (threads), ``live`` (dvclive logging),
                              ``arguments`` (the commands' argument rules)
``anatcl_core.data``          readers (OpenBHB, CAT12 manifests), FreeSurfer tables, validation, the
                              cohort stage's arrays and QC
``anatcl_core.synth``         the embedded synthetic cohort, written in OpenBHB's layout (uses data)
``anatcl_core.contrastive``   kernels, weighted InfoNCE / AnatCL losses, the pretraining objectives
``anatcl_core.model``         the 3D ResNet, upstream's ``AnatCL`` class, checkpoints and weights
``anatcl_core.train``         pretraining of one (method, seed), single process or ``torchrun``
``anatcl_core.export``        a trained encoder as a BrainFMBench submission, and its checker (uses model)
``anatcl_core.evaluation``    frozen features, linear probes, metrics, transfer and reliability
``anatcl_core.report``        the paper's tables, figures and ``report.html``; ``explore`` tables
``anatcl_core.cli``           the ``anatcl`` command, the stage runner, the parallel pipeline
============================  ======================================================================

A package imports only the foundations and the packages listed above it (``synth`` and ``data``
import no model code); ``tests/test_architecture.py`` checks it.

The public API is importable from the top (:data:`PUBLIC`): ``from anatcl_core import AnatCL``.
Each name is imported on first use, so ``import anatcl_core`` stays light and a stage that does not
use the model does not depend on it (:func:`anatcl_core.project.library_closure` reads this table).
"""

__version__ = "0.1.0"

#: Public name -> the module defining it (a plain literal: library_closure reads it without importing).
PUBLIC = {
    "AnatCL": "anatcl_core.model.upstream",
    "build_model": "anatcl_core.model.network",
    "AnatCLLoss": "anatcl_core.contrastive.losses",
    "WeightedInfoNCE": "anatcl_core.contrastive.losses",
    "weighted_infonce": "anatcl_core.contrastive.losses",
    "age_kernel": "anatcl_core.contrastive.kernels",
    "anatomical_kernel": "anatcl_core.contrastive.kernels",
    "DescriptorNormalizer": "anatcl_core.contrastive.kernels",
    "OpenBHB": "anatcl_core.data.openbhb",
    "ManifestDataset": "anatcl_core.data.manifest",
    "read_manifest": "anatcl_core.data.manifest",
}
__all__ = ["__version__", "PUBLIC", *PUBLIC]


def __getattr__(name: str):
    if name in PUBLIC:
        import importlib

        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'anatcl_core' has no attribute {name!r}")
