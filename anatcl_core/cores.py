"""How many threads a stage uses: ``num_threads: auto`` follows the machine.

``auto`` resolves, in this order, to

1. ``$ANATCL_NUM_THREADS``, which the parallel pipeline (:mod:`anatcl_core.cli.pipeline`) sets for each
   stage it runs side by side with others, so that the stages together use the cores once;
2. the cores this process may use: its CPU affinity mask (``taskset``, a batch scheduler's
   allocation) on Linux, else every logical CPU, and no more than a cgroup v2 CPU quota allows
   (a container started with ``--cpus 4`` sees the host's cores in its mask but may use four).

No count means more than the usable cores: a larger ``$ANATCL_NUM_THREADS`` or integer
``num_threads`` is lowered to them with a warning (1,024 threads on 2 cores made a stage 17x slower:
2,048 OS threads waiting on each other). The bytes a lowered count writes are those of the usable
cores' count, so a run that must match another machine's bytes asks for no more threads than it has
(``dvclive/metrics.json`` records the ``threads`` used). A count of more than 18 digits is no count
and is refused, not lowered. :func:`check_environment` refuses a malformed variable before any work
starts.

The thread count changes float rounding, nothing else. On one machine the same
count writes the same checkpoint bytes (DVC then skips everything downstream of an unchanged run).
One forward pass agrees across counts to ~1e-6 relative (tests/test_cores.py), but training
amplifies rounding as a change of seed would: the 21 default runs trained with 1 instead of 2
threads moved each run's balanced accuracy by 0.006 (median over runs and the stratified and
leave-site-out means; at most 0.031) and the seed means by at most 0.012, within the seed-to-seed
SD (up to 0.013). So ``make repro`` on 2 cores (two stages of one thread) and a plain ``dvc repro``
(one stage of two threads) give different checkpoints; each is reproducible, and a run's
``dvclive/metrics.json`` records its ``threads``.

Everything after training does not depend on the thread count: features are computed one
intra-op thread per batch (:mod:`anatcl_core.evaluation.features`) and the probes, PCAs and report
statistics under :func:`one_blas_thread`, so ``probes.json`` and the report are the same bytes
whatever the stage's ``num_threads`` (tests/test_cores.py, tests/test_pipeline.py).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from pathlib import Path

from threadpoolctl import threadpool_limits

#: Set by the parallel pipeline for each stage: the threads ``auto`` means there.
THREADS_ENV = "ANATCL_NUM_THREADS"
#: cgroup v2 CPU quota of this process's group (``max 100000`` = no quota).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
#: The largest thread or job count anything accepts (18 digits): a larger number is a typo or an
#: attack, not a count (``torch.set_num_threads`` overflows past 2**31 - 1), so it is refused, not lowered.
MAX_COUNT = 10**18 - 1
#: Thread and job counts as the environment and the commands accept them: ASCII digits, at most 18
#: (``int`` would also take ``"²"``-like digits, signs, spaces and 5,000-digit numbers).
_COUNT = re.compile(r"[0-9]{1,18}")
#: Characters of a refused value echoed in its message (a 5,000-digit value is not printed whole).
_ECHO = 40

logger = logging.getLogger(__name__)


def parse_count(text: str) -> int | None:
    """``text`` as a positive count, or None when it is not one (``"0"``, ``"abc"``, ``"²"``, ``"1.5"``)."""
    if not isinstance(text, str) or not _COUNT.fullmatch(text) or int(text) < 1:
        return None
    return int(text)


def _cgroup_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Cores allowed by a cgroup v2 quota (rounded up), or None when there is none or no file."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use (affinity mask, capped by a cgroup v2 quota); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity mask
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_cpu_max)
    return max(1, min(cores, quota) if quota else cores)


def check_environment(environ: dict[str, str] | None = None) -> None:
    """Refuse a malformed ``$ANATCL_NUM_THREADS`` (one line), before a stage has done anything.

    Raises:
        ValueError: ``$ANATCL_NUM_THREADS = 'abc': expected a positive integer ...``.
    """
    value = (os.environ if environ is None else environ).get(THREADS_ENV)
    if value is not None and parse_count(value) is None:
        shown = value if len(value) <= _ECHO else value[:_ECHO] + "..."
        raise ValueError(f"${THREADS_ENV} = {shown!r}: expected a positive integer of at most 18 digits "
                         "(threads of one stage), or unset it (auto then means the usable cores)")


def _capped(count: int, cores: int, what: str) -> int:
    """``count`` no larger than ``cores``, with one warning naming ``what`` when it is lowered."""
    if count > cores:
        logger.warning("%s lowered to %d: the usable cores (more threads than cores wait on each other)",
                       what, cores)
        return cores
    return count


def resolve_threads(value: int | str) -> int:
    """``num_threads`` of a params section as a number of threads, at most the usable cores (module docstring).

    Raises:
        ValueError: ``value`` is neither ``auto`` nor a count of at most 18 digits, or ``$ANATCL_NUM_THREADS``
            is set but is not one.
    """
    cores = usable_cores()
    if value == "auto":
        check_environment()
        env = os.environ.get(THREADS_ENV)
        return cores if env is None else _capped(int(env), cores, f"${THREADS_ENV} = {env}")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        # str() of a 5,000-digit int itself raises (Python's 4,300-digit limit): such a value is not printed
        shown = "more than 18 digits" if isinstance(value, int) and abs(value) > MAX_COUNT else repr(value)[:_ECHO]
        raise ValueError(f"num_threads = {shown}: expected 'auto' or a positive integer of at most 18 digits")
    return _capped(value, cores, f"num_threads: {value}")


def one_blas_thread(function):
    """Decorate ``function`` to run with BLAS and OpenMP at one thread, whatever the stage's threads.

    The probes, the reference rows' PCA and the report's statistics work on at most a few thousand
    rows, where a threaded BLAS buys little, but splits its reductions by the thread count: on a
    2-core AMD EPYC host 1 and 2 threads gave ``probes.json`` values differing in the 15th digit
    (issue 24). At one thread (threadpoolctl, which scikit-learn itself uses) they are the same
    bytes from ``make repro`` (one thread per stage), a plain ``dvc repro`` and a notebook opened in
    Jupyter, on any core count; ``benchmarks/bench_probes.py`` measures the cost. The limit is taken
    at call time, so libraries loaded after import are limited too.
    """
    @functools.wraps(function)
    def limited(*args, **kwargs):
        with threadpool_limits(1):
            return function(*args, **kwargs)
    return limited
