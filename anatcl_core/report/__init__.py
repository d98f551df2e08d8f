"""The report stage: the paper's tables and figures from the stage outputs, the claims, the
ablations, ``report.html``, and the tidy tables of ``notebooks/explore.py``.

May import every package above it except ``cli``; only the drawing modules import matplotlib.
"""
