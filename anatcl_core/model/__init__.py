"""The network and its trained weights: 3D ResNet and projection head (``network``), upstream's
``AnatCL`` class (``upstream``), the run record (``run``), trained models saved, loaded and
inspected (``trained``), checkpoint files read safely (``checkpoint``, ``allowlist``), the
released-weights registry and cache (``registry``, ``weights``).

May import: the foundations (``anatcl_core.config``, ``atomic``, ``project``, ``cores``),
``anatcl_core.data`` and ``anatcl_core.contrastive`` (a run's method settings). Nothing here
knows how a model is trained.
"""
