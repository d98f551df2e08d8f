"""Report which PyTorch build is installed and whether it will use this machine's GPU.

``requirements.txt`` pins ``torch==2.13.0`` by version only, so the index decides the build: the
public index serves the CUDA build on Linux x86-64 (it runs on CPUs as well, several GB larger),
the CPU index (see the README) the CPU-only wheel. Every combination works, so nothing here fails
the install: a CUDA build on a machine without a GPU, or a CPU build on a machine with one, is a
one-line note. Run as ``python -m anatcl_core.cli.envcheck`` (the Makefile does, after install).
"""

from __future__ import annotations

import sys

CPU_INDEX_HINT = (
    "for the smaller CPU-only wheel: pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
)


def torch_build_note(cuda_version: str | None, gpu_available: bool) -> str | None:
    """Return a one-line note when the torch build and the machine do not match, else ``None``.

    Args:
        cuda_version: ``torch.version.cuda`` of the installed build (``None`` for a CPU build).
        gpu_available: whether a CUDA device is visible.

    Returns:
        A one-line note (never an error: every combination runs), or ``None``.
    """
    if cuda_version is not None and not gpu_available:
        return (f"torch is a CUDA {cuda_version} build and this machine has no GPU: it runs on the CPU "
                f"({CPU_INDEX_HINT})")
    if cuda_version is None and gpu_available:
        return "torch is a CPU-only build although a GPU is visible: training will not use it"
    return None


def describe(version: str, cuda_version: str | None, gpu_available: bool) -> str:
    """One status line: the torch version, its build and the device training will use."""
    build = f"CUDA {cuda_version} build" if cuda_version else "CPU build"
    device = "GPU" if cuda_version and gpu_available else "CPU"
    return f"envcheck: torch {version} ({build}), training runs on the {device}"


def main() -> int:
    """Print the status line and, where build and machine differ, a note; always succeeds."""
    import torch

    cuda_version, gpu = torch.version.cuda, torch.cuda.is_available()
    print(describe(torch.__version__, cuda_version, gpu))
    note = torch_build_note(cuda_version, gpu)
    if note:
        print(f"envcheck: note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
