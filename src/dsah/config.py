"""params.yaml: loading and checking.

Each stage reads only its own keys, but every value it reads is checked here, so a typo or an
out-of-range value fails before any work starts, with a message that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dsah.errors import ConfigError

DATASETS = ("cifar10", "coco", "nuswide21", "cifar10-mosaic")
DEEP = ("dsah", "adsh", "daph", "hashnet", "dnnh")  # learn from images (dsah.train)
CLASSIC_METHODS = ("itq", "sdh", "ksh")                # learn on fixed features (dsah.features)
METHODS = DEEP + CLASSIC_METHODS
LAE_METHODS = ("dsah",)                                # use the label auto-encoder
MIN_BITS, MAX_BITS = 8, 128


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as plain data (never executes YAML tags) and check the top-level keys."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    try:
        params = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:  # includes tags that would construct objects: data stays data
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    check_top_level(params)
    return params


def check_top_level(params: dict[str, Any]) -> None:
    dataset = params.get("dataset")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    method = params.get("method")
    if method not in METHODS:
        raise ConfigError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    bits = params.get("bits")
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits: {bits!r} is out of range; use an integer from {MIN_BITS} to {MAX_BITS}")
    for key in ("seed", "split_seed"):
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{key}: {value!r} must be a non-negative integer")


def section(params: dict[str, Any], dotted: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Return params[dotted] merged over defaults, refusing unknown keys and changed types.

    Defaults define the schema: an int default accepts an int, a str default a str, and so on.
    """
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params: missing section {dotted!r}")
        node = node[part]
    node = node or {}
    if not isinstance(node, dict):
        raise ConfigError(f"{dotted}: expected a mapping, got {type(node).__name__}")
    unknown = sorted(set(node) - set(defaults))
    if unknown:
        raise ConfigError(f"{dotted}: unknown key(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    merged = dict(defaults)
    for key, value in node.items():
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{dotted}.{key}: expected {expected.__name__}, got {value!r} ({type(value).__name__})"
            )
        merged[key] = value
    return merged
