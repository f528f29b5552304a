"""Hydra utilities shared by the entry points, tests, notebooks and benchmarks: where seg's configs live, composing
them from Python exactly as a command line would, and turning bad input into one ``error: ...`` line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import hydra
import hydra._internal.utils as hydra_utils
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seg.extras import MissingExtraError
from seg.malloc import keep_freed_memory

# the top-level conf/ of the source tree (a checkout, an editable install), or its copy inside an installed package
_PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = str(_PACKAGE_DIR / "conf" if (_PACKAGE_DIR / "conf").is_dir() else _PACKAGE_DIR.parent / "conf")


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The config ``python -m seg.<entry> <overrides>`` would see, with the ``hydra`` node included."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)


def config_tree(cfg: DictConfig, order: tuple[str, ...] = ("data", "model", "callbacks", "logger", "trainer")) -> Any:
    """The resolved config as a rich Tree: one branch per top-level group (``order`` first), YAML leaves."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        node = cfg._get_node(key)
        try:
            text = OmegaConf.to_yaml(cfg[key], resolve=True) if OmegaConf.is_config(node) else str(cfg[key])
        except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra run: show it unresolved
            text = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else str(node._value())
        leaf = Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default")
        tree.add(f"[bold]{key}[/bold]").add(leaf)
    return tree


def entry_point(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """The ``main()`` of a command (``python -m seg.X`` and the ``seg-X`` script): Hydra on ``conf/<config_name>``
    runs ``task``, a known error ends with one ``error: ...`` line (:func:`exit_on_error`), and so does a config
    composition error (:func:`compact_config_errors`, applied to this call only). glibc keeps freed memory for
    reuse (:func:`seg.malloc.keep_freed_memory`)."""
    hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(
        exit_on_error(lightning_logs_to_root(task))
    )

    @functools.wraps(task)
    def main() -> Any:
        keep_freed_memory()  # full-resolution steps otherwise spend most of their time faulting memory back in
        with compact_config_errors():
            return hydra_main()

    return main


F = TypeVar("F", bound=Callable)

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")  # the packages seg imports (not the unified `lightning`)


def lightning_logs_to_root(fn: F) -> F:
    """Wrap a task so that Lightning's log lines (devices, model summary, why fit stopped) reach the handlers
    Hydra set up for the run: the console and the run folder's ``<task>.log``.

    Lightning, imported before Hydra configures logging, gives its loggers a stream handler of their own and
    stops them propagating, so the run's log file stayed empty. With no root handler (``hydra/job_logging=none``)
    Lightning's own handler is kept.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if logging.getLogger().handlers:
            for name in LIGHTNING_LOGGERS:
                logger = logging.getLogger(name)
                for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                    logger.removeHandler(handler)
                logger.propagate = True
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# errors that mean "the input is wrong" (missing or corrupt files, bad values, incomplete config, a diverged
# loss), not a bug
USER_ERRORS = (
    OSError, ValueError, InstantiationException, OmegaConfBaseException, FloatingPointError, MissingExtraError,
)  # fmt: skip
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


def in_multirun() -> bool:
    """True inside a Hydra multirun (a sweep's job, or the sweeper)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_error(fn: F) -> F:
    """Wrap an entry point: a known error prints ``error: <message>`` to stderr and exits 1.

    ``HYDRA_FULL_ERROR=1`` re-raises instead, for the full traceback; so does a multirun job, for Hydra to record
    it as failed and go on with the sweep.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            if in_multirun():
                e.seg_sweep_job = True  # type: ignore[attr-defined]  # for compact_config_errors, if it stops the sweep
                raise
            if _full_error():
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def compact_config_errors() -> Iterator[None]:
    """Within the block, Hydra's config-composition errors (before the task runs) print as one ``error: ...`` line
    and exit 1; so does a sweep job's error that the sweeper re-raises to stop the sweep (Optuna's when
    ``max_failure_rate`` is exceeded, the basic sweeper's after its batch).

    Hydra prints them over several lines (message, OmegaConf details, a hint about HYDRA_FULL_ERROR) from its
    private ``hydra._internal.utils.run_and_report`` (hence hydra-core < 1.4 in pyproject); this wraps that
    function for the block only, so importing seg changes nothing in Hydra. ``HYDRA_FULL_ERROR=1`` keeps Hydra's
    own report.
    """
    original = hydra_utils.run_and_report

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except OverrideParseException as e:  # a command-line override Hydra's grammar cannot read
                if _full_error():
                    raise
                print(f"error: {override_error(e, sys.argv[1:])}", file=sys.stderr)
                sys.exit(1)
            except CompactHydraException as e:  # ConfigCompositionException, MissingConfigException, ...
                if _full_error():
                    raise
                cause = f" ({one_line(e.__cause__)})" if isinstance(e.__cause__, OmegaConfBaseException) else ""
                print(f"error: {one_line(e)}{cause}{plugin_hint(str(e))}", file=sys.stderr)
                sys.exit(1)
            except USER_ERRORS as e:
                if _full_error() or not getattr(e, "seg_sweep_job", False):
                    raise
                # a sweep job's error (exit_on_error re-raised it for Hydra to record), re-raised by the sweeper
                print(f"error: sweep stopped: {one_line(e)}", file=sys.stderr)
                sys.exit(1)

        return original(guarded)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
