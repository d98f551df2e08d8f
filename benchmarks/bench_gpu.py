"""The paper's training step against the chip: subjects/s, TFLOP/s and the share of the device's peak.

    python benchmarks/bench_gpu.py --device cuda            # the paper step on a GPU
    python benchmarks/bench_gpu.py --quick --threads 1      # tiny, on the CPU (the test suite runs this)

The step is the trainer's (``anatcl_core.train.loop``): AnatCL-global, one view per subject expanded
to two (identical views), the network under bf16 autocast on CUDA, the loss in float32, Adam. At full
size it is the paper's: ResNet-18 width 64, 32 subjects, 121x128x121 voxels. Each variant below runs
in its own subprocess, and is reported with its speed relative to the first:

- ``fp32``: contiguous NCDHW, float32 (TF32 off), plain Adam: the reference.
- ``channels_last``: channels-last 3D activations (the trainer's layout).
- ``bf16``: + bf16 autocast (CUDA; on the CPU bf16 is emulated and not tried).
- ``cudnn_benchmark``: + cuDNN autotuning; ``fused_adam``: + ``Adam(fused=True)``: the trainer's CUDA
  settings (anatcl_core.train.device); ``cuda_graph``: + the whole step captured in a CUDA graph.

FLOPs come from ``torch.utils.flop_counter`` (convolutions and matmuls, forward and backward). The
peak is the device's dense figure for the variant's arithmetic from :data:`GPU_PEAKS` (NVIDIA's
datasheets), on the CPU the fp32 estimate of ``bench_pipeline.peak_gflops`` (cores x clock x FLOP
per cycle). One ``torch.profiler`` pass over the last variant lists the operators that take the time.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: Dense tensor-core peaks in TFLOP/s (no sparsity), from NVIDIA's datasheets (H200: "NVIDIA H200
#: Tensor Core GPU" datasheet, SXM; H100: H100 datasheet, SXM; A100: A100 datasheet, SXM; L40S: L40S
#: datasheet). The datasheets quote sparse figures for bf16/tf32; these are half of those.
GPU_PEAKS = {
    "H200": {"bf16": 989.0, "tf32": 494.5, "fp32": 67.0},
    "H100": {"bf16": 989.0, "tf32": 494.5, "fp32": 67.0},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6},
}
VARIANTS = ("fp32", "channels_last", "bf16", "cudnn_benchmark", "fused_adam", "cuda_graph")
CUDA_ONLY = {"bf16", "cudnn_benchmark", "fused_adam", "cuda_graph"}
PAPER = {"base_width": 64, "batch_size": 32, "shape": (121, 128, 121), "warmup": 3, "repeats": 10}
QUICK = {"base_width": 4, "batch_size": 4, "shape": (16, 16, 16), "warmup": 1, "repeats": 2}


def gpu_peak(name: str, arithmetic: str) -> float | None:
    """Dense TFLOP/s of the GPU called ``name`` (``torch.cuda.get_device_name``) for ``arithmetic``."""
    for key, peaks in GPU_PEAKS.items():
        if key in name.upper():
            return peaks[arithmetic]
    return None


def settings(variant: str) -> dict:
    """What a variant turns on: every setting of the variants before it, plus its own."""
    chosen = VARIANTS[: VARIANTS.index(variant) + 1]
    return {name: name in chosen for name in VARIANTS[1:]}


def build_step(size: dict, on: dict, device: str):
    """The trainer's step at ``size`` with the settings ``on``; returns (step function, subjects per step)."""
    import dataclasses

    import torch

    from anatcl_core.config import load_section
    from anatcl_core.train import loop
    from anatcl_core.train.recipe import PretrainConfig

    torch.backends.cudnn.benchmark = on["cudnn_benchmark"]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    config = load_section(common.REPO / "params.yaml", "pretrain", PretrainConfig)
    run = config.resolve("anatcl_global", seed=0)
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, base_width=size["base_width"]))
    model, objective = loop.build(run)
    fmt = torch.channels_last_3d if on["channels_last"] else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    objective = objective.to(device)
    optimizer, _ = loop.make_optimiser(run.optimiser, list(model.parameters()) + list(objective.parameters()),
                                       fused=on["fused_adam"])
    bs = size["batch_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, 1, *size["shape"], generator=g).to(device).contiguous(memory_format=fmt)
    age = (torch.rand(bs, generator=g) * 60 + 20).to(device)
    desc = torch.randn(bs, len(run.data.channels), 68, generator=g).to(device)  # (B, C, 68 regions)
    model.train()

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=on["bf16"]):
            feats, proj = model(x)  # (B, F), (B, d)
        feats = feats.float().view(bs, 1, -1).expand(-1, 2, -1)  # (B, 2, F): identical views
        proj = proj.float().view(bs, 1, -1).expand(-1, 2, -1)  # (B, 2, d)
        loss, _ = objective(feats, proj, age, (age - 45) / 17, desc)
        optimizer.zero_grad(set_to_none=False)  # the graph variant needs the gradients to stay put
        loss.backward()
        optimizer.step()

    if on["cuda_graph"]:
        step = _graphed(step, device)
    return step, bs


def _graphed(step, device: str):
    """``step`` captured once in a CUDA graph (after warm-up on a side stream), replayed on call."""
    import torch

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def run_child(case: dict) -> dict:
    """One variant, timed, with its FLOPs (the child side)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    common.set_threads(case["threads"])
    on, size, device = settings(case["variant"]), case["size"], case["device"]
    step, subjects = build_step(size, on, device)
    with FlopCounterMode(display=False) as counter:
        build_step(size, {**on, "cuda_graph": False}, device)[0]()  # counted eagerly, once
    seconds = common.time_repeats(step, warmup=size["warmup"], repeats=size["repeats"], device=device)
    top = _profile(step, device) if case["profile"] else []
    return {"variant": case["variant"], "flops": counter.get_total_flops(), "median_s": statistics.median(seconds),
            **common.summary(seconds, subjects), "subjects_per_s": subjects / statistics.median(seconds),
            "settings": on, "top_ops": top, **common.peak_memory(device)}


def _profile(step, device: str, rows: int = 8) -> list[dict]:
    """The operators that take the most self time over two steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        common.synchronize(device)
    cuda = device.startswith("cuda")
    events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total,
                    reverse=True)
    total = sum(e.self_device_time_total if cuda else e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "share": (e.self_device_time_total if cuda else e.self_cpu_time_total) / total}
            for e in events[:rows]]


def peak_tflops(device: str, threads: int, bf16: bool) -> tuple[float | None, str]:
    """The peak the variant is measured against, and its name."""
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(device)
        arithmetic = "bf16" if bf16 else "fp32"
        return gpu_peak(name, arithmetic), f"{name} dense {arithmetic}"
    from bench_pipeline import peak_gflops

    peak = peak_gflops(threads)
    return (peak["peak_gflops"] / 1e3, f"fp32 of {threads} core(s)") if peak else (None, "unknown")


def main(argv: list[str] | None = None) -> int:
    parser = common.parser("gpu", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    if args.case:
        common.report_case(run_child(json.loads(args.case)))
        return 0
    cuda = args.device.startswith("cuda")
    size = QUICK if args.quick else PAPER
    variants = [v for v in VARIANTS if cuda or v not in CUDA_ONLY]
    threads = args.threads or common.machine(args.device)["cpus_available"] or 1
    cases = []
    for variant in variants:
        case = {"variant": variant, "size": size, "device": args.device, "threads": threads,
                "profile": variant == variants[-1]}
        result = common.run_case(Path(__file__), case)
        peak, peak_name = peak_tflops(args.device, threads, result["settings"]["bf16"])
        result["tflops_per_s"] = result["flops"] / result["median_s"] / 1e12
        result["share_of_peak"] = result["tflops_per_s"] / peak if peak else None
        result["peak"] = peak_name
        cases.append(result)
    for result in cases:
        result["speedup"] = cases[0]["median_s"] / result["median_s"]
    skipped = [v for v in VARIANTS if v not in variants]
    common.print_machine(common.machine(args.device))
    common.print_table(cases, ["variant", "median_s", "subjects_per_s", "tflops_per_s", "share_of_peak", "speedup"])
    if skipped:
        print(f"not tried on {args.device}: {', '.join(skipped)} (CUDA only)")
    print("where the last variant's time goes (torch.profiler, self time):")
    for row in cases[-1]["top_ops"]:
        print(f"  {row['share']:6.1%}  {row['op']}")
    payload = {"benchmark": "gpu", "quick": args.quick, "machine": common.machine(args.device),
               "size": {**size, "shape": list(size["shape"])}, "cases": cases, "not_tried": skipped}
    print(f"wrote {common.write_json(payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
