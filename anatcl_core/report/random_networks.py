"""Does pretraining beat a random network? The report's answer, and what each row's features cost.

Two random networks sit beside the pretrained encoders, probed like them: a **random ResNet**
(``random``: the encoders' own architecture at random init, trained for zero epochs) and a
**random CNN** (``ref_uncnn``: the training-free un-CNN of :mod:`anatcl_core.evaluation.uncnn`).
The answer is read from the paired differences (:func:`anatcl_core.report.claims.paired_against`)
of every pretrained encoder against each: how many have a 95% CI above zero, how many below.

Feature cost: seconds per volume of each row's feature extraction (``dvclive/metrics.json``
``feature_extraction`` of the evaluate and reference stages), mean over seeds, at the stage's threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

UNCNN, RANDOM = "ref_uncnn", "random"
METRICS_FILE = Path("dvclive") / "metrics.json"


def feature_costs(folders: dict[str, list[Path]], runs: dict[str, list[dict]], labels: dict[str, str]) -> pd.DataFrame:
    """Per row: features, seconds per volume (mean over its runs), volumes, threads; rows without a record left out."""
    rows = {}
    for row, paths in folders.items():
        timings = []
        for folder in paths:
            path = Path(folder) / METRICS_FILE
            if path.exists():
                timing = json.loads(path.read_text()).get("feature_extraction")
                if timing and timing.get("volumes"):
                    timings.append(timing)
        if timings:
            rows[labels.get(row, row)] = {
                "features": runs[row][0].get("feature_dim") if runs.get(row) else None,
                "s per volume": float(np.mean([t["seconds"] / t["volumes"] for t in timings])),
                "volumes": int(timings[0]["volumes"]), "threads": int(timings[0]["threads"])}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["features", "s per volume", "volumes", "threads"])


def _against(pairs: dict[str, dict], key: str, what: str, labels: dict[str, str]) -> str | None:
    trained = [m for m in pairs if not m.startswith("ref_") and m != RANDOM and key in pairs[m]]
    if not trained:
        return None
    above = [m for m in trained if pairs[m][key]["ci"][0] > 0]
    below = [m for m in trained if pairs[m][key]["ci"][1] < 0]
    best = max(trained, key=lambda m: pairs[m][key]["difference"])
    s = pairs[best][key]
    listed = lambda ms: " (" + ", ".join(labels.get(m, m) for m in ms) + ")" if ms else ""  # noqa: E731
    return (f"{what}: {len(above)} of {len(trained)} pretrained encoders are above it with a 95% CI above zero"
            f"{listed(above)}, {len(below)} below it{listed(below)}; closest to or above it: "
            f"{labels.get(best, best)} {s['difference']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}].")


def answers(vs_random: dict[str, dict], vs_uncnn: dict[str, dict], labels: dict[str, str],
            widths: list[int] | None) -> list[str]:
    """Sentences answering "does the pretrained encoder beat a random CNN, and a random ResNet?",
    across unseen sites (LOSO mean) and at the fewest labels, from the paired differences."""
    found = []
    if widths:
        found.append(f"Random CNN: the un-CNN at {'/'.join(map(str, widths))} channels per block (published "
                     "64/128/256/512, the paper profile), weights from a fixed seed, never trained. "
                     "Random ResNet: the encoders' architecture at random init.")
    points = sorted({k for entry in (*vs_random.values(), *vs_uncnn.values()) for k in entry if k.startswith("le_n")},
                    key=lambda k: int(k[4:]))
    for key, where in (("loso_mean", "across unseen sites (leave-one-site-out, mean over tasks)"),
                       *(((points[0], f"with {points[0][4:]} labelled subjects per task"),) if points else ())):
        for pairs, what in ((vs_uncnn, "the random CNN (un-CNN)"), (vs_random, "the random ResNet (random init)")):
            sentence = _against(pairs, key, f"Against {what}, {where}", labels)
            if sentence:
                found.append(sentence)
    return found
