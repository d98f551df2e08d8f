"""Synthetic multi-site brain-MRI benchmark in OpenBHB's layout (placeholder docstring)."""

from anatcl_core.synth.config import SynthConfig

__all__ = ["SynthConfig", "synthesize"]


def __getattr__(name):
    # synthesize pulls in nibabel/scipy: import it lazily so `import anatcl_core.synth.ensure` stays light
    if name == "synthesize":
        from anatcl_core.synth.generate import synthesize

        return synthesize
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
