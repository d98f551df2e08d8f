"""The strict params loader: a typo or a wrong type is an error, never a silent default."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from anatcl_core.config import ConfigError, from_mapping, load_params, load_section


@dataclass(frozen=True)
class Inner:
    sigma_years: float = 2.0


@dataclass(frozen=True)
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
        ({"temprature": 0.1}, "unknown key(s) ['temprature']"),
        ({"epochs": "3"}, "s.epochs: expected int"),
        ({"epochs": True}, "boolean"),
        ({"method": "simclr"}, "expected one of"),
        ({"channels": "CT"}, "expected a list"),
        ({"inner": {"sigma": 1.0}}, "s.inner: unknown key(s) ['sigma']"),
        ({"lr": "fast"}, "s.lr"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_values_name_the_key(mapping, fragment):
    with pytest.raises(ConfigError) as err:
        from_mapping(Section, mapping, "s")
    assert fragment in str(err.value)


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
