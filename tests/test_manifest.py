"""Manifest reader: columns, path resolution, labels, and the dataset's items."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anatcl_core.data import io
from anatcl_core.data.manifest import ManifestDataset, ManifestError, read_manifest, score_columns, task_columns


def test_read_manifest_resolves_and_types(manifest_path):
    frame = read_manifest(manifest_path)
    assert frame["participant_id"].tolist() == [f"sub-m{i:04d}" for i in range(1, 7)]
    assert all(p.startswith(str(manifest_path.parent.resolve())) for p in frame["image"])
    assert task_columns(frame) == ["dx_ad"] and score_columns(frame) == ["score_mmse"]
    assert frame["dx_ad"].tolist()[:4] == [0.0, 1.0, 0.0, 1.0] and frame["dx_ad"][4:].isna().all()
    assert frame["sex"].tolist() == [0, 1, 0, 1, 0, 1]
    # a directory resolves to its manifest.tsv
    assert read_manifest(manifest_path.parent).equals(frame)


def test_absolute_paths_kept(manifest_path, tmp_path):
    raw = pd.read_csv(manifest_path, sep="\t", dtype=str)
    raw["image"] = [str(manifest_path.parent / p) for p in raw["image"]]
    raw["roi"] = ""  # no ROI table: descriptors are NaN
    other = tmp_path / "elsewhere" / "manifest.tsv"
    other.parent.mkdir()
    raw.to_csv(other, sep="\t", index=False)
    item = ManifestDataset(other)[2]
    np.testing.assert_array_equal(item["image"], ManifestDataset(manifest_path)[2]["image"])
    assert item["descriptors"].shape == (3, 68) and item["descriptors"].isnan().all()


@pytest.mark.parametrize(
    "edit, message",
    [(lambda f: f.drop(columns="age"), r"missing column\(s\) \['age'\]"),
     (lambda f: f.assign(participant_id=["a", "a", "b", "c", "d", "e"]), r"duplicate participant_id \['a'\]"),
     (lambda f: f.assign(score_mmse="high"), "non-numeric score_mmse 'high'"),
     (lambda f: f.assign(sex="x"), "unknown sex value 'x'")],
)  # fmt: skip
def test_bad_manifests(manifest_path, edit, message):
    edit(pd.read_csv(manifest_path, sep="\t", dtype=str)).to_csv(manifest_path, sep="\t", index=False)
    with pytest.raises(ManifestError if "sex" not in message else ValueError, match=message):
        read_manifest(manifest_path)


@pytest.mark.parametrize("fixture", ["manifest_path", "manifest_npy_path"])
def test_items(fixture, request):
    path = request.getfixturevalue(fixture)
    dataset = ManifestDataset(path, channels=("GMV",))
    frame = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
    item = dataset[4]
    volume, _ = io.load_volume(path.parent / frame["image"][4])
    np.testing.assert_array_equal(item["image"][0].numpy(), volume[:, 1:23, :])
    np.testing.assert_array_equal(item["descriptors"].numpy(), np.load(path.parent / frame["roi"][4])[[1]])
    assert item["participant_id"] == "sub-m0005" and item["site"] == "S0"
    assert math.isnan(item["dx_ad"]) and item["score_mmse"] == frame["score_mmse"][4]
    assert dataset.images(progress=False).shape == (6, 1, 21, 22, 21)
