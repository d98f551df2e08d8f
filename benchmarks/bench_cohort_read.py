"""The cohort stage's reading of ``data/``: one decoding thread against several.

    nice python benchmarks/bench_cohort_read.py [--data data] [--workers 1 auto] [--repeats 3]

Times :meth:`OpenBHB.images` and :meth:`ManifestDataset.images` over every cohort of ``--data``
(what :func:`anatcl_core.data.stacking.write_arrays` reads), each setting ``--repeats`` times,
prints the median seconds per setting, its ratio to the first setting and a digest of the stacked
bytes, which must agree across settings (the run fails otherwise).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time

from anatcl_core.cores import usable_cores
from anatcl_core.data import layout
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.data.openbhb import OpenBHB


def read_all(data: str, workers: int) -> tuple[float, str]:
    """Seconds to stack every cohort of ``data`` with ``workers`` threads, and the bytes' digest."""
    digest = hashlib.sha256()
    start = time.perf_counter()
    for name, path in layout.cohort_paths(data).items():
        dataset = (OpenBHB(path, split=layout.SPLITS, crop=None) if name == "openbhb"
                   else ManifestDataset(path, crop=None))
        digest.update(dataset.images(progress=False, workers=workers).tobytes())
    return time.perf_counter() - start, digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--workers", nargs="+", default=["1", "auto"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    settings = [min(8, usable_cores()) if w == "auto" else int(w) for w in args.workers]
    base, digests = None, set()
    for workers in settings:
        runs = [read_all(args.data, workers) for _ in range(args.repeats)]
        median = statistics.median(t for t, _ in runs)
        digests.update(d for _, d in runs)
        base = base or median
        print(f"workers {workers}: {median:.2f} s (ratio to first setting {median / base:.2f}), "
              f"bytes {runs[0][1]}")
    if len(digests) != 1:
        print(f"FAIL: the stacked bytes differ between settings: {sorted(digests)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
