"""Check that the installed PyTorch suits this machine.

The project pins the CPU wheel of torch. A CUDA build on a machine without a GPU is several GB of
dead weight and the usual sign that an unpinned requirement pulled torch from the index again, so
it is an error here. Run as ``python -m anatcl_core.envcheck`` (the Makefile does, after install).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def torch_build_problem(cuda_version: str | None, gpu_available: bool) -> str | None:
    """Return why a torch build does not suit this machine, or ``None`` if it does.

    Args:
        cuda_version: ``torch.version.cuda`` of the installed build (``None`` for a CPU build).
        gpu_available: whether a CUDA device is visible.

    Returns:
        A one-line explanation, or ``None``.
    """
    if cuda_version is not None and not gpu_available:
        return (
            f"torch is a CUDA {cuda_version} build but this machine has no GPU: reinstall the CPU wheel "
            "with `pip install torch==2.13.0` (requirements.txt pins it; something unpinned pulled CUDA)"
        )
    return None


def main() -> int:
    import torch

    problem = torch_build_problem(torch.version.cuda, torch.cuda.is_available())
    if problem:
        print(f"envcheck: {problem}", file=sys.stderr)
        return 1
    print(f"envcheck: torch {torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU build'}) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
