"""The whole default run: where its wall time goes, and how close a training step gets to the CPU's peak.

    python benchmarks/bench_pipeline.py [--outputs outputs] [--quick] [--out FILE] [--steps N]

Reads what a finished ``make repro`` (:mod:`anatcl_core.cli.pipeline`) left in ``outputs/``:

- ``outputs/logs/pipeline.json``: start and end of every stage, jobs side by side, threads each;
- ``outputs/notebooks/**.ipynb``: papermill's execution time of each stage's notebook;
- ``outputs/pretrain/*/dvclive/metrics.json``: each run's time in its epoch loop (``train_seconds``)
  and its number of epochs.

and prints, per kind of stage (cohort, pretrain, evaluate, reference, report): stages, summed stage
wall time, the part inside the notebook, and the overhead around it (DVC's checks and hashing,
the papermill kernel's start and imports). For pretraining it splits the notebook time into the
epoch loop and the rest (data staging, model build, checkpoints), and compares the epoch loop with
the pure compute of its steps: one default-profile optimiser step (``params.yaml`` ``pretrain``,
``anatcl_global``: forward + loss + backward + Adam on a batch already in memory, channels-last,
the run's threads per job) timed here in a fresh process, times the steps each run took.

The step's floating-point work comes from ``torch.utils.flop_counter`` (convolutions and matrix
products, forward and backward; elementwise work is not counted), its rate is compared with the
machine's fp32 peak: cores x clock x FLOP per cycle (32 with AVX2 + FMA: two 8-wide FMA units;
64 with AVX-512; 16 without FMA), read from ``/proc/cpuinfo`` (the clock is the base one the
model name states, else the current one). ``--quick`` skips the step timing (a smoke run).
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "pipeline"


def stage_kind(stage: str) -> str:
    return stage.split("@", 1)[0]


def notebook_seconds(outputs: Path) -> dict[str, float]:
    """Stage name -> papermill's execution time of its executed notebook."""
    out = {}
    for path in (outputs / "notebooks").rglob("*.ipynb"):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        rel = path.relative_to(outputs / "notebooks").with_suffix("")
        if meta.get("duration") is None:
            continue
        if len(rel.parts) == 1:  # cohort, report
            out[rel.name] = float(meta["duration"])
        else:  # pretrain/<method>-s<seed> -> pretrain@<method>-<seed>; reference/<name> -> reference@<name>
            name = re.sub(r"-s(\d+)$", r"-\1", rel.name)
            out[f"{rel.parts[0]}@{name}"] = float(meta["duration"])
    return out


def training_seconds(outputs: Path) -> dict[str, dict]:
    """Stage name -> ``train_seconds`` and ``epochs`` of its run (dvclive summary)."""
    out = {}
    for path in (outputs / "pretrain").glob("*/dvclive/metrics.json"):
        metrics = json.loads(path.read_text())
        name = re.sub(r"-s(\d+)$", r"-\1", path.parent.parent.name)
        out[f"pretrain@{name}"] = {"train_seconds": float(metrics.get("train_seconds") or 0.0),
                                   "epochs": int(metrics.get("timed_epochs") or 0)}
    return out


def peak_gflops(cores: int) -> dict:
    """fp32 peak of ``cores`` cores from /proc/cpuinfo (module docstring); empty when unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    model = re.search(r"^model name\s*:(.*)$", text, re.M)
    stated = re.search(r"@\s*([\d.]+)\s*GHz", model.group(1)) if model else None
    current = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
    ghz = float(stated.group(1)) if stated else (float(current.group(1)) / 1000 if current else None)
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16
    if ghz is None:
        return {}
    return {"cores": cores, "ghz": ghz, "flop_per_cycle": per_cycle, "peak_gflops": cores * ghz * per_cycle,
            "peak_gflops_per_core": ghz * per_cycle}


def run_child(case: dict) -> dict:
    """One default-profile optimiser step, timed (the child side): FLOPs, median seconds."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from anatcl_core.config import load_section
    from anatcl_core.data.layout import crop_shape
    from anatcl_core.train import loop as train
    from anatcl_core.train.recipe import PretrainConfig

    torch.set_num_threads(case["threads"])
    config = load_section(common.REPO / "params.yaml", "pretrain", PretrainConfig)
    synth = json.loads(case["synth"])
    shape = crop_shape(synth["voxel_mm"])
    model, objective = train.build(config.resolve(case["method"], seed=0))
    optimizer = torch.optim.Adam(list(model.parameters()) + list(objective.parameters()),
                                 lr=config.learning_rate, weight_decay=config.weight_decay)
    bs = config.batch_size
    method = config.methods[case["method"]]
    views = 1 if method.identical_views else 2
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs * views, 1, *shape, generator=g).contiguous(memory_format=torch.channels_last_3d)
    age = torch.rand(bs, generator=g) * 60 + 20
    desc = torch.randn(bs, len(config.channels), 68, generator=g)
    model.train()

    def step() -> None:
        feats, proj = model(x)
        feats, proj = feats.view(bs, views, -1).expand(-1, 2, -1), proj.view(bs, views, -1).expand(-1, 2, -1)
        loss, _ = objective(feats, proj, age, (age - 45) / 17, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    seconds = common.time_repeats(step, warmup=2, repeats=case["repeats"])
    return {"flops": counter.get_total_flops(), "median_s": statistics.median(seconds),
            "seconds": seconds, "shape": [bs * views, 1, *shape], "threads": case["threads"],
            **common.peak_memory()}


def summarise(outputs: Path) -> tuple[dict, list[dict]]:
    record = json.loads((outputs / "logs" / "pipeline.json").read_text())
    books, trains = notebook_seconds(outputs), training_seconds(outputs)
    kinds: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for st in record["stages"]:
        if not st.get("ran") or st.get("end_s") is None:
            continue
        row = kinds[stage_kind(st["stage"])]
        wall = st["end_s"] - st["start_s"]
        row["stages"] += 1
        row["wall_s"] += wall
        row["notebook_s"] += books.get(st["stage"], float("nan"))
        if st["stage"] in trains:
            row["epoch_loop_s"] += trains[st["stage"]]["train_seconds"]
            row["epochs"] += trains[st["stage"]]["epochs"]
    rows = []
    for kind, row in kinds.items():
        row = dict(row, kind=kind)
        row["overhead_s"] = row["wall_s"] - row["notebook_s"]
        rows.append(row)
    return record, sorted(rows, key=lambda r: -r["wall_s"])


def main(argv=None) -> int:
    p = common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--outputs", type=Path, default=common.REPO / "outputs", help="a finished run's outputs/")
    p.add_argument("--steps", type=int, default=8, help="timed optimiser steps (after 2 warm-up steps)")
    p.add_argument("--side-by-side", action="store_true",
                   help="only compare one process with every core's threads against one 1-thread process per core")
    args = p.parse_args(argv)
    if args.case:
        common.report_case(run_child(json.loads(args.case)))
        return 0
    if args.side_by_side:
        return side_by_side(args)
    from anatcl_core.config import load_params

    record, rows = summarise(args.outputs)
    info = common.machine()
    common.print_machine(info)
    busy = sum(st["end_s"] - st["start_s"] for st in record["stages"])
    print(f"run: {len(record['stages'])} stages, {record['jobs']} side by side x {record['threads_per_job']} "
          f"thread(s), wall {record['wall_s']:.0f} s; stage-seconds {busy:.0f} "
          f"(x{busy / record['wall_s']:.2f} concurrency)")
    common.print_table(rows, ["kind", "stages", "wall_s", "notebook_s", "overhead_s", "epoch_loop_s", "epochs"])
    payload = {"machine": info, "record": {k: v for k, v in record.items() if k != "stages"},
               "kinds": rows}
    params = load_params(common.REPO / "params.yaml")
    pre = next((r for r in rows if r["kind"] == "pretrain"), None)
    if not args.quick and pre is not None:
        payload["step"] = _step_figures(args, record, params, pre)
    common.write_json(payload, args.out)
    print(f"wrote {args.out}")
    return 0


def _step_figures(args, record: dict, params: dict, pre: dict) -> dict:
    """Time the identical-view (anatcl_global) and two-view (simclr) steps; compare with the run."""
    threads = record["threads_per_job"]
    steps = {}
    for method in ("anatcl_global", "simclr"):
        case = {"name": method, "method": method, "threads": threads, "repeats": args.steps,
                "synth": json.dumps(params["synth"])}
        steps[method] = common.run_case(Path(__file__), case)
    views = {m: 2 if cfg.get("augmentation") not in (None, [], ["none"]) else 1  # MethodConfig.identical_views
             for m, cfg in params["pretrain"]["methods"].items()}
    per_epoch = _steps_per_epoch(params)
    pure = 0.0
    for stage, run in training_seconds(args.outputs).items():
        method = re.sub(r"-\d+$", "", stage.split("@", 1)[1])
        step = steps["simclr" if views.get(method, 1) == 2 else "anatcl_global"]
        pure += run["epochs"] * per_epoch * step["median_s"]
    peak = peak_gflops(threads)
    out = {"steps": steps, **peak, "steps_per_epoch": per_epoch, "pure_compute_s": pure,
           "share_of_epoch_loops": pure / pre["epoch_loop_s"] if pre["epoch_loop_s"] else None,
           "share_of_pretrain_wall": pure / pre["wall_s"]}
    for method, step in steps.items():
        gflops = step["flops"] / step["median_s"] / 1e9
        step["gflops_per_s"] = gflops
        share = f" = {gflops / peak['peak_gflops']:.0%} of the {peak['peak_gflops']:.0f} GFLOP/s fp32 peak of " \
                f"{threads} core(s) ({peak['ghz']:.2f} GHz x {peak['flop_per_cycle']} FLOP/cycle)" if peak else ""
        if peak:
            step["share_of_peak"] = gflops / peak["peak_gflops"]
        print(f"step {method} {step['shape']}, {threads} thread(s): {step['flops'] / 1e9:.1f} GFLOP in "
              f"{step['median_s']:.3f} s = {gflops:.1f} GFLOP/s{share}")
    print(f"pure compute of every pretraining step ({per_epoch} steps per epoch): {pure:.0f} s = "
          f"{out['share_of_epoch_loops']:.0%} of the epoch loops ({pre['epoch_loop_s']:.0f} s), "
          f"{out['share_of_pretrain_wall']:.0%} of the pretrain stages' wall time ({pre['wall_s']:.0f} s)")
    return out


def side_by_side(args) -> int:
    """Training throughput: one process using every usable core against one 1-thread process per core.

    The processes run the same timed steps at the same time (started together); throughput is
    steps per second summed over processes, at each one's median step time.
    """
    from concurrent.futures import ThreadPoolExecutor

    from anatcl_core.config import load_params
    from anatcl_core.cores import usable_cores

    cores = usable_cores()
    params = load_params(common.REPO / "params.yaml")
    case = {"method": "anatcl_global", "repeats": args.steps, "synth": json.dumps(params["synth"])}
    info = common.machine()
    common.print_machine(info)
    rows = []
    for procs, threads in ((1, cores), (cores, 1)):
        with ThreadPoolExecutor(procs) as pool:
            results = list(pool.map(lambda i: common.run_case(Path(__file__), {**case, "name": f"p{i}", "threads": threads}),
                                    range(procs)))
        steps_per_s = sum(1 / r["median_s"] for r in results)
        rows.append({"processes": procs, "threads_each": threads,
                     "median_step_s": statistics.median(r["median_s"] for r in results),
                     "steps_per_s": steps_per_s,
                     "gflops_per_s": sum(r["flops"] / r["median_s"] for r in results) / 1e9})
    common.print_table(rows, list(rows[0]))
    ratio = rows[1]["steps_per_s"] / rows[0]["steps_per_s"]
    print(f"{cores} x 1-thread processes side by side: x{ratio:.2f} the steps/s of one {cores}-thread process")
    common.write_json({"machine": info, "side_by_side": rows, "ratio": ratio},
                      args.out.with_name(args.out.stem + "_side_by_side.json"))
    return 0


def _steps_per_epoch(params: dict) -> int:
    """Optimiser steps per epoch: train-split subjects // batch size (data/openbhb participants)."""
    import pandas as pd

    split = pd.read_csv(common.REPO / "data" / "openbhb" / "participants.tsv", sep="\t")["split"]
    return int((split == "train").sum()) // int(params["pretrain"]["batch_size"])


if __name__ == "__main__":
    sys.exit(main())
