"""Entry-point error handling: bad input ends the command with one clear line and exit status 1, not a traceback."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar

import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

F = TypeVar("F", bound=Callable)

# errors that mean "the input is wrong" (missing or corrupt files, bad values, incomplete config, a diverged
# loss), not a bug
USER_ERRORS = (OSError, ValueError, InstantiationException, OmegaConfBaseException, FloatingPointError)
# noise in Hydra's and OmegaConf's messages: where-to-look hints, the search path, object types
_DROP = re.compile(r"^(full_key|object_type|reference_type|Set the environment variable HYDRA_FULL_ERROR)")


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on a single line: for Hydra's instantiate wrapper, the config key and its cause; for
    an error raised in a DataLoader worker, the worker's own message without the copied traceback.
    """
    prefix = ""
    if isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        key = re.search(r"full_key: (\S+)", str(exc))
        prefix = f"{key.group(1)}: " if key else ""
        exc = exc.__cause__
    text = str(exc)
    if "Original Traceback (most recent call last)" in text:  # torch's re-raise of a worker's exception
        text = re.sub(r"^\w+(Error|Exception): ", "", text.strip().splitlines()[-1])
    text = text.split("Config search path:")[0]  # Hydra's missing-config message lists its whole search path
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _DROP.match(line.strip())]
    return prefix + (" ".join(lines) or type(exc).__name__)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_error(fn: F) -> F:
    """Wrap an entry point: a known error prints ``error: <message>`` to stderr and exits 1.

    ``HYDRA_FULL_ERROR=1`` re-raises instead, for the full traceback; so does a multirun job, for Hydra to record
    it as failed and go on with the sweep. Also makes Hydra's own config errors (an unknown override key, a
    missing config group option) one line, see :func:`compact_config_errors`.
    """
    compact_config_errors()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            if _full_error() or _in_multirun():
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def compact_config_errors() -> None:
    """Print Hydra's config-composition errors (before the task runs) as one ``error: ...`` line, exit status 1.

    Hydra prints them over several lines (message, OmegaConf details, a hint about HYDRA_FULL_ERROR) from its
    ``run_and_report``; this wraps that function, once, to catch them first. ``HYDRA_FULL_ERROR=1`` keeps
    Hydra's own report.
    """
    original = hydra_utils.run_and_report
    if getattr(original, "_seg_compact", False):
        return

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except CompactHydraException as e:  # ConfigCompositionException, MissingConfigException, ...
                if _full_error():
                    raise
                cause = f" ({one_line(e.__cause__)})" if isinstance(e.__cause__, OmegaConfBaseException) else ""
                print(f"error: {one_line(e)}{cause}", file=sys.stderr)
                sys.exit(1)

        return original(guarded)

    run_and_report._seg_compact = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report
