"""Optional dependencies: imported inside the functions that need them, with one line naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which ``pip install 'seg[extra]'`` brings it."""


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or MissingExtraError naming ``pip install 'seg[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is None or not module.startswith(e.name.split(".")[0]):
            raise  # the package is there but broken: show the real error
        raise MissingExtraError(f"{module} is not installed: pip install 'seg[{extra}]'") from e
