"""Errors users see: each one says what went wrong and how to fix it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DSAHError(Exception):
    """Base class for errors that carry a message meant for the user."""


class ConfigError(DSAHError):
    """params.yaml (or an override) holds an unknown key, a wrong type or a value out of range."""


class DataError(DSAHError):
    """Source data is missing, corrupt, truncated or does not match its checksum."""


def exit_on_error(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A stage's or command's main: a DSAHError becomes its message on stderr and exit status 2 (1 is
    kept for "checks failed"), never a traceback."""
    def decorate(main: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> T:
            try:
                return main(*args, **kwargs)
            except DSAHError as exc:
                print(f"{name}: error: {exc}", file=sys.stderr)
                sys.exit(2)
        return run
    return decorate
