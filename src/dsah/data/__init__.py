"""Datasets: finding sources (sources, checksums, downloads, archives), reading each layout, deterministic
splits, the split table (see table.py), the image store, and validating the splits (validation)."""
