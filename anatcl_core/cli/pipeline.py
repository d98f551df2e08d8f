"""``dvc repro`` with independent stages side by side: what ``make repro`` runs.

    python -m anatcl_core.cli.pipeline [--jobs auto|N] [--threads-per-job auto|N] [--gpus auto|N] [--dry]

DVC runs one stage at a time; the pretrain and evaluate instances of different methods and seeds
(and the reference rows) do not depend on each other, and a small 3D ResNet on a few cores
keeps them busy better side by side with one thread each than one after the other with all of
them (a convolution's threads wait on each other; two processes do not). This runs, as DVC
would, every stage that is not up to date, in the order of the DVC graph, with up to ``jobs``
stages at a time, each one a plain ``dvc repro --single-item <stage>`` (DVC releases its repo lock
while a stage's command runs and takes it again to record the result, so ``dvc.lock``, the cache,
``dvc status`` and every output are exactly what a serial ``dvc repro`` leaves), then one final
``dvc repro`` that must find nothing to do.

Stages are scheduled by resource (:mod:`anatcl_core.cli.schedule`): where GPUs are visible each
pretrain stage gets one of its own (``CUDA_VISIBLE_DEVICES``), N GPUs train N runs at once, and the
CPU stages (cohort, evaluate, reference, report) run beside them on the cores they leave. Each stage
gets its threads through ``$ANATCL_NUM_THREADS`` (what ``num_threads: auto`` means inside it,
:mod:`anatcl_core.cores`) and the BLAS/OpenMP pools. The split depends only on the machine, never
on which stages happen to overlap, so a rerun on the same machine writes the same bytes. Without a
GPU: one job per usable core, fewer when memory would not hold them (``--memory-per-job``, the
default run's largest stage peaks at ~2 GB), the cores shared out. ``--gpus N``: N devices (``0``:
as without GPUs). Counts above the usable cores are lowered to them, with a note. The counts,
``$ANATCL_NUM_THREADS`` and ``--dvc`` are checked before anything is written; a second pipeline in
the same project is refused while the first runs.

Each stage's output goes to ``outputs/logs/<stage>.log``; a line per started and finished stage goes
to the terminal; ``outputs/logs/pipeline.json`` records each stage's start, end, exit status, device
and threads, and the layout (``benchmarks/bench_pipeline.py`` reads it). When a stage fails no new
stage starts, the running ones finish, its log's tail is printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anatcl_core.arguments import count_argument, gigabytes_argument
from anatcl_core.atomic import write_text
from anatcl_core.cli import schedule
from anatcl_core.cli.schedule import Layout
from anatcl_core.cores import usable_cores
from anatcl_core.project import use_site_cache

#: Where each stage's output and the timing record go (not a stage's input or output).
LOG_DIR = Path("outputs/logs")
TIMING_FILE = "pipeline.json"
#: Held (flock) while a pipeline runs in this project: a second one is refused, not interleaved.
LOCK_FILE = "pipeline.lock"
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
    device: str | None = None  # CUDA_VISIBLE_DEVICES of a GPU stage
    threads: int | None = None


@dataclass
class Record:
    jobs: int  # CPU stages at a time
    threads_per_job: int  # threads of each CPU stage
    cores: int
    gpus: list[str] = field(default_factory=list)
    gpu_threads: int = 0
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

    use_site_cache(root)
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


def _log_path(stage: str) -> Path:
    return LOG_DIR / (stage.replace("@", "_").replace("/", "_") + ".log")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(todo: Plan, plan_: Layout, dvc: str = "dvc", poll_s: float = 0.2, echo=print) -> Record:
    """Run ``todo``'s stages as ``plan_`` shares out the machine (module docstring); the timing record.

    On Ctrl-C (or SIGTERM) the running stages are interrupted as DVC expects (SIGINT; each keeps
    its last checkpoint, ``persist`` outputs resume) and waited for, then the record is written.
    """
    record = Record(jobs=plan_.cpu_jobs, threads_per_job=plan_.cpu_threads, cores=plan_.cores,
                    gpus=list(plan_.devices), gpu_threads=plan_.gpu_threads)
    t0 = time.monotonic()
    pending, done, failed = list(todo.order), set(), []
    running: dict[str, tuple[subprocess.Popen, StageRun, object]] = {}
    free = list(plan_.devices)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while not failed:
                busy = sum(entry.device is None for _, entry, _ in running.values())
                chosen = schedule.next_stage(pending, todo.waits_for, done, plan_, free, busy)
                if chosen is None:
                    break
                stage, device = chosen
                pending.remove(stage)
                if device is not None:
                    free.remove(device)
                running[stage] = _start(stage, dvc, plan_, device, round(time.monotonic() - t0, 3))
                record.stages.append(running[stage][1])
            if not running:
                break  # a failure left only stages that wait for it
            time.sleep(poll_s)
            for stage in [s for s, (proc, _, _) in running.items() if proc.poll() is not None]:
                proc, entry, log = running.pop(stage)
                log.close()
                if entry.device is not None:
                    free = sorted([*free, entry.device], key=plan_.devices.index)
                _finish(entry, proc.returncode, round(time.monotonic() - t0, 3))
                (done.add(stage) if proc.returncode == 0 else failed.append(stage))
                _echo_stage(echo, entry, sum(e.end_s is not None for e in record.stages), len(todo.order))
    except KeyboardInterrupt:
        _interrupt(running, t0)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        record.wall_s = round(time.monotonic() - t0, 3)
        write_text(LOG_DIR / TIMING_FILE, json.dumps(asdict(record), indent=2) + "\n")
    if failed:
        skipped = [s for s in todo.order if s not in done and s not in failed]
        raise RuntimeError(f"stage(s) {failed} failed; not run: {len(skipped)} stage(s) "
                           f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})")
    return record


def _start(stage: str, dvc: str, plan_: Layout, device: str | None,
           start_s: float) -> tuple[subprocess.Popen, StageRun, object]:
    threads = plan_.gpu_threads if device is not None else plan_.cpu_threads
    env = schedule.stage_env(threads, device, hide_gpus=bool(plan_.devices))
    log = _log_path(stage).open("w")
    # its own process group: an interruption reaches DVC and the stage's command together (_interrupt);
    # SIGINT at its default even when this runs as a background job (a shell starts those ignoring it)
    proc = subprocess.Popen([dvc, "--wait-for-lock", "repro", "--single-item", stage],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, StageRun(stage, start_s=start_s, device=device, threads=threads), log


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


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", default="auto", type=count_argument("--jobs"),
                        help="CPU stages at a time (auto: one per usable core left, as memory allows)")
    parser.add_argument("--threads-per-job", default="auto", type=count_argument("--threads-per-job"),
                        help="threads of each stage (auto: the usable cores shared out over the jobs)")
    parser.add_argument("--gpus", default="auto", type=count_argument("--gpus", zero=True),
                        help="GPUs to give one stage each (auto: the visible ones; 0: none)")
    parser.add_argument("--memory-per-job", type=gigabytes_argument("--memory-per-job"), default=MEMORY_PER_JOB_GB,
                        help="GB one stage may need, for --jobs auto (default %(default)s)")
    parser.add_argument("--dry", action="store_true", help="print the plan and exit")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable (default: the one on PATH)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    problem = schedule.refusal(args.dvc)
    if problem:
        print(f"pipeline: {problem}", file=sys.stderr)
        return 2
    cores = usable_cores()
    plan_ = schedule.machine_layout(args.jobs, args.threads_per_job, args.gpus, args.memory_per_job, cores)
    if args.dry:
        return _run_locked(args, plan_, cores)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / LOCK_FILE).open("a") as lock:  # before DVC opens the repository: a second run touches nothing
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"pipeline: another pipeline is running in this project ({LOG_DIR / LOCK_FILE} is held); "
                  "wait for it to finish", file=sys.stderr)
            return 2
        return _run_locked(args, plan_, cores)


def _run_locked(args: argparse.Namespace, plan_: Layout, cores: int) -> int:
    """Plan, print, run (unless ``--dry``) and check (the caller holds the lock)."""
    from dvc.exceptions import DvcException

    try:
        todo = plan()
    except DvcException as err:  # no dvc.yaml, a bad dvc.yaml, another dvc holding the repository lock
        reason = " ".join(str(err).split())  # one line: DVC's 'is busy' message spans four
        print(f"pipeline: DVC could not read the pipeline here ({Path.cwd()}): {reason}", file=sys.stderr)
        return 2
    gpu_note = (f"; {len(plan_.devices)} GPU(s) ({','.join(plan_.devices)}): one pretrain stage on each, "
                f"{plan_.gpu_threads} thread(s) each" if plan_.devices else "")
    print(f"pipeline: {len(todo.order)} stage(s) to run, {plan_.cpu_jobs} CPU stage(s) at a time, "
          f"{plan_.cpu_threads} thread(s) each ({cores} usable core(s)){gpu_note}; logs in {LOG_DIR}/", flush=True)
    if args.dry:
        print("\n".join(todo.order))
        return 0
    try:
        record = run(todo, plan_, dvc=args.dvc, echo=lambda s: print(s, flush=True))
    except RuntimeError as err:
        print(f"pipeline: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"pipeline: {len(record.stages)} stage(s) in {record.wall_s:.0f} s; checking with dvc repro", flush=True)
    return subprocess.call([args.dvc, "repro"], env=schedule.stage_env(plan_.cpu_threads))

if __name__ == "__main__":
    sys.exit(main())
