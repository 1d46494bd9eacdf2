"""Hashing methods, chosen by the top-level `method` param; each reads its settings from
params.yaml's `methods.<name>` section.

Deep methods are small parts of the one training loop (dsah.training.loop): their loss terms, code update
and settings, each in a file named after it: dsah.py (ADSH is its zero-weight case), daph.py, hashnet.py,
dnnh.py; the discrete update of the database codes they share is code_update.py. Classic methods (itq, sdh,
ksh, classic.py) learn a hash function on fixed image features (dsah.nets.features) in closed form or by
their own alternating steps.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import nn

from dsah.config import DEEP_METHODS
from dsah.errors import ConfigError
from dsah.methods.daph import DAPH
from dsah.methods.dnnh import DNNH
from dsah.methods.dsah import DSAH
from dsah.methods.base import DeepMethod
from dsah.methods.hashnet import HashNet
from dsah.nets.backbones import ImgNet, TwinNet, build_backbone
from dsah.nets.spec import NetworkSpec
from dsah.settings import METHOD_SETTINGS, settings_type

# How each deep method of the registry (dsah.config.METHODS) is implemented: its part of the one training
# loop (its settings type is dsah.settings.METHOD_SETTINGS[name]; a classic method's model is in
# dsah.methods.classic).
DEEP_IMPLEMENTATIONS: dict[str, type[DeepMethod]] = {"dsah": DSAH, "adsh": DSAH, "daph": DAPH,
                                                     "hashnet": HashNet, "dnnh": DNNH}
def settings_from_dict(method: str, values: dict[str, Any]) -> Any:
    """Settings saved with a model (all their fields) -> the method's settings type."""
    kind = settings_type(method)
    return kind(**{f.name: values[f.name] for f in fields(kind)})


def deep_method(method: str, settings: Any, bits: int) -> DeepMethod:
    if method not in DEEP_IMPLEMENTATIONS:
        raise ConfigError(f"method: {method!r} is not a deep method; deep methods: {', '.join(DEEP_METHODS)}")
    cls, kind = DEEP_IMPLEMENTATIONS[method], METHOD_SETTINGS[method]
    if not isinstance(settings, kind):
        raise ConfigError(f"method {method}: settings must be {kind.__name__}, got {type(settings).__name__}")
    instance = cls(settings, bits)
    instance.name = method
    return instance


def build_network(method: DeepMethod, spec: NetworkSpec, bits: int, pretrained: bool = True) -> nn.Module:
    """The method's network as `spec` describes it: a backbone and its head, or two of them (DAPH), holding
    the spec. pretrained: False for the architecture only (trained weights follow)."""
    def one() -> ImgNet:
        trunk = build_backbone(spec.backbone, spec.width, spec.weights, spec.input_size, pretrained)
        return ImgNet(trunk, bits, method.head(trunk.out_features), spec)
    return TwinNet(one(), one(), spec) if method.twin else one()
