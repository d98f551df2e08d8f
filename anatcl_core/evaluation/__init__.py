"""What a frozen encoder is worth: features, linear probes (diagnosis, scores, brain age, site),
metrics with bootstrap intervals, unseen-site and few-label transfer, cross-scanner reliability,
representation analyses, reference feature sets, and ``anatcl embed`` for one's own scans.

May import: the foundations, ``data``, ``contrastive``, ``model`` and ``train`` (a run's recipe).
"""
