"""The report stage: the paper's tables and figures from the stage outputs, the claims, the
ablations, ``report.html``, and the tidy tables of ``notebooks/explore.py``.

May import every package above it except ``cli``. Figures are plain matplotlib Figures, drawn
without pyplot and saved by :mod:`anatcl_core.report.figures`; no module chooses a backend.
"""
