"""The strict params loader: a typo or a wrong type is an error, never a silent default."""

from dataclasses import field
from typing import Literal

import pytest

from anatcl_core.config import ConfigError, Positive, from_mapping, load_params, load_section, section


@section
class Inner:
    sigma_years: Positive = 2.0


@section
class Section:
    temperature: float = 0.1
    epochs: int = 3
    method: Literal["yaware", "expw", "threshold"] = "yaware"
    channels: tuple[str, ...] = ("CT", "GMV", "SA")
    lr: float | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_values():
    cfg = from_mapping(Section, {"temperature": 0.5, "channels": ["CT"], "inner": {"sigma_years": 5}}, "s")
    assert cfg.temperature == 0.5 and cfg.epochs == 3
    assert cfg.channels == ("CT",)  # a YAML list becomes the declared tuple
    assert cfg.inner == Inner(sigma_years=5.0) and isinstance(cfg.inner.sigma_years, float)
    assert from_mapping(Section, None, "s") == Section()


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"temprature": 0.1}, "s: unknown key(s) ['temprature']"),
        ({"epochs": "3"}, "s.epochs = '3': expected an integer"),
        ({"epochs": 3.0}, "s.epochs = 3.0: expected an integer"),
        ({"epochs": True}, "s.epochs = True: expected an integer, not a boolean"),
        ({"method": "simclr"}, "s.method = 'simclr': expected one of 'yaware', 'expw' or 'threshold'"),
        ({"channels": "CT"}, "s.channels = 'CT': expected a list"),
        ({"inner": {"sigma": 1.0}}, "s.inner: unknown key(s) ['sigma']"),
        ({"inner": {"sigma_years": 0}}, "s.inner.sigma_years = 0: expected > 0"),
        ({"temperature": float("nan")}, "s.temperature = nan: expected a finite number"),
        ({"lr": "fast"}, "s.lr = 'fast': expected a number"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_values_name_the_key(mapping, fragment):
    with pytest.raises(ConfigError) as err:
        from_mapping(Section, mapping, "s")
    assert fragment in str(err.value)


@section
class Required:
    """A section as the params sections are declared: no defaults, so every key must be given."""

    temperature: Positive
    epochs: int
    inner: Inner


def test_a_key_declared_without_default_must_be_given():
    with pytest.raises(ConfigError) as err:
        from_mapping(Required, {"epochs": 3, "inner": {}}, "params.yaml: pretrain")
    assert str(err.value) == "params.yaml: pretrain: missing key(s) ['temperature']"
    with pytest.raises(ConfigError) as err:
        from_mapping(Required, None, "s")
    assert str(err.value) == "s: missing key(s) ['temperature', 'epochs', 'inner']"
    with pytest.raises(ConfigError) as err:
        from_mapping(Required, {"temprature": 0.1, "epochs": 3, "inner": {}}, "s")
    assert str(err.value) == "s: unknown key(s) ['temprature']; s: missing key(s) ['temperature']"


def test_load_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pretrain:\n  temperature: 0.2\nother: {}\n")
    assert load_section(path, "pretrain", Section).temperature == 0.2
    with pytest.raises(ConfigError, match="no section 'evaluate'"):
        load_section(path, "evaluate", Section)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_duplicate_keys_and_non_utf8_files_are_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pretrain:\n  temperature: 0.2\n  temperature: 0.5\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'temperature' \(first on line 2"):
        load_params(path)
    path.write_bytes("pretrain:\n  title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_params(path)


def test_constructing_in_code_checks_the_same_rules():
    with pytest.raises(ValueError, match="greater than 0"):
        Inner(sigma_years=0)
    assert Inner(sigma_years=1).sigma_years == 1.0
