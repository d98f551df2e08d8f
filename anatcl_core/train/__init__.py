"""Pretraining of one (method, seed): the recipe, the loop, checkpoints and resume, ``torchrun``.

``python -m anatcl_core.train`` runs one outside DVC (also under ``torchrun``).
May import: the foundations, ``data``, ``contrastive`` and ``model``.
"""
