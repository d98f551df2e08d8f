"""``python -m anatcl_core.train`` (and ``torchrun ... -m anatcl_core.train``): one method, one seed."""

from anatcl_core.train.loop import main

main()
