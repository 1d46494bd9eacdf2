"""Hashing methods as small parts of the one training loop: a method is its loss terms, its code update
and its parameters. `METHODS` maps the `method` param to the configuration the loop runs with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dsah.errors import ConfigError
from dsah.methods.asymmetric import AsymmetricConfig

METHODS: dict[str, Callable[[AsymmetricConfig], AsymmetricConfig]] = {
    "dsah": lambda config: config,
    # ADSH is DSAH without the label auto-encoder: no semantic terms, random initial codes.
    "adsh": lambda config: replace(config, eta=0.0, mu=0.0, lam=0.0, init="random"),
}


def method_config(method: str, config: AsymmetricConfig) -> AsymmetricConfig:
    if method not in METHODS:
        raise ConfigError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    resolved = METHODS[method](config)
    if resolved.init not in ("label_codes", "random"):
        raise ConfigError(f"train_imgnet.init: {resolved.init!r}; choose label_codes or random")
    return resolved
