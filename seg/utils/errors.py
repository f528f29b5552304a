"""Bad input as one line of text: which exceptions mean "the input is wrong" (not a bug), an exception's message
on one line (Hydra's and OmegaConf's noise dropped), and Hydra's override parse errors with the quoting that
works."""

from __future__ import annotations

import os
import re
import shlex

from hydra.errors import InstantiationException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from seg.utils.extras import MissingExtraError

# errors that mean "the input is wrong" (missing or corrupt files, bad values, incomplete config, a diverged
# loss), not a bug
USER_ERRORS = (
    OSError,
    ValueError,
    InstantiationException,
    OmegaConfBaseException,
    FloatingPointError,
    MissingExtraError,
)
# noise in Hydra's and OmegaConf's messages: where-to-look hints, the search path, object types
_DROP = re.compile(r"^(full_key|object_type|reference_type|Set the environment variable HYDRA_FULL_ERROR)")


# Hydra plugins that come with an extra: the config option a missing plugin leaves unknown -> the extra
PLUGIN_EXTRAS = {"hydra/sweeper/optuna": "sweep", "hydra/launcher/submitit_slurm": "slurm"}


def plugin_hint(message: str) -> str:
    """`` (pip install 'seg[extra]')`` when ``message`` is Hydra's "Could not find" for a plugin's config; where a
    key moved (``data.dataset.X``: dataset options sit at ``data.X``), the new place."""
    for option, extra in PLUGIN_EXTRAS.items():
        if f"Could not find '{option}'" in message:
            return f" (pip install 'seg[{extra}]')"
    moved = re.search(r"Could not override 'data\.dataset\.(\w+)'", message)
    if moved:
        return f" (dataset options sit at the data. level, next to data.root: data.{moved.group(1)}=...)"
    return ""


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_override(override)
    except Exception:
        return False
    return True


def _shell_quote(arg: str) -> str:
    """``arg`` quoted for a POSIX shell, in double quotes where that is exact (easier to read beside '...')."""
    return f'"{arg}"' if not re.search(r'["$`\\]', arg) else shlex.quote(arg)


def override_error(exc: OverrideParseException, argv: list[str]) -> str:
    """Hydra's parse error of a command-line override as one line with the quoted form that works: for a value
    the shell split at a space (``data.root=/data/my set``), the whole override in shell quotes; for a value with
    characters of Hydra's grammar, the value in Hydra's quotes inside the shell's as well."""
    bad = exc.override
    where = argv.index(bad) if bad in argv else -1
    split = "=" not in bad and not bad.startswith("~") and where > 0 and "=" in argv[where - 1]
    if split:  # the words up to the next override are the rest of the previous value
        end = where
        while end + 1 < len(argv) and "=" not in argv[end + 1] and not argv[end + 1].startswith("~"):
            end += 1
        override = " ".join(argv[where - 1 : end + 1])
        why = "the shell split a value with a space into words; quote the whole override"
    else:
        override, why = bad, "quote the value for Hydra, inside the shell's quotes"
    key, sep, value = override.partition("=")
    if not sep or value.startswith(("[", "{")) and not split:  # a list or dict: not a quoting problem
        return one_line(exc)
    if not _parses(override):
        override = f"{key}='{value.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"
    return f"cannot parse the override {bad!r}: {why}: {_shell_quote(override)}"


def full_error_requested() -> bool:
    """``HYDRA_FULL_ERROR=1``: the user asked for the traceback instead of one line."""
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
