"""``dvc repro`` with independent stages side by side: what ``make repro`` runs.

    python -m anatcl_core.cli.pipeline [--jobs auto|N] [--threads-per-job auto|N] [--dry]

DVC runs one stage at a time; the pretrain and evaluate instances of different methods and seeds
(and the reference rows) do not depend on each other, and a small 3D ResNet on a few cores
keeps them busy better side by side with one thread each than one after the other with all of
them (a convolution's threads wait on each other; two processes do not). This runs, as DVC
would, every stage that is not up to date, in the order of the DVC graph, with up to ``jobs``
stages at a time, each one a plain ``dvc repro --single-item <stage>`` (DVC releases its repo lock
while a stage's command runs and takes it again to record the result, so ``dvc.lock``, the cache,
``dvc status`` and every output are exactly what a serial ``dvc repro`` leaves), then one final
``dvc repro`` that must find nothing to do.

Each stage gets ``threads-per-job`` threads: ``$ANATCL_NUM_THREADS`` (what ``num_threads: auto``
means inside it, :mod:`anatcl_core.cores`) and the BLAS/OpenMP pools. The split depends only on
the machine, never on which stages happen to overlap, so a rerun on the same machine writes the
same bytes. Defaults: one job per usable core, fewer when memory would not hold them
(``--memory-per-job``, the default run's largest stage peaks at ~2 GB), the cores shared out; one
job when a GPU is visible (the stages would share it).

Each stage's output goes to ``outputs/logs/<stage>.log``; a line per started and finished stage
goes to the terminal; ``outputs/logs/pipeline.json`` records the start, end and exit status of each
stage and the jobs/threads used (``benchmarks/bench_pipeline.py`` reads it). When a stage fails no
new stage starts, the running ones finish, its log's tail is printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anatcl_core.cores import THREADS_ENV, usable_cores

#: Where each stage's output and the timing record go (not a stage's input or output).
LOG_DIR = Path("outputs/logs")
TIMING_FILE = "pipeline.json"
#: BLAS / OpenMP pools of a stage's process, sized like its torch threads.
POOL_ENVS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Default memory budget of one stage (the default run's largest stage peaks at ~2 GB).
MEMORY_PER_JOB_GB = 2.5


@dataclass
class Plan:
    """Stages to run (graph order) and what each waits for (among the stages to run)."""

    order: list[str]
    waits_for: dict[str, set[str]]


@dataclass
class StageRun:
    stage: str
    start_s: float
    end_s: float | None = None
    returncode: int | None = None
    ran: bool | None = None  # False: DVC found it up to date when its turn came


@dataclass
class Record:
    jobs: int
    threads_per_job: int
    cores: int
    stages: list[StageRun] = field(default_factory=list)
    wall_s: float | None = None


def plan(root: str | Path = ".") -> Plan:
    """Every pipeline stage that is out of date, and every stage downstream of one, in DVC's order.

    A downstream stage is planned even if it is up to date now: its inputs are about to change.
    Its own ``dvc repro --single-item`` skips it if they come out the same.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edge: stage -> a stage whose output it reads
        stages = [s for s in repo.index.stages if isinstance(s, PipelineStage)]
        stale = set(repo.status())  # names of changed stages (and .dvc files)
        topo = list(reversed(list(nx.topological_sort(graph))))  # producers first
        name = {s: s.addressing for s in stages}
        todo = set()
        for stage in stages:
            if name[stage] in stale:
                todo.add(stage)
                todo.update(a for a in nx.ancestors(graph, stage) if isinstance(a, PipelineStage))
        order = [name[s] for s in topo if s in todo]
        waits = {name[s]: {name[d] for d in nx.descendants(graph, s) if d in todo} for s in todo}
    return Plan(order, waits)


def visible_gpus() -> int:
    """CUDA devices this process sees (0 with a CPU-only torch build or none present)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs(cores: int, memory_per_job_gb: float = MEMORY_PER_JOB_GB, gpus: int = 0) -> int:
    """One job per core, no more than the machine's memory holds at ``memory_per_job_gb`` each.

    With a GPU visible, one: every pretrain and evaluate stage would put its model on the same device
    (``--jobs N`` overrides it).
    """
    if gpus:
        return 1
    try:
        total_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, int(total_gb // memory_per_job_gb)))


def stage_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one stage: its thread count for ``auto`` and for the BLAS/OpenMP pools."""
    env = dict(os.environ if base is None else base)
    env[THREADS_ENV] = str(threads)
    for name in POOL_ENVS:
        env[name] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # anatcl_core.cli.runner says why
    return env


def _log_path(stage: str) -> Path:
    return LOG_DIR / (stage.replace("@", "_").replace("/", "_") + ".log")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(todo: Plan, jobs: int, threads: int, cores: int, dvc: str = "dvc", poll_s: float = 0.2,
        echo=print) -> Record:
    """Run ``todo``'s stages, up to ``jobs`` at a time (module docstring); the timing record.

    On Ctrl-C (or SIGTERM) the running stages are interrupted as DVC expects (SIGINT; each keeps
    its last checkpoint, ``persist`` outputs resume) and waited for, then the record is written.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    record = Record(jobs=jobs, threads_per_job=threads, cores=cores)
    env = stage_env(threads)
    t0 = time.monotonic()
    pending, done, failed = list(todo.order), set(), []
    running: dict[str, tuple[subprocess.Popen, StageRun, object]] = {}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while not failed and len(running) < jobs:
                ready = next((s for s in pending if todo.waits_for[s] <= done), None)
                if ready is None:
                    break
                pending.remove(ready)
                running[ready] = _start(ready, dvc, env, round(time.monotonic() - t0, 3))
                record.stages.append(running[ready][1])
            if not running:
                break  # a failure left only stages that wait for it
            time.sleep(poll_s)
            for stage in [s for s, (proc, _, _) in running.items() if proc.poll() is not None]:
                proc, entry, log = running.pop(stage)
                log.close()
                _finish(entry, proc.returncode, round(time.monotonic() - t0, 3))
                (done.add(stage) if proc.returncode == 0 else failed.append(stage))
                _echo_stage(echo, entry, sum(e.end_s is not None for e in record.stages), len(todo.order))
    except KeyboardInterrupt:
        _interrupt(running, t0)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        record.wall_s = round(time.monotonic() - t0, 3)
        (LOG_DIR / TIMING_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")
    if failed:
        skipped = [s for s in todo.order if s not in done and s not in failed]
        raise RuntimeError(f"stage(s) {failed} failed; not run: {len(skipped)} stage(s) "
                           f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})")
    return record


def _start(stage: str, dvc: str, env: dict, start_s: float) -> tuple[subprocess.Popen, StageRun, object]:
    log = _log_path(stage).open("w")
    # its own process group: an interruption reaches DVC and the stage's command together (_interrupt);
    # SIGINT at its default even when this runs as a background job (a shell starts those ignoring it)
    proc = subprocess.Popen([dvc, "--wait-for-lock", "repro", "--single-item", stage],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, StageRun(stage, start_s=start_s), log


def _finish(entry: StageRun, returncode: int, end_s: float) -> None:
    entry.end_s, entry.returncode = end_s, returncode
    entry.ran = "Running stage" in _log_path(entry.stage).read_text(errors="replace")


def _echo_stage(echo, entry: StageRun, n_done: int, total: int) -> None:
    took = f"{entry.end_s - entry.start_s:.1f} s, {entry.end_s:.0f} s elapsed"
    if entry.returncode == 0:
        echo(f"[{n_done:>{len(str(total))}}/{total}] {'done' if entry.ran else 'up to date':10s} {entry.stage} ({took})")
    else:
        echo(f"[{n_done}/{total}] FAILED     {entry.stage} (exit {entry.returncode}, {took}); "
             f"its log ({_log_path(entry.stage)}) ends:\n{_tail(_log_path(entry.stage))}")


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupt(running: dict, t0: float, grace_s: float = 60.0) -> None:
    """SIGINT to every running stage's group (as Ctrl-C gives a serial dvc repro), wait, kill what is left."""
    for proc, _, _ in running.values():
        _signal_group(proc, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc, entry, log in running.values():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        log.close()
        _finish(entry, proc.returncode, round(time.monotonic() - t0, 3))
    print(f"pipeline: interrupted; {len(running)} running stage(s) stopped: {sorted(running)}", file=sys.stderr)


def _count(text: str, what: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{what} must be 'auto' or a positive integer, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", default="auto", type=lambda t: _count(t, "--jobs"),
                        help="stages at a time (auto: one per usable core, as memory allows)")
    parser.add_argument("--threads-per-job", default="auto", type=lambda t: _count(t, "--threads-per-job"),
                        help="threads of each stage (auto: the usable cores shared out over the jobs)")
    parser.add_argument("--memory-per-job", type=float, default=MEMORY_PER_JOB_GB,
                        help="GB one stage may need, for --jobs auto (default %(default)s)")
    parser.add_argument("--dry", action="store_true", help="print the plan and exit")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable (default: the one on PATH)")
    args = parser.parse_args(argv)
    cores = usable_cores()
    gpus = visible_gpus() if args.jobs == "auto" else 0
    jobs = default_jobs(cores, args.memory_per_job, gpus) if args.jobs == "auto" else args.jobs
    if gpus:
        print(f"pipeline: {gpus} GPU(s) visible: one stage at a time, each using the GPU (--jobs N to change)")
    threads = max(1, cores // jobs) if args.threads_per_job == "auto" else args.threads_per_job
    from dvc.exceptions import DvcException

    try:
        todo = plan()
    except DvcException as err:  # no dvc.yaml, a bad dvc.yaml, another dvc holding the repository lock
        print(f"pipeline: DVC could not read the pipeline here ({Path.cwd()}): {err}", file=sys.stderr)
        return 2
    print(f"pipeline: {len(todo.order)} stage(s) to run, {jobs} at a time, {threads} thread(s) each "
          f"({cores} usable core(s)); logs in {LOG_DIR}/", flush=True)
    if args.dry:
        print("\n".join(todo.order))
        return 0
    try:
        record = run(todo, jobs, threads, cores, dvc=args.dvc, echo=lambda s: print(s, flush=True))
    except RuntimeError as err:
        print(f"pipeline: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"pipeline: {len(record.stages)} stage(s) in {record.wall_s:.0f} s; checking with dvc repro", flush=True)
    return subprocess.call([args.dvc, "repro"], env=stage_env(threads))


if __name__ == "__main__":
    sys.exit(main())
