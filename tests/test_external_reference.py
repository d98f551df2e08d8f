"""A BrainFMBench extractor folder as a reference row of the tiny pipeline (params.yaml ``reference.external``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ran

from anatcl_core.config import ConfigError
from anatcl_core.evaluation import external

TOY_EXTRACT = '''
import csv, os
import nibabel as nib
import numpy as np


def extract(input_dir, output_csv, weights_dir):
    """Four intensity statistics of each map: a toy encoder of the contract."""
    with open(output_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "f0", "f1", "f2", "f3"])
        for sid in sorted(os.listdir(input_dir)):
            v = nib.load(os.path.join(input_dir, sid, "normalized.nii.gz")).get_fdata()
            writer.writerow([sid, v.mean(), v.std(), (v > 0.3).mean(), np.percentile(v, 90)])
'''


def write_toy(folder):
    folder.mkdir(parents=True)
    (folder / "extract.py").write_text(TOY_EXTRACT)
    (folder / "model.yaml").write_text(yaml.safe_dump({
        "name": "toy statistics", "authors": ["T"], "preprocessing": "cat12", "embedding_dim": 4,
        "datasets": ["NKI"], "tasks": ["age", "sex"], "weightless": True}))
    (folder / "weights.txt").write_text("")
    (folder / "requirements.txt").write_text(f"numpy=={np.__version__}\nnibabel=={nibabel.__version__}\n")
    return folder


@pytest.mark.slow
def test_an_external_extractor_is_a_reference_row_with_paired_cis(tiny_pipeline, tmp_path):
    root = tmp_path / "workspace"
    shutil.copytree(tiny_pipeline.root, root, symlinks=True)
    toy = write_toy(tmp_path / "models" / "toy")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["reference"]["external"] = {"toy": str(toy)}
    params["reference"]["run"] = [*params["reference"]["run"], "toy"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**tiny_pipeline.env, "DVC_SITE_CACHE_DIR": str(root / ".dvc_site")}
    done = subprocess.run([sys.executable, "-m", "anatcl_core.cli.pipeline", "--jobs", "2"], cwd=root, env=env,
                          text=True, capture_output=True, timeout=900)
    logs = "".join(p.read_text() for p in sorted((root / "outputs" / "logs").glob("*.log")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {"reference@toy", "report"} <= ran(done.stdout + logs)
    probes = json.loads((root / "outputs/reference/toy/probes.json").read_text())
    assert probes["method"] == "ref_toy" and probes["feature_dim"] == 4 and probes["external"]["name"] == "toy statistics"
    assert probes["brain_age"]["mae_internal"] > 0 and probes["diagnosis"]
    paired = pd.read_csv(root / "outputs/report/tables/paired_vs_random.tsv", sep="\t", index_col=0)
    row = paired.loc["ref_toy"].dropna()
    assert len(row) and all("[" in str(v) and "]" in str(v) for v in row)  # difference [lo, hi]
    headline = json.loads((root / "outputs/report/metrics.json").read_text())
    assert "ref_toy" in headline


def test_an_external_row_is_probed_and_paired_like_every_reference_row(tmp_path):
    """Without the whole pipeline: the tiny cohort's arrays, the reference stage's function, the report's pairs."""
    from conftest import TINY, params_section

    from anatcl_core.config import from_mapping
    from anatcl_core.data import stacking
    from anatcl_core.evaluation import references
    from anatcl_core.report import claims
    from anatcl_core.synth.config import SynthConfig
    from anatcl_core.synth.generate import synthesize

    synth = {**__import__("conftest").params_mapping("synth"), **TINY["synth"]}
    synthesize(from_mapping(SynthConfig, synth, "tiny synth"), tmp_path / "data", progress=False)
    stacking.write_arrays(tmp_path / "data", tmp_path / "arrays", progress=False)
    toy = write_toy(tmp_path / "models" / "toy")
    config = params_section("reference", run=["age_sex", "toy"], external={"toy": str(toy)})
    eval_config = params_section("evaluate", **TINY["evaluate"])
    results = {name: references.evaluate_reference(name, config, eval_config, tmp_path / "arrays", tmp_path / name)
               for name in ("age_sex", "toy")}
    assert results["toy"]["method"] == "ref_toy" and results["toy"]["feature_dim"] == 4
    assert results["toy"]["diagnosis"] and results["toy"]["brain_age"]["mae_internal"] > 0
    predictions = claims.load_predictions({f"ref_{n}": [tmp_path / n] for n in results})
    pairs = claims.paired_against(predictions, "ref_age_sex", n_bootstrap=50)
    entry = pairs["ref_toy"]["loso_mean"]
    assert entry["ci"][0] <= entry["difference"] <= entry["ci"][1]  # a paired difference with its CI


def test_external_rows_are_declared_rules(tmp_path):
    from conftest import params_section

    with pytest.raises(ConfigError, match="neither a built-in reference"):
        params_section("reference", run=["descriptors", "toy"])
    with pytest.raises(ConfigError, match="reuse built-in reference names"):
        params_section("reference", run=["descriptors"], external={"descriptors": "x"})
    config = params_section("reference", run=["toy"], external={"toy": str(tmp_path)})
    assert config.external == {"toy": str(tmp_path)}


def test_external_features_are_the_extractors_numbers_in_the_cohorts_order(tmp_path):
    from anatcl_core.data import arrays, layout

    rng = np.random.default_rng(0)
    images = rng.random((3, 1, *layout.grid_shape(9.0))).astype(np.float32)
    table = pd.DataFrame({"participant_id": ["0003", "0001", "0002"]})
    cohort = arrays.Cohort(images, table, np.zeros((3, 7, 68), np.float32))
    x, meta = external.external_features(write_toy(tmp_path / "toy"), {"downstream": cohort}, progress=False)
    expected = np.array([[v.mean(), v.std(), (v > 0.3).mean(), np.percentile(v, 90)] for v in images[:, 0]])
    assert meta["embedding_dim"] == 4
    np.testing.assert_allclose(x["downstream"], expected, rtol=1e-6)  # NIfTI float32 round trip
