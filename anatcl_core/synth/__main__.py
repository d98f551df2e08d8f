"""``python -m anatcl_core.synth --params params.yaml --out DIR``: generate the synthetic benchmark."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from anatcl_core.config import ConfigError, load_section
from anatcl_core.synth.config import SynthConfig


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load params.yaml ``synth:`` and write the cohort; returns an exit status."""
    parser = argparse.ArgumentParser(prog="python -m anatcl_core.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (synth: section)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_section(args.params, "synth", SynthConfig)
    except ConfigError as err:
        logging.getLogger(__name__).error("%s", err)
        return 2
    from anatcl_core.synth.generate import synthesize

    try:
        synthesize(config, args.out, progress=not args.no_progress)
    except FileExistsError as err:
        logging.getLogger(__name__).error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
