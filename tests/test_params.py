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

from anatcl_core.config import ConfigError, from_mapping, load_params
from anatcl_core.contrastive.objectives import MethodConfig
from anatcl_core.data.cohort import CohortConfig
from anatcl_core.evaluation.protocol import EvaluateConfig
from anatcl_core.evaluation.references import ReferenceConfig
from anatcl_core.report.build import ReportConfig
from anatcl_core.synth.config import SynthConfig
from anatcl_core.train.recipe import PretrainConfig

REPO = Path(__file__).resolve().parent.parent
PARAMS = load_params(REPO / "params.yaml")
SECTIONS = {"synth": SynthConfig, "cohort": CohortConfig, "pretrain": PretrainConfig, "evaluate": EvaluateConfig,
            "reference": ReferenceConfig, "report": ReportConfig}
#: The sections whose every value lives in params.yaml only (their dataclasses declare no default).
REQUIRED_SECTIONS = ("synth", "cohort", "pretrain", "evaluate", "reference")
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _fields_in_order(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_section_loads_strictly_and_spells_out_every_field(section):
    cls = SECTIONS[section]
    from_mapping(cls, PARAMS[section], f"params.yaml:{section}")
    assert set(PARAMS[section]) == _fields(cls), f"{section}: keys differ from {cls.__name__} fields"


@pytest.mark.parametrize("section", REQUIRED_SECTIONS)
def test_every_field_is_required_so_params_yaml_is_its_one_home(section):
    cls = SECTIONS[section]
    with_default = [f.name for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_default == [], f"{cls.__name__} declares defaults for {with_default}"
    first, last = list(PARAMS[section])[0], list(PARAMS[section])[-1]
    broken = {k: v for k, v in PARAMS[section].items() if k not in (first, last)}
    with pytest.raises(ConfigError) as err:
        from_mapping(cls, broken, f"params.yaml: {section}")
    missing = [name for name in _fields_in_order(cls) if name in (first, last)]  # named in declaration order
    assert str(err.value) == f"params.yaml: {section}: missing key(s) {missing}"


def test_method_keys_keep_their_defaults_as_the_one_home_of_unset_keys():
    yaware = from_mapping(MethodConfig, PARAMS["pretrain"]["methods"]["yaware"], "pretrain.methods.yaware")
    assert "mode" not in PARAMS["pretrain"]["methods"]["yaware"] and yaware.mode == "global"
    assert yaware.denominator == "yaware" and yaware.overrides() == {}


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

    merged = apply_profile(profile, REPO / "params.yaml")
    for section, cls in SECTIONS.items():
        from_mapping(cls, merged[section], f"{profile.name}:{section}")


def test_profile_key_typo_is_an_error(tmp_path):
    from anatcl_core.cli.profile import apply_profile

    (tmp_path / "bad.yaml").write_text("pretrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="pretrain.epoch"):
        apply_profile(tmp_path / "bad.yaml", REPO / "params.yaml")


COMMENTED_PARAMS = """\
# header comment
pretrain:
  run: [a, b]                # which methods
  epochs: 15                 # budget
  learning_rate: 1.0e-4
  hidden_dim: null           # null: feature_dim
  # a comment line inside the section
  methods:
    a: {objective: anatcl, lambda_anat: 1.0}   # method a
    b: {objective: random}

evaluate:
  title: "quoted"
  n_repeats: 2               # outer repeats
  c_grid: [1.0e-3, 1.0]      # logistic C
"""


def test_profile_keeps_comments_and_key_order_and_changes_only_the_overlaid_values(tmp_path):
    from anatcl_core.cli.profile import apply_profile, dump, main

    params, profile = tmp_path / "params.yaml", tmp_path / "profile.yaml"
    params.write_text(COMMENTED_PARAMS)
    profile.write_text("# profile comment, not copied\npretrain:\n  run: [b]   # not copied either\n  epochs: 300\n"
                       "  learning_rate: 3.0e-4\n  hidden_dim: null\n  methods:\n    a: {lambda_anat: 2.0}\n"
                       "evaluate:\n  n_repeats: 5\n  c_grid: [0.5]\n")
    # the command checks every section before writing; this two-section file is refused, untouched
    assert main([str(profile), "--params", str(params)]) == 2
    assert params.read_text() == COMMENTED_PARAMS
    params.write_text(dump(apply_profile(profile, params)))  # the merge the command writes once checked
    expected = (COMMENTED_PARAMS
                .replace("run: [a, b]                #", "run: [b]                   #")
                .replace("epochs: 15                 #", "epochs: 300                #")
                .replace("learning_rate: 1.0e-4", "learning_rate: 3.0e-4")
                .replace("lambda_anat: 1.0}", "lambda_anat: 2.0}")
                .replace("n_repeats: 2 ", "n_repeats: 5 ")
                .replace("c_grid: [1.0e-3, 1.0]      #", "c_grid: [0.5]              #"))
    assert params.read_text() == expected
    assert load_params(params)["pretrain"]["learning_rate"] == 3e-4  # still a number to PyYAML


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_comment_of_params_yaml_survives_every_profile(profile):
    from anatcl_core.cli.profile import apply_profile, dump

    def comments(text: str) -> list[str]:
        return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]

    text = dump(apply_profile(profile, REPO / "params.yaml"))
    assert comments(text) == comments((REPO / "params.yaml").read_text())
    assert [line.split(":")[0] for line in text.splitlines()] == \
        [line.split(":")[0] for line in (REPO / "params.yaml").read_text().splitlines()]  # same keys, same order


def test_merge_of_plain_dicts_gives_the_values_of_the_round_trip():
    from anatcl_core.cli.profile import apply_profile, dump, merge

    profile = REPO / "profiles" / "tiny.yaml"
    merged = merge(PARAMS, load_params(profile))
    assert yaml.safe_load(yaml.safe_dump(merged)) == merged  # plain types: PyYAML writes them
    assert merged == yaml.safe_load(dump(apply_profile(profile, REPO / "params.yaml")))
    assert PARAMS == load_params(REPO / "params.yaml")  # the base is not changed
