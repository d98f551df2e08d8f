"""``python -m anatcl_core.train`` (and ``torchrun ... -m anatcl_core.train``): one method, one seed."""

from anatcl_core.train.cli import main

main()
