"""``python -m anatcl_core.cli``: the ``anatcl`` command without the installed script."""

import sys

from anatcl_core.cli.main import main

sys.exit(main())
