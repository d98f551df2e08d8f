"""``python -m anatcl_core.train`` (and ``torchrun ... -m anatcl_core.train``): one method, one seed, outside DVC."""

from __future__ import annotations

import argparse
import logging

from anatcl_core.arguments import ArgumentError, check_device
from anatcl_core.config import load_section
from anatcl_core.train import distributed
from anatcl_core.train.data import load_train_data
from anatcl_core.train.device import resolve_device
from anatcl_core.train.loop import pretrain
from anatcl_core.train.recipe import PretrainConfig


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m anatcl_core.train`` (also under ``torchrun``): one method, one seed, outside DVC.

    Reads the cohort stage's ``--arrays-dir`` and the ``pretrain`` section of ``--params``; writes what
    :func:`pretrain` writes to ``--out-dir`` (default ``outputs/pretrain/<method>-s<seed>``, the
    DVC stage's folder, so ``dvc commit`` can adopt a run made by hand).
    """
    parser = argparse.ArgumentParser(prog="python -m anatcl_core.train", description=main.__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (section pretrain)")
    parser.add_argument("--method", required=True, help="a key of pretrain.methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arrays-dir", default="outputs/cohort/arrays",
                        help="the cohort stage's arrays (openbhb.npy, openbhb.tsv, ...)")
    parser.add_argument("--out-dir", default=None, help="default outputs/pretrain/<method>-s<seed>")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    try:
        check_device(args.device)
    except ValueError as err:
        raise ArgumentError(f"python -m anatcl_core.train: --device = {args.device!r}: {err}") from None
    run = load_section(args.params, "pretrain", PretrainConfig).resolve(args.method, args.seed)
    out_dir = args.out_dir or f"outputs/pretrain/{args.method}-s{args.seed}"
    ctx = distributed.init_from_env(backend="nccl" if resolve_device(args.device).type == "cuda" else "gloo",
                                    device=None if args.device in ("auto", "cuda") else args.device)
    try:
        data = load_train_data(args.arrays_dir, run.data, progress=ctx.is_main and not args.no_progress)
        return pretrain(run, data, out_dir, progress=not args.no_progress, device=args.device,
                        bf16=False if args.no_bf16 else None)
    finally:
        ctx.cleanup()
