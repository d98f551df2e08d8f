"""Trained encoders in other benchmarks' contracts: BrainFMBench submissions and their checker."""
