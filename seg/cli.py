"""Entry-point error handling: bad input ends the command with one clear line and exit status 1, not a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

F = TypeVar("F", bound=Callable)

# errors that mean "the input is wrong" (missing or corrupt files, bad values, incomplete config), not a bug
USER_ERRORS = (OSError, ValueError, InstantiationException, OmegaConfBaseException)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` (of its cause, for Hydra's instantiate wrapper) on a single line."""
    if isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def exit_on_error(fn: F) -> F:
    """Wrap an entry point: a known error prints ``error: <message>`` to stderr and exits 1.

    ``HYDRA_FULL_ERROR=1`` re-raises instead, for the full traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
