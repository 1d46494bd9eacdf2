"""Datasets: reading sources, deterministic splits, the split table (see table.py)."""
