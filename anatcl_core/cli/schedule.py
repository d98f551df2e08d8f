"""What each stage of the parallel pipeline needs, what the machine has, and who gets what.

A stage whose name (before ``@``) is in :data:`GPU_STAGES` trains a network: where GPUs are visible it
gets one of its own (``CUDA_VISIBLE_DEVICES`` set to that device alone, so it sees it as ``cuda:0``)
and ``gpu_threads`` CPU threads to feed it; N GPUs train N runs at once. Every other stage (cohort,
evaluate, reference, report: scikit-learn probes and table work) is a CPU stage: it runs beside the
GPU stages on the cores they leave, with the GPUs hidden from it (``CUDA_VISIBLE_DEVICES=""``), so
its numbers are those of a CPU-only machine given the same checkpoints.

Without a GPU nothing changes from the CPU scheduler: one job per usable core (fewer when memory
would not hold them), the cores shared out, no device variable set. Every count depends only on the
machine (cores, memory, GPUs), never on which stages happen to overlap, so a rerun on the same
machine writes the same bytes.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anatcl_core.cores import THREADS_ENV, check_environment

#: Stages (the name before ``@``) that run on a GPU when one is visible (the trainer's device: auto).
GPU_STAGES = ("pretrain",)
#: BLAS / OpenMP pools of a stage's process, sized like its torch threads.
POOL_ENVS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def wants_gpu(stage: str) -> bool:
    """Whether ``stage`` (``pretrain@anatcl_global-0``) trains a network, so runs on a GPU where one is."""
    return stage.split("@", 1)[0] in GPU_STAGES


def memory_gb() -> float | None:
    """Physical memory of the machine in GB, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def default_jobs(cores: int, memory_per_job_gb: float, total_gb: float | None = None) -> int:
    """One job per core, no more than ``total_gb`` (the machine's memory) holds at ``memory_per_job_gb`` each."""
    total_gb = memory_gb() if total_gb is None else total_gb
    if total_gb is None:
        return cores
    return max(1, min(cores, int(total_gb // memory_per_job_gb)))


def device_names(count: int, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each of ``count`` visible GPUs.

    Where this process was itself given a device list (``CUDA_VISIBLE_DEVICES=2,5``), its entries, so a
    stage gets a GPU this process may use; else ``"0"`` .. ``"count-1"``.
    """
    given = (os.environ if environ is None else environ).get(DEVICES_ENV, "")
    listed = [d.strip() for d in given.split(",") if d.strip()]
    return tuple(listed[:count]) if len(listed) >= count else tuple(str(i) for i in range(count))


@dataclass(frozen=True)
class Layout:
    """How the machine is shared out among the stages.

    Attributes:
        cores: usable cores. devices: one entry per GPU, the ``CUDA_VISIBLE_DEVICES`` a GPU stage gets.
        cpu_jobs: CPU stages at a time (every stage when there is no device). cpu_threads: threads of each.
        gpu_threads: threads of each GPU stage (unused without a device).
    """

    cores: int
    devices: tuple[str, ...]
    cpu_jobs: int
    cpu_threads: int
    gpu_threads: int

    def needs_gpu(self, stage: str) -> bool:
        return bool(self.devices) and wants_gpu(stage)


def layout(cores: int, devices: Sequence[str], memory_per_job_gb: float, jobs: int | None = None,
           threads: int | None = None, total_gb: float | None = None) -> Layout:
    """The layout for this machine (module docstring); ``jobs``/``threads`` None: chosen from it.

    With G GPUs, each GPU stage gets ``cores // (2 G)`` threads (at least one): half the cores feed
    the GPUs, the other half (at least one core) run the CPU stages, as many at a time as cores and
    memory allow beside the G GPU stages.
    """
    devices = tuple(devices)
    gpu_threads = threads or max(1, cores // (2 * len(devices))) if devices else 0
    left = max(1, cores - len(devices) * gpu_threads) if devices else cores
    if jobs is None:
        total_gb = memory_gb() if total_gb is None else total_gb
        room = None if total_gb is None else max(1.0, total_gb - len(devices) * memory_per_job_gb)
        jobs = default_jobs(left, memory_per_job_gb, room)
    return Layout(cores, devices, jobs, threads or max(1, left // jobs), gpu_threads)


def stage_env(threads: int, device: str | None = None, hide_gpus: bool = False,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one stage: its threads for ``auto`` and the BLAS/OpenMP pools, its device.

    Args:
        threads: what ``num_threads: auto`` means in the stage.
        device: the ``CUDA_VISIBLE_DEVICES`` of a GPU stage. hide_gpus: a CPU stage beside GPU stages.
        base: the environment to start from (default: this process's).
    """
    env = dict(os.environ if base is None else base)
    env[THREADS_ENV] = str(threads)
    for name in POOL_ENVS:
        env[name] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # anatcl_core.cli.runner says why
    if device is not None:
        env[DEVICES_ENV] = device
    elif hide_gpus:
        env[DEVICES_ENV] = ""
    return env


def next_stage(pending: Sequence[str], waits_for: Mapping[str, set[str]], done: set[str], plan: Layout,
               free_devices: Sequence[str], cpu_busy: int) -> tuple[str, str | None] | None:
    """The first stage in graph order whose inputs are done and whose resource is free: (stage, device).

    A GPU stage waiting for a device does not hold back a CPU stage behind it, nor the reverse.
    """
    for stage in pending:
        if not waits_for[stage] <= done:
            continue
        if plan.needs_gpu(stage):
            if free_devices:
                return stage, free_devices[0]
        elif cpu_busy < plan.cpu_jobs:
            return stage, None
    return None


def visible_gpus() -> int:
    """CUDA devices this process sees (0 with a CPU-only torch build or none present)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _lowered(value: int | str, ceiling: int, option: str) -> int | None:
    """``value`` (``auto``: None) no larger than ``ceiling``, with a note on stderr when it is lowered."""
    if value == "auto":
        return None
    if value > ceiling:
        print(f"pipeline: {option} {value} lowered to {ceiling} (the usable cores)", file=sys.stderr)
        return ceiling
    return value


def machine_layout(jobs: int | str, threads: int | str, gpus: int | str, memory_per_job_gb: float,
                   cores: int) -> Layout:
    """The pipeline's options (``auto`` or a count) on this machine, jobs and threads capped at its cores.

    More GPUs than are visible may be asked for: a fake count is how the scheduler is tested.
    """
    devices = device_names(visible_gpus() if gpus == "auto" else gpus)
    return layout(cores, devices, memory_per_job_gb, jobs=_lowered(jobs, cores, "--jobs"),
                  threads=_lowered(threads, cores, "--threads-per-job"))


def refusal(dvc: str) -> str | None:
    """Why the pipeline cannot start, in one line, before anything is read or written; or None."""
    try:
        check_environment()
    except ValueError as err:
        return f"environment: {err}"
    if shutil.which(dvc) is None:
        return f"--dvc {dvc!r}: no such executable (expected dvc, as installed in the project's .venv)"
    return None
