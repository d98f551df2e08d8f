"""``anatcl embed``: the written features equal the Python API on the same cropped input, for our
checkpoints (load_model) and upstream-format files (AnatCL), from folders, manifests and .npy files;
ids kept; CSV and Parquet; invalid inputs stop the run before anything is written (or are skipped
and reported); a crash leaves no output behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_manifest
from test_weights import malicious_checkpoint, small_checkpoint

from anatcl_core.data import layout
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.evaluation import embed
from anatcl_core.evaluation import embed_inputs
from anatcl_core.model.checkpoint import save_checkpoint
from anatcl_core.model.network import build_model
from anatcl_core.model.trained import load_model
from anatcl_core.model.upstream import AnatCL
from anatcl_core.model.weights import inspect_checkpoint

TOL = 1e-5


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ours") / "model.pth", seed=7)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """Upstream format: {"model": full-width ResNet-18 + head state dict, ...}, no config."""
    torch.manual_seed(11)
    model = build_model("resnet18")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("upstream") / "fold0.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 50, "run_name": "resnet18-anatcl-g3"}, path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six 9 mm NIfTI subjects with a manifest (conftest's writer)."""
    return write_manifest(tmp_path_factory.mktemp("cohort"), n=6)


def reference_inputs(manifest: Path) -> tuple[list[str], torch.Tensor]:
    """Ids and cropped images as the data reader gives them: (N, 1, X, Y, Z)."""
    dataset = ManifestDataset(manifest, crop="upstream")
    return list(dataset.frame["participant_id"]), torch.from_numpy(dataset.images(progress=False))


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"participant_id": str})
    return pd.read_parquet(path)


def run(*args) -> int:
    return embed.main([str(a) for a in args] + ["--no-progress"])


def test_folder_of_nifti_with_our_checkpoint_matches_load_model(tmp_path, ours, cohort):
    ids, x = reference_inputs(cohort)
    assert x.shape[2:] == layout.crop_shape(9.0)  # the readers' upstream crop
    model = load_model(ours)
    with torch.no_grad():
        features, projection = model(x)
        assert torch.allclose(features, model.encode(x))
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"features{suffix}"
        assert run(cohort.parent / "images", "--weights", ours, "--out", out, "--batch-size", 4) == 0
        table = read(out)
        assert list(table["participant_id"]) == [f"{pid}_mwp1" for pid in ids]  # file stems
        assert list(table.columns[1:]) == [f"feature_{j:03d}" for j in range(32)]
        assert np.abs(table.iloc[:, 1:].to_numpy() - features.numpy()).max() <= TOL
    out = tmp_path / "projection.csv"
    assert run(cohort.parent / "images", "--weights", ours, "--out", out, "--head") == 0
    values = read(out).iloc[:, 1:].to_numpy()
    assert values.shape == (6, 128) and np.abs(values - projection.numpy()).max() <= TOL
    assert np.allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)


def test_manifest_with_upstream_file_matches_anatcl(tmp_path, upstream, cohort):
    info = inspect_checkpoint(upstream)
    assert (info.format, info.depth, info.feature_dim) == ("upstream", "resnet18", 512)
    ids, x = reference_inputs(cohort)
    with torch.no_grad():
        expected = AnatCL(weights=upstream).eval()(x).numpy()
    out = tmp_path / "up.parquet"
    assert run(cohort, "--weights", upstream, "--out", out, "--batch-size", 4) == 0
    table = read(out)
    assert list(table["participant_id"]) == ids  # the manifest's participant_id
    assert table.shape == (6, 513)
    assert np.abs(table.iloc[:, 1:].to_numpy() - expected).max() <= TOL
    assert np.abs(expected).max() > 1e-3  # not trivially zero


def test_npy_files_and_a_folder_with_a_manifest(tmp_path, ours):
    manifest = write_manifest(tmp_path / "npy", n=3, fmt="npy", seed=5)
    files = sorted((manifest.parent / "images").glob("*.npy"))
    out = tmp_path / "f.csv"
    assert run(*files, "--weights", ours, "--out", out, "--batch-size", 2) == 0
    ids, x = reference_inputs(manifest)
    with torch.no_grad():
        expected = load_model(ours).encode(x).numpy()
    table = read(out)
    assert list(table["participant_id"]) == [p.name.removesuffix(".npy") for p in files]
    assert np.abs(table.iloc[:, 1:].to_numpy() - expected).max() <= TOL
    # the folder holding manifest.tsv is read as the manifest: participant ids, not file names
    assert run(manifest.parent, "--weights", ours, "--out", tmp_path / "m.csv") == 0
    assert list(read(tmp_path / "m.csv")["participant_id"]) == ids


@pytest.fixture
def mixed_folder(tmp_path, cohort) -> Path:
    """Three good NIfTI files and a corrupt one."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted((cohort.parent / "images").glob("*.nii.gz"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return folder


def test_invalid_input_stops_before_writing(tmp_path, ours, mixed_folder, caplog):
    out = tmp_path / "out" / "features.csv"
    assert run(mixed_folder, "--weights", ours, "--out", out) == 1
    assert "broken.nii.gz" in caplog.text and "nothing written" in caplog.text
    assert not out.parent.exists()


def test_skip_invalid_writes_the_good_rows_and_reports_the_bad(tmp_path, ours, mixed_folder, capsys):
    out = tmp_path / "features.csv"
    assert run(mixed_folder, "--weights", ours, "--out", out, "--skip-invalid") == 0
    table = read(out)
    assert len(table) == 3 and "broken" not in set(table["participant_id"])
    report = capsys.readouterr().out
    assert "skipped" in report and "broken.nii.gz" in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv", "mixed"]


def test_out_of_range_and_mixed_grids_are_refused(tmp_path, ours, cohort):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = sorted((cohort.parent / "images").glob("*.nii.gz"))[0]
    (folder / good.name).write_bytes(good.read_bytes())
    np.save(folder / "t1.npy", np.full(layout.grid_shape(9.0), 300.0, np.float32))  # raw T1 values
    problems = embed.check_inputs(embed.gather_inputs([folder]), progress=False)
    assert [Path(p.path).name for p in problems] == ["t1.npy"] and "intensity" in problems[0].message
    (folder / "t1.npy").unlink()
    coarse = write_manifest(tmp_path / "coarse", voxel_mm=7.5, fmt="npy", ids=["coarse-1"])
    other = sorted((coarse.parent / "images").glob("*.npy"))[0]
    problems = embed.check_inputs(embed.gather_inputs([folder, other]), progress=False)
    assert len(problems) == 1 and "model input shape" in problems[0].message


def test_a_crash_mid_run_leaves_no_output(tmp_path, ours, cohort, monkeypatch, caplog):
    out = tmp_path / "features.parquet"
    out.write_bytes(b"previous run")
    real, calls = embed.cropped_volume, []

    def failing(path):
        calls.append(path)
        if len(calls) == 5:
            raise RuntimeError("disk vanished")
        return real(path)

    monkeypatch.setattr(embed, "cropped_volume", failing)
    threads = threading.active_count()
    assert run(cohort, "--weights", ours, "--out", out, "--batch-size", 2) == 1  # raised in the reader thread
    assert "disk vanished" in caplog.text and f"{calls[-1]} (" in caplog.text  # the cause and the file
    assert threading.active_count() == threads  # the reader was stopped and joined
    assert out.read_bytes() == b"previous run"
    monkeypatch.setattr(embed, "cropped_volume", real)

    def partial_write(self, path, **kwargs):  # the writer dies after writing some bytes
        Path(path).write_bytes(b"PAR1 half")
        raise OSError("no space left")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", partial_write)
    assert run(cohort, "--weights", ours, "--out", out) == 1
    assert out.read_bytes() == b"previous run"
    assert sorted(os.listdir(tmp_path)) == ["features.parquet"]  # no temp file left


def test_weights_refused_and_bad_arguments(tmp_path, ours, cohort, caplog):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.pth", marker)
    assert run(cohort, "--weights", evil, "--out", tmp_path / "f.csv") == 1
    assert not marker.exists() and not (tmp_path / "f.csv").exists()
    assert "refusing to load" in caplog.text
    assert run(cohort, "--weights", ours, "--out", tmp_path / "f.xlsx") == 1
    assert run(tmp_path / "nowhere", "--weights", ours, "--out", tmp_path / "f.csv") == 1
    with pytest.raises(embed.EmbedError, match="more than once"):
        embed.gather_inputs([cohort, cohort])
    assert embed_inputs.file_id("a/sub-01_mwp1.nii.gz") == "sub-01_mwp1"
    assert embed_inputs.file_id("sub-01.nii") == "sub-01" and embed_inputs.file_id("x.NPY") == "x"


def test_bf16_is_close_but_approximate(tmp_path, ours, cohort):
    exact, approx = tmp_path / "f32.csv", tmp_path / "bf16.csv"
    assert run(cohort, "--weights", ours, "--out", exact) == 0
    assert run(cohort, "--weights", ours, "--out", approx, "--bf16") == 0
    a, b = (read(p).iloc[:, 1:].to_numpy() for p in (exact, approx))
    scale = np.abs(a).max()
    assert np.abs(a - b).max() <= 0.05 * scale
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_embed_subjects_equals_the_eager_forward_bit_for_bit(ours, cohort):
    """Same batches as an eager ``module(x)`` on the stacked images, the last one short (6 = 4 + 2)."""
    module, _ = embed.load_encoder(ours)
    subjects = embed.gather_inputs([cohort])
    _, x = reference_inputs(cohort)
    with torch.no_grad():
        expected = torch.cat([module(x[:4]), module(x[4:])]).numpy()
    features = embed.embed_subjects(module, subjects, batch_size=4, progress=False)
    assert features.dtype == np.float32 and np.array_equal(features, expected)


def test_the_reader_works_ahead_of_the_model(ours, cohort, monkeypatch):
    """While the model encodes batch k the reader thread reads batch k + 1: a serial loop would
    never read subject 3 while the first forward waits for it (the wait below would time out)."""
    module, _ = embed.load_encoder(ours)
    subjects = embed.gather_inputs([cohort])
    real, third_read, waited = embed.cropped_volume, threading.Event(), []

    def reading(path):
        if Path(path) == subjects[2][1]:
            third_read.set()
        return real(path)

    class Waiting(torch.nn.Module):
        def forward(self, x):
            if not waited:
                waited.append(third_read.wait(timeout=30))
            return module(x)

    monkeypatch.setattr(embed, "cropped_volume", reading)
    features = embed.embed_subjects(Waiting(), subjects, batch_size=2, progress=False)
    assert waited == [True] and features.shape == (6, 32)


def test_prefetched_keeps_order_raises_in_place_and_stops_early():
    with embed.prefetched(range(50), depth=2) as items:
        assert list(items) == list(range(50))

    def failing():
        yield from (0, 1)
        raise KeyError("item 2")

    got = []
    with pytest.raises(KeyError, match="item 2"), embed.prefetched(failing()) as items:
        got.extend(items)
    assert got == [0, 1]  # everything before the error arrived, in order
    threads = threading.active_count()
    with embed.prefetched(iter(range(10**9))) as items:  # endless: the consumer leaves early
        assert next(items) == 0
    assert threading.active_count() == threads  # the reader stopped and was joined
