"""Shared pieces of the benchmark scripts: arguments, the machine, timing, per-case subprocesses.

Every benchmark case runs in a fresh ``python <script> --case '<json>'`` subprocess, so that its
peak resident memory (``ru_maxrss``) belongs to that case alone; the child prints one JSON line
that the parent collects. Timings are medians over repeats after warm-up iterations, with the
device synchronised around each repeat on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
CASE_MARKER = "BENCHMARK-CASE-RESULT "


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark script takes (``--quick``, ``--out``, ``--threads``, device)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny inputs, few repeats: a smoke run")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="JSON result file")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--bf16", action="store_true", help="also/instead run under bfloat16 autocast")
    p.add_argument("--no-channels-last", action="store_true", help="contiguous (NCDHW) memory format")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, in a child
    return p


def machine(device: str = "cpu") -> dict:
    """CPU model, cores, load, torch version and the device a result was measured on."""
    import torch

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def time_repeats(fn: Callable[[], object], warmup: int, repeats: int, device: str = "cpu") -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - tic)
    return seconds


def time_interleaved(first: Callable[[], object], second: Callable[[], object], warmup: int,
                     repeats: int, device: str = "cpu") -> tuple[list[float], list[float]]:
    """Seconds of ``first`` and ``second`` called alternately (after ``warmup`` untimed pairs).

    The order flips every pair (AB BA AB ...) so that neither call always follows the other.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(warmup + repeats):
        pair = list(zip((first, second), times))
        for fn, out in (pair if i % 2 == 0 else pair[::-1]):
            synchronize(device)
            tic = time.perf_counter()
            fn()
            synchronize(device)
            if i >= warmup:
                out.append(time.perf_counter() - tic)
    return times


def summary(seconds: Sequence[float], items: float) -> dict:
    """Median / min seconds per repeat and the throughput ``items`` per second at the median."""
    median = statistics.median(seconds)
    return {"seconds": [round(s, 5) for s in seconds], "median_s": median, "min_s": min(seconds),
            "items_per_repeat": items, "per_s": items / median, "per_s_best": items / min(seconds)}


def peak_memory(device: str = "cpu") -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, the peak allocated GPU memory."""
    out = {"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if device.startswith("cuda"):
        import torch

        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return out


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_case(script: Path, case: dict, timeout_s: float = 3600) -> dict:
    """Run one case of ``script`` in a fresh interpreter; return the JSON it reports."""
    proc = subprocess.run([sys.executable, str(script), "--case", json.dumps(case)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CASE_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case {case.get('name')} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(CASE_MARKER):])


def report_case(result: dict) -> None:
    """Child side of :func:`run_case`: one marked JSON line on stdout."""
    sys.stdout.write(CASE_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def write_json(payload: dict, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
    os.replace(tmp, out)
    return out


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A plain fixed-width table of ``rows`` (dicts) restricted to ``columns``."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def print_machine(info: dict) -> None:
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    print(f"machine: {info['cpu_model']}, {info['cpus_available']}/{info['cpu_count']} cores available, "
          f"load {info['load_average']}, torch {info['torch']} ({info['torch_threads']} threads), "
          f"device {info['device']}{gpu}")


def write_random_openbhb(root: Path, n_subjects: int, voxel_mm: float, seed: int = 0) -> Path:
    """A throw-away OpenBHB-layout cohort of random maps: every subject in the ``train`` split.

    Values follow no anatomy (timings of dense 3D convolutions do not depend on them); the grid,
    file names, dtypes and ``participants.tsv`` are those of :mod:`anatcl_core.data.layout`.
    """
    from anatcl_core.data import layout

    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    shape = layout.grid_shape(voxel_mm)
    for i in range(n_subjects):
        pid = f"{900001 + i}"
        image = np.abs(rng.normal(0.3, 0.2, size=(1, *shape))).astype(np.float32)  # (1, X, Y, Z)
        roi = np.abs(rng.normal(2.0, 0.5, size=(7, 68))).astype(np.float32)  # (7, R)
        for kind, array in ((layout.VBM_KIND, image), (layout.DESIKAN_KIND, roi)):
            path = layout.subject_file(root, "train", pid, kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array)
        rows.append({"participant_id": pid, "age": round(float(rng.uniform(8, 85)), 2),
                     "sex": int(rng.integers(0, 2)), "site": i % 3, "split": "train"})
    import pandas as pd

    pd.DataFrame(rows).to_csv(root / layout.PARTICIPANTS_FILE, sep="\t", index=False)
    return root
