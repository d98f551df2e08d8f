"""params.yaml <-> the config dataclasses, and the params each stage declares in dvc.yaml.

Every section loads strictly into its dataclass; every field is written in params.yaml (each
tunable value is there exactly once, none falls back to a hidden default); an unknown key is an
error; each pretraining stage declares the shared recipe key by key plus only its own method's
block, so editing one method reruns only that method.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from anatcl_core.data.cohort import CohortConfig
from anatcl_core.config import ConfigError, from_mapping, load_params
from anatcl_core.evaluation.evaluate import EvaluateConfig
from anatcl_core.contrastive.objectives import MethodConfig
from anatcl_core.report.build import ReportConfig
from anatcl_core.train.loop import PretrainConfig

REPO = Path(__file__).resolve().parent.parent
PARAMS = load_params(REPO / "params.yaml")
SECTIONS = {"cohort": CohortConfig, "pretrain": PretrainConfig, "evaluate": EvaluateConfig,
            "report": ReportConfig}
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_section_loads_strictly_and_spells_out_every_field(section):
    cls = SECTIONS[section]
    from_mapping(cls, PARAMS[section], f"params.yaml:{section}")
    assert set(PARAMS[section]) == _fields(cls), f"{section}: keys differ from {cls.__name__} fields"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_unknown_key_is_an_error(section):
    broken = copy.deepcopy(PARAMS[section])
    broken["not_a_key"] = 1
    with pytest.raises(ConfigError, match="not_a_key"):
        from_mapping(SECTIONS[section], broken, section)


def test_every_method_block_is_complete_and_strict():
    for name, block in PARAMS["pretrain"]["methods"].items():
        from_mapping(MethodConfig, block, f"pretrain.methods.{name}")
        broken = {**block, "lamda_age": 1.0}
        with pytest.raises(ConfigError, match="lamda_age"):
            from_mapping(MethodConfig, broken, name)
    with pytest.raises(ConfigError):
        from_mapping(PretrainConfig, {**PARAMS["pretrain"], "epochs": "20"}, "pretrain")


def test_default_profile_runs_every_required_method_with_three_seeds():
    run = set(PARAMS["pretrain"]["run"])
    assert {"anatcl_global", "anatcl_local", "yaware", "simclr", "supervised", "anatomy_only", "random"} <= run
    assert len(PARAMS["pretrain"]["seeds"]) >= 3
    assert {"expw", "threshold"} <= set(PARAMS["pretrain"]["methods"])  # the ablation set stays defined
    methods = PARAMS["pretrain"]["methods"]
    assert methods["anatcl_global"]["lambda_anat"] == methods["anatcl_global"]["lambda_age"] == 1.0
    assert methods["anatomy_only"]["lambda_age"] == 0.0 and methods["yaware"]["lambda_anat"] == 0.0


def test_pretrain_stages_declare_the_recipe_and_only_their_method():
    recipe = _fields(PretrainConfig) - {"methods", "run", "seeds"}
    for stage in ("pretrain",):
        declared = STAGES[stage]["params"]
        keys = {p.removeprefix("pretrain.") for p in declared if p != "pretrain.methods.${item.method}"}
        assert "pretrain.methods.${item.method}" in declared
        assert keys == recipe
        assert "pretrain" not in declared and "pretrain.methods" not in declared


def test_other_stages_declare_their_own_section():
    assert STAGES["cohort"]["params"] == ["cohort"]
    assert STAGES["evaluate"]["params"] == ["evaluate"]
    assert set(STAGES["report"]["params"]) == {"report", "pretrain.run", "pretrain.seeds", "pretrain.methods",
                                                "pretrain.epochs", "reference.run"}


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_profiles_merge_into_valid_parameters(profile):
    from anatcl_core.cli.profile import apply_profile
    from anatcl_core.synth.config import SynthConfig

    merged = apply_profile(profile, REPO / "params.yaml")
    for section, cls in {**SECTIONS, "synth": SynthConfig}.items():
        from_mapping(cls, merged[section], f"{profile.name}:{section}")


def test_profile_key_typo_is_an_error(tmp_path):
    from anatcl_core.cli.profile import apply_profile

    (tmp_path / "bad.yaml").write_text("pretrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="pretrain.epoch"):
        apply_profile(tmp_path / "bad.yaml", REPO / "params.yaml")
