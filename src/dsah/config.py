"""params.yaml: loading, checking, and knowing which keys were read.

params.yaml is the only place a default lives: the config types below and beside each stage's library
code (TrainConfig, LAEConfig, ...) declare fields and types, never values. A key missing from the file
is an error naming it, and so is an unknown key, a wrong type or an out-of-range value, before any work
starts. `Params` records every key it hands out, so a stage's `params:` in dvc.yaml can be checked
against what the stage really reads (tests/test_dvc_deps.py).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dsah.errors import ConfigError

DATASETS = ("cifar10", "coco", "nuswide21", "cifar10-mosaic", "folder")
# The method registry: every method's name and how it learns. Stages choose their path by these names
# without importing torch; dsah.methods implements each (tests/test_methods.py fails on a missing one).
DEEP_METHODS = ("dsah", "adsh", "daph", "hashnet", "dnnh")  # learn from images (dsah.train)
CLASSIC_METHODS = ("itq", "sdh", "ksh")                     # learn on fixed features (dsah.features)
METHODS = DEEP_METHODS + CLASSIC_METHODS
LAE_METHODS = ("dsah",)                                     # use the label auto-encoder
MIN_BITS, MAX_BITS = 8, 128
# The top level of params.yaml: each stage reads its own sections (dvc.yaml says which).
TOP_LEVEL = ("dataset", "bits", "method", "seed", "split_seed", "prepare", "images", "train_lae", "train_imgnet",
             "methods", "features", "encode", "evaluate")

T = TypeVar("T")


class Params:
    """params.yaml as plain data. Every value handed out is recorded (dotted keys, leaves only) in
    `read`: what a stage read is what its `params:` in dvc.yaml must list."""

    def __init__(self, data: dict[str, Any], source: str = "params.yaml"):
        self.data, self.source = data, source
        self.read: set[str] = set()

    def _node(self, dotted: str) -> Any:
        node: Any = self.data
        for depth, part in enumerate(dotted.split(".")):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(dotted.split(".")[:depth + 1])
                raise ConfigError(f"{where}: missing from {self.source} (every key is set there; the code "
                                  "holds no defaults)")
            node = node[part]
        return node

    def value(self, dotted: str, kind: type | None = None) -> Any:
        """One value, type-checked when `kind` is given."""
        value = _checked(dotted, self._node(dotted), kind) if kind is not None else self._node(dotted)
        self.read.add(dotted)
        return copy.deepcopy(value)

    def section(self, dotted: str, schema: type[T], nested: tuple[str, ...] = ()) -> T:
        """A mapping read into the dataclass `schema`: every field must be set, no other key may be
        (but the names in `nested`, sub-sections read on their own), each with the field's type."""
        node = self._node(dotted)
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: expected a mapping, got {type(node).__name__}")
        types = typing.get_type_hints(schema)
        names = [f.name for f in dataclasses.fields(schema)]
        unknown = sorted(set(node) - set(names) - set(nested))
        if unknown:
            raise ConfigError(f"{dotted}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
        missing = [name for name in names if name not in node]
        if missing:
            raise ConfigError(f"{dotted}.{missing[0]}: missing from {self.source} (every key is set there; "
                              "the code holds no defaults)")
        values = {name: _checked(f"{dotted}.{name}", node[name], types[name]) for name in names}
        self.read.update(f"{dotted}.{name}" for name in names)
        return schema(**values)

    def tree(self, dotted: str) -> Any:
        """A whole sub-tree as plain data (for showing it, e.g. in the report): all its leaves are read."""
        node = self._node(dotted)
        self.read.update(leaves(node, dotted))
        return copy.deepcopy(node)


def leaves(node: Any, prefix: str) -> list[str]:
    """Dotted paths of the leaves under `node` (itself, when it is not a mapping)."""
    if not isinstance(node, dict) or not node:
        return [prefix]
    return [leaf for key, child in node.items() for leaf in leaves(child, f"{prefix}.{key}")]


def _checked(dotted: str, value: Any, kind: type) -> Any:
    """`value` as `kind` (int, float, str, bool or a list of one of them; an int is a float too), or a
    ConfigError naming the key."""
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{dotted}: expected a list, got {value!r} ({type(value).__name__})")
        (item,) = typing.get_args(kind)
        return [_checked(f"{dotted}[{k}]", v, item) for k, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{dotted}: expected {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml as plain data (never executes YAML tags) and check the top level."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:  # includes tags that would construct objects: data stays data
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    check_top_level(data, path.name)
    return Params(data, path.name)


def check_top_level(params: dict[str, Any], source: str = "params.yaml") -> None:
    """The top-level values every stage relies on. Checking them does not count as reading them."""
    unknown = sorted(set(params) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; known: {', '.join(TOP_LEVEL)}")
    for key in ("dataset", "method", "bits", "seed", "split_seed"):
        if key not in params:
            raise ConfigError(f"{key}: missing from {source} (every key is set there; the code holds no defaults)")
    dataset = params["dataset"]
    if dataset not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    method = params["method"]
    if method not in METHODS:
        raise ConfigError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    bits = params["bits"]
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits: {bits!r} is out of range; use an integer from {MIN_BITS} to {MAX_BITS}")
    for key in ("seed", "split_seed"):
        value = params[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{key}: {value!r} must be a non-negative integer")
