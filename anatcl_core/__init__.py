"""AnatCL compendium core library: models, losses and kernels, data readers, synthetic cohort.

``anatcl_core.AnatCL`` is the drop-in for upstream's model class (see :mod:`anatcl_core.models`);
it is imported on first use so that ``import anatcl_core`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["AnatCL", "__version__"]


def __getattr__(name: str):
    if name == "AnatCL":
        from anatcl_core.models import AnatCL

        return AnatCL
    raise AttributeError(f"module 'anatcl_core' has no attribute {name!r}")
