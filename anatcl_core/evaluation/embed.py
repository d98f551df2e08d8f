"""``anatcl embed``: frozen AnatCL features for CAT12 grey-matter maps, one row per subject.

    anatcl embed INPUT... --weights FILE --out FEATURES.{csv,parquet}
                 [--head] [--batch-size N] [--device cpu|cuda] [--bf16] [--workers auto|N] [--skip-invalid]

INPUT: ``.nii`` / ``.nii.gz`` / ``.npy`` files, folders of them, or manifests (``manifest.tsv`` or
a folder holding one). Ids: ``participant_id`` from a manifest, else the file name without
``.nii`` / ``.nii.gz`` / ``.npy``. Every image is checked by the validator
(:func:`anatcl_core.data.validate_volume.check_volume`) before the model is loaded; a bad one stops the run
before anything is written, unless ``--skip-invalid`` (bad files reported, the others embedded).

Each image is centre-cropped as the data readers do (``crop="upstream"``:
:func:`anatcl_core.data.io.resolve_crop`), then encoded: the 512-d encoder output (Barbano et al.:
the representation probed downstream), or with ``--head`` the 128-d L2-normalised projection.
The numbers are those of the Python API on the same cropped input, ``AnatCL(weights=...).eval()(x)``
for an upstream-format file and ``load_model(...).encode(x)`` for our checkpoints (both
:func:`anatcl_core.model.trained.load_trained`; inputs: :mod:`anatcl_core.evaluation.embed_inputs`). ``--bf16``
runs under bfloat16 autocast: faster on recent GPUs but approximate (max differences ~1 % of
the largest feature on the test model): use it for exploration, not for reported numbers.
Files are read and cropped by one background thread, two batches ahead of the model, so gunzip
overlaps the forward passes where a core (or the GPU) is free, or with ``--workers N`` by N
processes (``auto``: one per spare core up to 8 on CUDA, none on the CPU; the same features); a
file that fails there stops the run with its name in the error. The table is written to a temp file in the output's folder and
renamed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pickle
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from anatcl_core.arguments import EmbedArgs, check_output, count_argument, parse
from anatcl_core.cores import usable_cores
from anatcl_core.atomic import atomic_write
from anatcl_core.data.problem import Problem
from anatcl_core.evaluation.embed_inputs import EmbedError, check_inputs, cropped_volume, gather_inputs
from anatcl_core.evaluation.embed_loader import auto_workers, loader_batches
from anatcl_core.model.trained import WeightsError, load_trained

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".parquet")


class _Encoder(nn.Module):
    """``model.encode(x)``: the encoder features of a ContrastiveModel."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)


class _Projection(nn.Module):
    """``model(x)[1]``: the normalised projection of a ContrastiveModel."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[1]


def load_encoder(weights: str | Path, head: bool = False) -> tuple[nn.Module, str]:
    """A module mapping ``(B, 1, X, Y, Z)`` to features ``(B, F)`` (``head``: ``(B, 128)``), eval mode.

    Our checkpoints and upstream-format files (``{"model": state dict}``, the depth read from the
    state dict's shapes) load through :func:`anatcl_core.model.trained.load_trained`; upstream's
    network is the one of :class:`anatcl_core.model.upstream.AnatCL`, so the features are its.

    Returns:
        ``(module, format)`` with format "anatcl" or "upstream".
    """
    trained = load_trained(weights)  # safe_load + architecture check, the file read once
    module: nn.Module = _Projection(trained.model) if head else _Encoder(trained.model)
    logger.info("loaded %s (%s format, %s)", weights, trained.format, trained.model.encoder.depth)
    return module.eval(), trained.format


PREFETCH_BATCHES = 2  # batches read ahead of the model: enough to hide a slow file, little memory
_END = object()  # the reader's last entry


def _read_batches(subjects: Sequence[tuple[str, Path]], batch_size: int) -> Iterator[np.ndarray]:
    """Cropped images ``(B, 1, X, Y, Z)`` float32, ``batch_size`` subjects at a time, in order.

    Raises:
        EmbedError: a file that cannot be read, named with its participant id (cause chained).
    """
    for start in range(0, len(subjects), batch_size):
        volumes = []
        for pid, path in subjects[start:start + batch_size]:
            try:
                volumes.append(cropped_volume(path))
            except Exception as err:
                raise EmbedError(f"{path} ({pid}): cannot be embedded: {type(err).__name__}: {err}") from err
        yield np.stack(volumes)[:, None]


@contextlib.contextmanager
def prefetched(items: Iterable, depth: int = PREFETCH_BATCHES) -> Iterator[Iterator]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Reading and gunzipping NIfTI files mostly releases the GIL, so one reader thread overlaps the
    file work with the model's forward passes. An exception raised by ``items`` is re-raised in the
    consumer at the position where it happened; leaving the block early stops and joins the thread.

    Yields:
        an iterator over ``items``, in order.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():  # never block forever on a consumer that has gone
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put((None, err))
            return
        put((_END, None))

    def consume() -> Iterator:
        while True:
            item, err = slots.get()
            if err is not None:
                raise err
            if item is _END:
                return
            yield item

    reader = threading.Thread(target=produce, name="embed-reader", daemon=True)
    reader.start()
    try:
        yield consume()
    finally:
        stop.set()
        reader.join()


def embed_subjects(module: nn.Module, subjects: Sequence[tuple[str, Path]], batch_size: int = 4,
                   device: str | torch.device = "cpu", bf16: bool = False,
                   progress: bool = True, workers: int = 0) -> np.ndarray:
    """Features ``(N, F)`` float32 of the subjects' cropped images, in order.

    Files are read by a thread (:func:`prefetched`) or ``workers`` processes (:mod:`.embed_loader`)
    while the model encodes the previous batch (inference mode, eval mode); the batches are those of
    an eager ``module(x)`` on the stacked images, so the features are the same, bit for bit.

    Args:
        module: maps ``(B, 1, X, Y, Z)`` to ``(B, F)`` (:func:`load_encoder`).
        subjects: ``(participant_id, path)`` pairs.
        workers: decoding processes; 0: one reader thread.

    Raises:
        EmbedError: a file that cannot be read (its path and id in the message).
    """
    device = torch.device(device)
    module = module.to(device).eval()
    rows = []
    total = -(-len(subjects) // batch_size)
    cuda = device.type == "cuda"
    reader = (loader_batches(subjects, batch_size, workers, pin_memory=cuda) if workers
              else map(torch.from_numpy, _read_batches(subjects, batch_size)))
    with prefetched(reader) as batches, torch.inference_mode():
        for images in tqdm(batches, total=total, desc="embed", unit="batch", disable=not progress):
            x = images.to(device, non_blocking=cuda)  # (B, 1, X, Y, Z)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                rows.append(module(x).float().cpu().numpy())  # (B, F)
    return np.concatenate(rows)


def features_frame(ids: Sequence[str], features: np.ndarray, prefix: str = "feature") -> pd.DataFrame:
    """``participant_id`` then ``<prefix>_000 ...`` columns, one row per subject."""
    columns = [f"{prefix}_{j:03d}" for j in range(features.shape[1])]
    frame = pd.DataFrame(features.astype(np.float64), columns=columns)
    frame.insert(0, "participant_id", list(ids))
    return frame


#: First characters that make a spreadsheet evaluate a CSV cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with text cells that a spreadsheet would evaluate prefixed by ``'`` (OWASP's rule).

    Only text cells change (``=cmd|calc!A1`` -> ``'=cmd|calc!A1``); numbers, negative ones
    included, are written as they are.
    """
    out = frame.copy()
    for column in out.columns[out.dtypes.map(lambda d: not pd.api.types.is_numeric_dtype(d))]:
        out[column] = [f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v
                       for v in out[column]]
    return out


def write_table(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write ``frame`` as CSV (:func:`spreadsheet_safe`) or Parquet (as is), by suffix, atomically."""
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise EmbedError(f"{out}: unknown output format; expected one of {OUTPUT_SUFFIXES}")
    with atomic_write(out) as tmp:
        if out.suffix.lower() == ".csv":
            spreadsheet_safe(frame).to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return out


def embed(inputs: Sequence[str | Path], weights: str | Path, out: str | Path, head: bool = False,
          batch_size: int = 4, device: str = "cpu", bf16: bool = False, skip_invalid: bool = False,
          progress: bool = True, workers: int | str = "auto") -> tuple[pd.DataFrame, list[Problem]]:
    """Validate, encode and write; returns ``(table written, problems skipped)``.

    Raises:
        EmbedError: invalid inputs (without ``skip_invalid``; nothing is written), nothing left
            to embed, or a bad output name.
    """
    given = argparse.Namespace(inputs=tuple(map(str, inputs)), weights=str(weights), out=str(out),
                               batch_size=batch_size, device=device)
    args = parse(EmbedArgs, given, "anatcl embed")  # every option's rule, before anything is read
    check_output(out, [*inputs, weights], OUTPUT_SUFFIXES, "anatcl embed")
    subjects = gather_inputs(args.inputs)
    check_output(out, [path for _, path in subjects], OUTPUT_SUFFIXES, "anatcl embed")
    problems = check_inputs(subjects, progress)
    if problems and not skip_invalid:
        listed = "; ".join(map(str, problems))
        raise EmbedError(f"{listed} ({len(problems)} invalid input(s); nothing written; --skip-invalid "
                         "embeds the others)")
    bad = {p.path for p in problems}
    subjects = [(pid, path) for pid, path in subjects if str(path) not in bad]
    if not subjects:
        raise EmbedError("no valid input left to embed; nothing written")
    module, _ = load_encoder(weights, head=head)
    workers = auto_workers(device, usable_cores()) if workers == "auto" else workers
    features = embed_subjects(module, subjects, batch_size, device, bf16, progress, workers)
    frame = features_frame([pid for pid, _ in subjects], features, "projection" if head else "feature")
    write_table(frame, out)
    logger.info("wrote %d x %d features to %s", *features.shape, out)
    return frame, problems


def main(argv: Sequence[str] | None = None) -> int:
    """``anatcl embed``; 0 on success (skipped files reported on stdout), 1 on an error."""
    parser = argparse.ArgumentParser(prog="anatcl embed", description="Frozen AnatCL features per subject.")
    parser.add_argument("inputs", nargs="+", help=".nii/.nii.gz/.npy files, folders, manifest.tsv files")
    parser.add_argument("--weights", required=True, help="upstream-format .pth or our checkpoint")
    parser.add_argument("--out", required=True, help="output table, .csv or .parquet")
    parser.add_argument("--head", action="store_true", help="write the 128-d projection, not the encoder features")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast: approximate (~1%% differences)")
    parser.add_argument("--workers", default="auto", type=count_argument("--workers", zero=True),
                        help="processes decoding the files (auto: 0 on cpu, a thread; spare cores up to 8 on cuda)")
    parser.add_argument("--skip-invalid", action="store_true", help="report bad inputs and embed the rest")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        _, problems = embed(args.inputs, args.weights, args.out, args.head, args.batch_size, args.device,
                            args.bf16, args.skip_invalid, not args.no_progress, args.workers)
    except (EmbedError, WeightsError, ValueError, OSError, KeyError, pickle.UnpicklingError) as err:
        logger.error("%s", err)  # UnsafeCheckpointError is an UnpicklingError
        return 1
    if problems:
        logger.warning("skipped %d invalid input(s)", len(problems))
    for problem in problems:
        sys.stdout.write(f"skipped {problem}\n")  # the command's report
    return 0


if __name__ == "__main__":
    sys.exit(main())
