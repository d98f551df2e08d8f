"""Valid inputs for every reader the fuzzing covers (tests/test_fuzz_readers.py), drawn with Hypothesis.

A :class:`Case` writes a valid input under an empty folder (its sizes, values and ids drawn), says
what the reader must give back for it, and calls the reader. The fuzz test then damages one of the
files it wrote (:mod:`fuzz_mutations`) and calls the reader again. Shapes stay tiny so that a few
hundred examples per reader run in seconds. The checkpoints' inputs are in :mod:`fuzz_checkpoints`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anatcl_core.data import io, layout, resources
from anatcl_core.data.freesurfer import CHANNELS, DESIKAN_COLUMNS, PUBLISHED_CHANNELS

REPO = Path(__file__).resolve().parent.parent
Draw = Callable[[st.SearchStrategy], Any]


@dataclass(frozen=True)
class Case:
    """How to write a valid input for one reader, read it, and compare what came back."""

    build: Callable[[Path, Draw], Any]  # writes under the folder; returns what must read back
    read: Callable[[Path], Any]  # the reader, called on the folder
    same: Callable[[Any, Any], bool] = lambda got, expected: True  # read-back check of a valid input
    refuses: bool = True  # False: the reader reports problems instead of raising (never raises)


# ----------------------------------------------------------------------------------- drawn values
FINITE32 = st.floats(-1e6, 1e6, width=32, allow_subnormal=False)
#: Ids a cohort may use: leading zeros, BIDS prefixes, non-ASCII letters; no control characters.
IDS = st.text(st.characters(categories=("L", "Nd"), include_characters="-_"), min_size=1, max_size=8) \
    .filter(lambda s: s.strip() == s and not s.startswith("-"))


def small_array(draw: Draw, shape: tuple[int, ...] | None = None, ndim: int = 3) -> np.ndarray:
    shape = shape or draw(st.tuples(*[st.integers(1, 5)] * ndim))
    return draw(hnp.arrays(np.float32, shape, elements=FINITE32))


def unique_ids(draw: Draw, n_max: int = 4) -> list[str]:
    return draw(st.lists(IDS, min_size=1, max_size=n_max, unique_by=str.casefold))


def same_arrays(got, expected) -> bool:
    return np.array_equal(np.asarray(got), np.asarray(expected))


# ------------------------------------------------------------------------------------------- maps
def nifti_case(suffix: str) -> Case:
    def build(root: Path, draw: Draw):
        array = small_array(draw)
        affine = np.diag([*draw(st.tuples(*[st.sampled_from([1.0, 1.5, 9.0])] * 3)), 1.0])
        io.save_nifti(array, affine, root / f"map{suffix}")
        return array, affine
    return Case(build, lambda root: io.load_volume(root / f"map{suffix}"),
                lambda got, exp: same_arrays(got[0], exp[0]) and np.allclose(got[1], exp[1]))


def build_npy(root: Path, draw: Draw):
    array = small_array(draw)
    stored = array[None] if draw(st.booleans()) else array  # OpenBHB's (1, X, Y, Z) or (X, Y, Z)
    np.save(root / "map.npy", stored)
    return array


def build_header(root: Path, draw: Draw):
    return nifti_case(".nii.gz").build(root, draw)[0].shape


# ----------------------------------------------------------------------------------------- tables
def write_tsv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False)


def build_participants(root: Path, draw: Draw) -> pd.DataFrame:
    ids = unique_ids(draw)
    n = len(ids)
    frame = pd.DataFrame({"participant_id": ids, "age": draw(st.lists(st.floats(5, 95), min_size=n, max_size=n)),
                          "sex": draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)),
                          "site": draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)),
                          "split": draw(st.lists(st.sampled_from(layout.SPLITS), min_size=n, max_size=n))})
    write_tsv(root / layout.PARTICIPANTS_FILE, frame)
    return frame


def same_frame(got: pd.DataFrame, expected: pd.DataFrame) -> bool:
    return list(got["participant_id"]) == list(expected["participant_id"]) and \
        np.allclose(got["age"].astype(float), expected["age"].astype(float))


def build_manifest(root: Path, draw: Draw) -> pd.DataFrame:
    frame = build_participants(root, draw).drop(columns="split")
    (root / layout.PARTICIPANTS_FILE).unlink()
    frame.insert(1, "image", [f"images/{i}_mwp1.nii.gz" for i in range(len(frame))])
    frame["site"] = [f"S{s}" for s in frame["site"]]
    frame["roi"] = ["" if draw(st.booleans()) else f"roi/{i}.npy" for i in range(len(frame))]
    frame["dx_ad"] = draw(st.lists(st.sampled_from([0.0, 1.0, None]), min_size=len(frame), max_size=len(frame)))
    write_tsv(root / layout.MANIFEST_FILE, frame)
    return frame


# ---------------------------------------------------------------------------------- FreeSurfer
def build_roi_npy(root: Path, draw: Draw) -> np.ndarray:
    table = small_array(draw, (len(CHANNELS), draw(st.integers(1, 6))))
    np.save(root / "desikan.npy", table[None] if draw(st.booleans()) else table)
    return table


def build_roi_csv(root: Path, draw: Draw):
    ids = unique_ids(draw)
    regions = draw(st.integers(1, 4))
    tables = small_array(draw, (len(ids), len(CHANNELS), regions))
    resources.write_tables(root / "desikan_roi_features.csv", ids, tables, regions=DESIKAN_COLUMNS[:regions])
    return ids, tables


def build_resource_tables(root: Path, draw: Draw) -> dict[str, np.ndarray]:
    """``resource/`` naming channels and regions in a drawn order, and train's CSV in that order."""
    channels = draw(st.permutations(range(len(CHANNELS))))
    regions = draw(st.permutations(range(len(DESIKAN_COLUMNS))))
    ids = unique_ids(draw, 3)
    canonical = small_array(draw, (len(ids), len(CHANNELS), len(DESIKAN_COLUMNS)))
    resources.write_resources(root, [PUBLISHED_CHANNELS[i] for i in channels], [DESIKAN_COLUMNS[j] for j in regions])
    stored = canonical[:, channels][:, :, regions]
    resources.write_tables(resources.roi_csv_path(root, "train"), ids, stored,
                           [PUBLISHED_CHANNELS[i] for i in channels], [DESIKAN_COLUMNS[j] for j in regions])
    return dict(zip(ids, canonical))


def same_tables(got: dict, expected: dict) -> bool:
    return list(got) == list(expected) and all(np.array_equal(got[k], expected[k]) for k in got)


# ----------------------------------------------------------------------------------- parameters
YAML_SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | FINITE32.map(float) | \
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=10)
YAML_KEYS = st.text(st.characters(categories=("L", "Nd"), include_characters="_"), min_size=1, max_size=8)
YAML_VALUES = st.recursive(YAML_SCALARS, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(YAML_KEYS, inner, max_size=3), max_leaves=12)


def build_params(root: Path, draw: Draw) -> dict:
    data = draw(st.dictionaries(YAML_KEYS, YAML_VALUES, max_size=5))
    (root / "params.yaml").write_text(yaml.safe_dump(data, allow_unicode=draw(st.booleans())), encoding="utf-8")
    return data


def build_repo_params(root: Path, draw: Draw) -> str:
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return draw(st.sampled_from(["synth", "cohort", "report"]))


def build_profile(root: Path, draw: Draw) -> dict:
    from anatcl_core.cli.profile import merge
    from anatcl_core.config import load_params

    name = draw(st.sampled_from(sorted(p.name for p in (REPO / "profiles").glob("*.yaml"))))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copy(REPO / "profiles" / name, root / "profile.yaml")
    return merge(load_params(root / "params.yaml"), load_params(root / "profile.yaml"))


def read_profile(root: Path) -> dict:
    from anatcl_core.cli.profile import apply_profile, dump

    return yaml.safe_load(dump(apply_profile(root / "profile.yaml", root / "params.yaml")))


# ------------------------------------------------------------------------------ stacked cohorts
def build_arrays(root: Path, draw: Draw) -> dict:
    from anatcl_core.data.arrays import Cohort, write_cohort

    out = {}
    for name in layout.REQUIRED_COHORTS:
        table = build_participants(root, draw)
        (root / layout.PARTICIPANTS_FILE).unlink()
        n = len(table)
        images = small_array(draw, (n, 1, 2, 3, 2))
        descriptors = small_array(draw, (n, len(CHANNELS), 3))
        write_cohort(root / "arrays", name, Cohort(images, table, descriptors))
        out[name] = (images, table, descriptors)
    return out


def same_cohort(got, expected) -> bool:
    images, table, descriptors = expected
    return same_arrays(got.images, images) and same_frame(got.table, table) and \
        same_arrays(got.descriptors, descriptors)


# ------------------------------------------------------------------------ other readers of files
def build_cohort_data(name: str) -> Callable[[Path, Draw], None]:
    """A tiny ``data/`` cohort (9 mm maps) in the layout of ``name``, from conftest's writers."""
    def build(root: Path, draw: Draw) -> None:
        from conftest import write_manifest, write_openbhb

        seed = draw(st.integers(0, 3))
        if name == "openbhb":
            write_openbhb(layout.cohort_path(root, name), split_sizes=(1, 1, 1), seed=seed)
        else:
            write_manifest(layout.cohort_path(root, name), n=2, seed=seed, fmt=draw(st.sampled_from(["npy", "nii.gz"])))
    return build


def build_registry(root: Path, draw: Draw) -> dict:
    entry = {"format": draw(st.sampled_from(["anatcl", "upstream"])), "path": "weights.pt",
             "sha256": draw(st.none() | st.text("0123456789abcdef", min_size=64, max_size=64)),
             "description": draw(st.text(max_size=10))}
    name = draw(YAML_KEYS.map(lambda k: f"fuzz-{k}"))
    (root / "registry.yaml").write_text(yaml.safe_dump({"checkpoints": {name: entry}}), encoding="utf-8")
    return name


def build_pins(root: Path, draw: Draw) -> dict:
    pins = draw(st.dictionaries(YAML_KEYS, st.text("0123456789abcdef", min_size=64, max_size=64), max_size=3))
    (root / "pins.yaml").write_text(yaml.safe_dump(pins), encoding="utf-8")
    return pins


def build_requirements(root: Path, draw: Draw) -> list[str]:
    pins = draw(st.lists(st.tuples(st.sampled_from(["numpy", "torch", "nibabel", "scipy"]),
                                   st.sampled_from(["1.0", "2.3.1", "0.4"])), min_size=1, max_size=3,
                         unique_by=lambda pin: pin[0]))
    (root / "requirements.txt").write_text("".join(f"{n}=={v}  # pinned\n" for n, v in pins), encoding="utf-8")
    return [n for n, _ in pins]


def build_features(root: Path, draw: Draw) -> np.ndarray:
    ids = unique_ids(draw)
    values = small_array(draw, (len(ids), 3)).astype(np.float64)
    frame = pd.DataFrame(values, columns=["f0", "f1", "f2"])
    frame.insert(0, "subject_id", ids)
    frame.to_csv(root / "features.csv", index=False)
    (root.parent / "ids.txt").write_text("\n".join(ids), encoding="utf-8")  # the caller's ids, not fuzzed
    return ids, values


def build_curves(root: Path, draw: Draw) -> pd.DataFrame:
    from anatcl_core.live import CURVES_DIR, LIVE_DIR

    folder = root / LIVE_DIR / CURVES_DIR
    folder.mkdir(parents=True)
    n = draw(st.integers(1, 4))
    loss = draw(st.lists(FINITE32.map(float), min_size=n, max_size=n))
    write_tsv(folder / "loss.tsv", pd.DataFrame({"timestamp": range(n), "step": range(n), "loss": loss}))
    return loss


def build_predictions(root: Path, draw: Draw) -> dict:
    arrays = {"y_true": small_array(draw, (3,)), "y_pred": small_array(draw, (3,))}
    (root / "run").mkdir()
    np.savez(root / "run" / "predictions.npz", **arrays)
    return arrays
