"""DSAH: deep semantic asymmetric hashing for image retrieval.

The library core imports without dvc, prefect or great_expectations: those are only needed by the
pipeline stages, the flows and the validation module.
"""

__version__ = "0.1.0"
