"""params.yaml: loading, checking, and knowing which keys were read.

params.yaml is the only place a default lives: the config types below and beside each stage's library
code (TrainConfig, LAEConfig, ...) declare fields, types and what values are allowed, never the values.
A field is declared as `Annotated[<type>, <allowed>]` with one of the `Allowed` kinds below (a `Range`,
`OneOf`, `FilePath` or `Text`), so a key missing from the file is an error naming it, and so is an
unknown key, a wrong type or a value out of range: one line that names the key, the value and what is
allowed, when the key's section is read, before any work. `Params` records every key it hands out, so a
stage's `params:` in dvc.yaml can be checked against what the stage really reads (tests/test_dvc_deps.py);
dsah.schema knows every section's type and checks the whole file at once (the sources stage, first in
the pipeline, does so before any stage's output is touched).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

from dsah.errors import ConfigError

DATASETS = ("cifar10", "coco", "nuswide21", "cifar10-mosaic", "cifar10-scenes", "folder")
# The method registry: every method's name and how it learns. Stages choose their path by these names
# without importing torch; dsah.methods implements each (tests/test_methods.py fails on a missing one).
DEEP_METHODS = ("dsah", "adsh", "daph", "hashnet", "dnnh")  # learn from images (dsah.training.loop)
CLASSIC_METHODS = ("itq", "sdh", "ksh")                     # learn on fixed features (dsah.nets.features)
METHODS = DEEP_METHODS + CLASSIC_METHODS
LAE_METHODS = ("dsah",)                                     # use the label auto-encoder
MIN_BITS, MAX_BITS = 8, 128

T = TypeVar("T")


class Allowed:
    """What a param may hold beyond its type. A value it refuses gets "<key>: <value> is <problem>;
    allowed: <describe()>"."""

    problem = "not allowed"

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self, kind: type) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Range(Allowed):
    """A number from `low` to `high` (either may be open-ended; `above` makes `low` itself excluded), or
    one of the values in `also` (e.g. 0 for "its own")."""

    problem = "out of range"

    low: float | None = None
    high: float | None = None
    above: bool = False
    also: tuple = ()

    def allows(self, value: Any) -> bool:
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, kind: type) -> str:
        what = "an integer" if kind is int else "a number"
        low = _number(self.low, kind)
        if self.low is not None and self.high is not None:
            text = (f"{what} above {low} and at most {_number(self.high, kind)}" if self.above
                    else f"{what} from {low} to {_number(self.high, kind)}")
        elif self.low is not None:
            text = f"{what} {'>' if self.above else '>='} {low}"
        elif self.high is not None:
            text = f"{what} <= {_number(self.high, kind)}"
        else:
            text = f"any finite {what[3:] if kind is int else 'number'}"
        return " or ".join([*(repr(v) for v in self.also), text])


def _number(value: float | None, kind: type) -> str:
    return str(int(value)) if kind is int and value is not None else f"{value:g}"


@dataclasses.dataclass(frozen=True)
class OneOf(Allowed):
    """One of a fixed list of names."""

    problem = "unknown"

    choices: tuple[str, ...]

    def allows(self, value: Any) -> bool:
        return value in self.choices

    def describe(self, kind: type) -> str:
        return "one of " + ", ".join(map(str, self.choices))


@dataclasses.dataclass(frozen=True)
class FilePath(Allowed):
    """A path on this machine, absolute (`dvc exp run --queue` runs stages in temporary copies, where a
    relative path means another place), or "" where `empty` says what "" does."""

    problem = "not an absolute path"

    empty: str = ""

    def allows(self, value: Any) -> bool:
        return (value == "" and bool(self.empty)) or (value != "" and os.path.isabs(os.path.expanduser(value)))

    def describe(self, kind: type) -> str:
        return "an absolute path" + (f", or \"\" ({self.empty})" if self.empty else "")


@dataclasses.dataclass(frozen=True)
class Text(Allowed):
    """Free text: any string (non-empty unless `empty`), e.g. a class name or a separator."""

    problem = "empty"

    empty: bool = False

    def allows(self, value: Any) -> bool:
        return self.empty or value != ""

    def describe(self, kind: type) -> str:
        return "any text" if self.empty else "any non-empty text"


@dataclasses.dataclass(frozen=True)
class Matches(Allowed):
    """Text matching a regular expression (the whole of it); `describe` says what that means."""

    problem = "not allowed"

    pattern: str
    meaning: str

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None

    def describe(self, kind: type) -> str:
        return self.meaning


class Section:
    """Base of the dataclass of a params.yaml section: each field is checked against its declared type and
    allowed values whenever one is made, from params.yaml (Params.section) or in code (dataclasses.replace
    in a benchmark, settings saved with a model). `section` names the keys in messages."""

    section: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for field in dataclasses.fields(self):
            key = f"{self.section}.{field.name}" if self.section else field.name
            setattr(self, field.name, checked(key, getattr(self, field.name), hints[field.name]))


@functools.cache
def field_types(kind: type) -> dict[str, Any]:
    """A section dataclass's fields -> their declared types, `Annotated` rules included."""
    return typing.get_type_hints(kind, include_extras=True)


# The common kinds of numbers, by what they mean.
Count = Annotated[int, Range(1)]              # a number of things, steps or passes: at least 1
Size = Annotated[int, Range(0)]               # 0 allowed (its meaning is said where it is declared)
Seed = Annotated[int, Range(0)]
Weight = Annotated[float, Range(0.0)]         # a loss weight: 0 switches its term off
Rate = Annotated[float, Range(0.0, above=True)]  # a learning rate: above 0
Fraction = Annotated[float, Range(0.0, 1.0)]
DEVICES = ("auto", "cpu", "cuda")
Device = Annotated[str, OneOf(DEVICES)]

# The top level of params.yaml: its own values, then each stage's sections (dvc.yaml says which).
TOP_LEVEL_VALUES: dict[str, Any] = {
    "dataset": Annotated[str, OneOf(DATASETS)],
    "bits": Annotated[int, Range(MIN_BITS, MAX_BITS)],
    "method": Annotated[str, OneOf(METHODS)],
    "seed": Seed,
    "split_seed": Seed,
}
TOP_LEVEL = (*TOP_LEVEL_VALUES, "prepare", "images", "train_lae", "train_imgnet", "methods", "features", "encode",
             "evaluate", "index")


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
        value = checked(dotted, self._node(dotted), kind) if kind is not None else self._node(dotted)
        self.read.add(dotted)
        return copy.deepcopy(value)

    def section(self, dotted: str, schema: type[T], nested: tuple[str, ...] = ()) -> T:
        """A mapping read into the dataclass `schema`: every field must be set, no other key may be
        (but the names in `nested`, sub-sections read on their own), each with the field's type."""
        node = self._node(dotted)
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: expected a mapping, got {type(node).__name__}")
        types = field_types(schema)
        names = [f.name for f in dataclasses.fields(schema)]
        unknown = sorted(set(node) - set(names) - set(nested))
        if unknown:
            raise ConfigError(f"{dotted}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
        missing = [name for name in names if name not in node]
        if missing:
            raise ConfigError(f"{dotted}.{missing[0]}: missing from {self.source} (every key is set there; "
                              "the code holds no defaults)")
        values = {name: checked(f"{dotted}.{name}", node[name], types[name]) for name in names}
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


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def checked(dotted: str, value: Any, kind: Any) -> Any:
    """`value` as `kind` (int, float, str, bool or a list of one of them, each possibly
    `Annotated[..., <Allowed>]`; an int is a float too, and so is a string YAML left unparsed, such as
    3e-4), or a ConfigError naming the key, the value and what is allowed."""
    if typing.get_origin(kind) is Annotated:
        base, *rules = typing.get_args(kind)
        value = checked(dotted, value, base)
        for rule in rules:
            if isinstance(rule, Allowed) and not rule.allows(value):
                raise ConfigError(f"{dotted}: {value!r} is {rule.problem}; allowed: {rule.describe(base)}")
        return value
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{dotted}: expected a list, got {value!r} ({type(value).__name__})")
        (item,) = typing.get_args(kind)
        return [checked(f"{dotted}[{k}]", v, item) for k, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; it is meant as a number
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        hint = ""
        if kind is int and isinstance(value, float) and value.is_integer():
            hint = f"; write {int(value)}"
        elif kind is int and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            number = float(value)
            hint = (f"; write {int(number)}, without quotes" if number.is_integer() else "; write an integer")
        elif kind in (int, float) and isinstance(value, str):
            hint = "; write a number"
        elif kind is bool:
            hint = "; write true or false"
        raise ConfigError(f"{dotted}: expected {kind.__name__}, got {value!r} ({type(value).__name__}){hint}")
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
    for key, kind in TOP_LEVEL_VALUES.items():
        if key not in params:
            raise ConfigError(f"{key}: missing from {source} (every key is set there; the code holds no defaults)")
        checked(key, params[key], kind)
