"""The command line: ``anatcl`` (``main``), the stage runner (papermill), the parallel
``make repro`` pipeline, parameter profiles, the PyTorch build check, ``anatcl compare`` (are two
runs' results bit-identical?).

May import every other package; no other package imports this one (the rules of the commands'
arguments, which the commands' own modules check, are a foundation: ``anatcl_core.arguments``).
"""
