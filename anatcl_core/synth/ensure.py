"""Make sure ``data/`` holds the cohort that ``data.dvc`` records, generating it when missing.

This is the first half of ``make repro`` (``dvc repro`` is the second). ``data/`` is raw input to the
pipeline, versioned by ``data.dvc`` rather than produced by a stage, so that a user can swap in a
real OpenBHB copy with ``dvc add data``. The embedded default is deterministic, so a fresh clone
regenerates exactly the bytes ``data.dvc`` records and ``dvc status`` is clean without any remote:

    data/ missing                 -> generate it from params.yaml ``synth:``, then check it
    data/ present                 -> check it (a user's OpenBHB copy passes once ``dvc add``-ed)
    data/ differs from data.dvc   -> stop, saying how to regenerate (``--update``) or restore it

``--update`` regenerates ``data/`` from scratch and records it with ``dvc add`` (after a change of the
generator or of ``synth:``); commit the new ``data.dvc`` with that change.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from anatcl_core.atomic import exit_on_signals, folder_set_aside
from anatcl_core.config import ConfigError
from anatcl_core.project import use_site_cache

logger = logging.getLogger(__name__)


class DataMismatchError(RuntimeError):
    """``data/`` does not hold what ``data.dvc`` records."""


def dvc_changed(dvc_file: Path) -> dict:
    """Outputs of one ``.dvc`` file whose workspace copy differs from what it records.

    ``dvc status`` also reports outputs that match but are not in the local cache yet ("not in
    cache": a fresh clone that regenerated ``data/``); those are fine, ``dvc repro`` caches them.

    Returns:
        ``{output path: status}`` for the outputs that really differ (empty when all match).
    """
    from dvc.repo import Repo

    use_site_cache(dvc_file.resolve().parent)
    with Repo(str(dvc_file.resolve().parent)) as repo:
        status = repo.status(targets=[str(dvc_file.resolve())])
    changed = {}
    for entries in status.values():
        for entry in entries:
            for path, state in (entry.get("changed outs", {}) if isinstance(entry, dict) else {}).items():
                if state != "not in cache":
                    changed[path] = state
    return changed


def dvc_add(data_dir: Path) -> None:
    """Record ``data_dir`` in its ``.dvc`` file (and the DVC cache), as ``dvc add`` does."""
    from dvc.repo import Repo

    use_site_cache(data_dir.resolve().parent)
    with Repo(str(data_dir.resolve().parent)) as repo:
        repo.add(str(data_dir.resolve()))


def generate(params: Path, data_dir: Path) -> None:
    """Write the synthetic cohort of ``params``'s ``synth:`` section into ``data_dir`` (must not exist)."""
    from anatcl_core.config import load_section
    from anatcl_core.synth import SynthConfig, synthesize

    config = load_section(params, "synth", SynthConfig)
    logger.info("generating the embedded synthetic cohort into %s", data_dir)
    synthesize(config, data_dir, progress=True)


def _regenerate(params: Path, data_dir: Path) -> None:
    """Generate ``data_dir`` anew; the old one is set aside and comes back if that fails or is refused."""
    with folder_set_aside(data_dir):
        generate(params, data_dir)


def ensure(params: Path, data_dir: Path, dvc_file: Path, update: bool = False) -> str:
    """Bring ``data_dir`` in line with ``dvc_file``; returns what was done (for the log).

    Raises:
        DataMismatchError: if ``data_dir`` differs from what ``dvc_file`` records (and not ``update``).
        FileNotFoundError: if ``dvc_file`` is missing and ``update`` is not set.
        ConfigError: a ``synth:`` value that breaks its rule, when the cohort is to be generated
            (``data_dir`` is then left as it was).
    """
    if update:
        _regenerate(params, data_dir)
        dvc_add(data_dir)
        return f"regenerated {data_dir} and recorded it in {dvc_file}: commit {dvc_file}"
    if not dvc_file.exists():
        raise FileNotFoundError(f"{dvc_file} not found: run with --update to generate and record {data_dir}")
    action = "checked"
    if not data_dir.exists():
        generate(params, data_dir)
        action = "generated and checked"
    changed = dvc_changed(dvc_file)
    if changed:
        raise DataMismatchError(
            f"{data_dir}/ differs from what {dvc_file} records ({changed}).\n"
            f"  - after changing params.yaml `synth:` or the generator: `make data-update`, then commit {dvc_file};\n"
            f"  - with your own data (e.g. OpenBHB) under {data_dir}/: `dvc add {data_dir}` and commit {dvc_file};\n"
            f"  - to get back the recorded version: `dvc pull {dvc_file}` from your remote, or delete {data_dir}/ "
            "to regenerate the embedded default."
        )
    return f"{action} {data_dir}: it matches {dvc_file}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anatcl_core.synth.ensure", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--dvc-file", type=Path, default=Path("data.dvc"))
    parser.add_argument("--update", action="store_true", help="regenerate data/ and re-record data.dvc")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    exit_on_signals()  # SIGTERM removes the partial cohort folder, as Ctrl-C does
    try:
        logger.info(ensure(args.params, args.data, args.dvc_file, update=args.update))
    except (DataMismatchError, FileNotFoundError, ConfigError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
