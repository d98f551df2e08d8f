"""Every section of ``params.yaml`` and its dataclass: a whole parameter file checked at once.

Each stage loads only its own section (:func:`anatcl_core.config.load_section`); a tool that writes
the whole file (:mod:`anatcl_core.cli.profile`) checks every section here first, with the same
declared rules, so that no stage later finds a value it would have refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from anatcl_core.config import ConfigError, from_mapping

#: section -> ``module:class`` of its dataclass (imported when checked: the classes pull in torch).
SECTIONS = {
    "synth": "anatcl_core.synth.config:SynthConfig",
    "cohort": "anatcl_core.data.cohort:CohortConfig",
    "pretrain": "anatcl_core.train.recipe:PretrainConfig",
    "evaluate": "anatcl_core.evaluation.protocol:EvaluateConfig",
    "reference": "anatcl_core.evaluation.references:ReferenceConfig",
    "report": "anatcl_core.report.build:ReportConfig",
}


def section_class(name: str) -> type:
    """The dataclass of section ``name`` (a key of :data:`SECTIONS`)."""
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_params(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate every section of a parsed parameter file; returns ``{section: dataclass}``.

    Args:
        params: the parsed file (:func:`anatcl_core.config.parse_params`).
        where: the file's name for error messages.

    Raises:
        ConfigError: a section missing or unknown, or the first section that breaks a rule, in one
            line naming the key (``<where>: pretrain.epochs = '15': expected an integer``).
    """
    unknown = sorted(set(params) - set(SECTIONS))
    missing = [name for name in SECTIONS if name not in params]
    if unknown or missing:
        listed = [f"unknown section(s) {unknown}"] * bool(unknown) + [f"missing section(s) {missing}"] * bool(missing)
        raise ConfigError(f"{where}: {'; '.join(listed)}; expected {list(SECTIONS)}")
    return {name: from_mapping(section_class(name), params[name], f"{where}: {name}") for name in SECTIONS}
