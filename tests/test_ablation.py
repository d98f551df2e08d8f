"""Ablation and reliability report sections (anatcl_core.report.ablation) on hand-made probe results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anatcl_core.config import load_params
from anatcl_core.evaluation import reliability
from anatcl_core.report import ablation
from anatcl_core.report.tables import summarise
from conftest import params_section

REPO = Path(__file__).resolve().parent.parent


def _probe(bacc: float, icc: list[float] | None) -> dict:
    out = {"brain_age": {"mae_external": 5.0}, "diagnosis": {"ad": {"balanced_accuracy": bacc},
                                                               "scz": {"balanced_accuracy": bacc + 0.1}},
           "site_held_out": {"mae": 6.0}}
    if icc is not None:
        out["reliability"] = {"available": True, "icc_2_1": icc, "median_icc_2_1": float(np.median([v for v in icc if v is not None])),
                              "q1_icc_2_1": 0.0, "q3_icc_2_1": 1.0, "median_icc_3_1": 0.5, "site_share": 0.1}
    else:
        out["reliability"] = {"available": False, "reason": "no data/travelling/manifest.tsv"}
    return out


def test_status_splits_run_defined_and_undefined_variants():
    status = ablation.ablation_status({"sup": ("a", "b", "c")}, present=["a"], run=["a"], defined=["a", "b"])
    assert (status[0].run, status[0].not_run, status[0].undefined) == (["a"], ["b"], ["c"])
    assert ablation.run_command(["a", "r"], ["b", "a"]) == "dvc exp run -S 'pretrain.run=[a,r,b]'"


def test_variant_summary_is_mean_and_std_over_seeds():
    probes = {("a", 0): _probe(0.6, [0.2, 0.4]), ("a", 1): _probe(0.8, [0.6, 0.8]), ("b", 0): _probe(0.5, None)}
    mean, std = summarise(ablation.variant_metrics(probes), ["a", "b"])
    assert mean.loc["a", "BAcc (mean over tasks)"] == pytest.approx(0.75)  # (0.65 + 0.85) / 2
    assert std.loc["a", "BAcc (mean over tasks)"] == pytest.approx(np.std([0.65, 0.85], ddof=1))
    assert mean.loc["a", "ICC(2,1) median"] == pytest.approx(0.5)
    assert np.isnan(mean.loc["b", "ICC(2,1) median"]) and std.loc["b", "BAcc (mean over tasks)"] == 0


def test_reliability_table_and_distribution_include_the_descriptor_reference():
    rng = np.random.default_rng(0)
    subject = rng.normal(size=(6, 1, 5))
    reference = subject + 0.01 * rng.normal(size=(6, 3, 5))  # nearly perfectly reproducible
    probes = {("a", 0): _probe(0.6, [0.1, None, 0.3])}
    table = ablation.reliability_table(probes, ["a"], reference)
    assert list(table.index) == ["a", ablation.DESCRIPTORS]
    assert float(table.loc[ablation.DESCRIPTORS, "ICC(2,1) median"]) > 0.99
    dist = ablation.icc_distributions(probes, 0, reference)
    assert len(dist[dist["method"] == "a"]) == 2  # the constant (None) dimension is dropped
    assert np.allclose(dist.loc[dist["method"] == ablation.DESCRIPTORS, "icc_2_1"],
                       reliability.icc(reference, "2,1"))


def test_declared_ablations_name_methods_or_are_reported_undefined():
    params = load_params(REPO / "params.yaml")
    config = params_section("report")
    defined = set(params["pretrain"]["methods"])
    assert "supervision" in config.ablations
    assert set(config.ablations["supervision"]) <= defined  # the default ablation runs today
    assert set(config.ablations["supervision"]) & set(params["pretrain"]["run"]) >= {
        "anatcl_global", "anatcl_local", "anatomy_only", "yaware"}
    profile = load_params(REPO / "profiles" / "ablations.yaml")["pretrain"]["run"]
    every = {v for vs in config.ablations.values() for v in vs if v in defined}
    assert every <= set(profile) and set(profile) <= defined
