"""Cohort layouts, readers and validation (OpenBHB per-subject layout; CAT12 manifests)."""
