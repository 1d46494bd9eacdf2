"""Errors users see: each one says what went wrong and how to fix it."""

from __future__ import annotations

import functools
import os
import signal
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


def exit_on_error(name: str, interrupted: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A stage's or command's main: a DSAHError becomes its message on stderr and exit status 2 (1 is
    kept for "checks failed"), never a traceback; the message gets a line of its own, after any progress
    bar the error interrupted. Ctrl-C is one line too ("interrupted", and what is kept), and the process
    then ends by SIGINT, as an interrupted program should, so the shell or DVC sees an interruption."""
    def decorate(main: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> T:
            try:
                return main(*args, **kwargs)
            except DSAHError as exc:
                end_progress_bars()
                print(f"{name}: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(2)
            except KeyboardInterrupt:
                end_progress_bars()
                print(f"{name}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr,
                      flush=True)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
                raise  # where SIGINT cannot end the process
        return run
    return decorate


def end_progress_bars() -> None:
    """Close the progress bars an error left open (each ends its line), so that what is printed next
    starts on a line of its own and no bar is redrawn over it or after it at exit."""
    std = sys.modules.get("tqdm.std")  # never imports tqdm: where it is not loaded, no bar is open
    if std is not None:
        for bar in list(getattr(std.tqdm, "_instances", ())):
            bar.close()
