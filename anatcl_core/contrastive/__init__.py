"""The method's mathematics: subject kernels (age RBF, anatomy, SimCLR, labels), weighted InfoNCE and
the AnatCL loss next to their equations (REFERENCE §1.1), and each pretraining method's objective.

May import: the foundations and ``anatcl_core.data`` (descriptor channel names). No model, no I/O.
"""
