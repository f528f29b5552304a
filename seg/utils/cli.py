"""The commands' wrapper: Hydra runs the task, and a known error ends with one ``error: ...`` line (its text from
:mod:`seg.utils.errors`) instead of a traceback; ``HYDRA_FULL_ERROR=1`` keeps the traceback with its causes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from seg.utils.compose import CONF_DIR
from seg.utils.errors import USER_ERRORS, full_error_requested, one_line, override_error, plugin_hint
from seg.utils.malloc import keep_freed_memory

F = TypeVar("F", bound=Callable)


def entry_point(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """The ``main()`` of a command (``python -m seg.X`` and the ``seg-X`` script): Hydra on ``conf/<config_name>``
    runs ``task``, a known error ends with one ``error: ...`` line (:func:`exit_on_error`), and so does a config
    composition error (:func:`compact_config_errors`, applied to this call only). glibc keeps freed memory for
    reuse (:func:`seg.utils.malloc.keep_freed_memory`)."""
    hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(
        exit_on_error(lightning_logs_to_root(task))
    )

    @functools.wraps(task)
    def main() -> Any:
        keep_freed_memory()  # full-resolution steps otherwise spend most of their time faulting memory back in
        with compact_config_errors():
            return hydra_main()

    return main


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


def in_multirun() -> bool:
    """True inside a Hydra multirun (a sweep's job, or the sweeper)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# (type, message) of the errors sweep jobs raised for Hydra to record, so that compact_config_errors knows the one
# a sweeper re-raises to stop the sweep (not the exceptions themselves: their tracebacks hold the jobs' models)
_SWEEP_JOB_ERRORS: set[tuple[type, str]] = set()
# "<type>: <message>" of the error a single run ended with, for JobStatusCallback (seg.callbacks.job_status) to
# record at exit: the run ends inside Hydra's job (sys.exit), so Hydra's job-end callbacks do not run
LAST_ERROR: list[str] = []


def exit_on_error(fn: F) -> F:
    """Wrap an entry point: a known error prints ``error: <message>`` to stderr and exits 1 (and is kept in
    :data:`LAST_ERROR` for the job's status record).

    ``HYDRA_FULL_ERROR=1`` re-raises instead, for the full traceback; so does a multirun job, for Hydra to record
    it as failed and go on with the sweep.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            if in_multirun():
                _SWEEP_JOB_ERRORS.add((type(e), str(e)))  # for compact_config_errors, if the sweeper re-raises it
                raise
            if full_error_requested():
                raise
            LAST_ERROR[:] = [f"{type(e).__name__}: {e}"]
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
                if full_error_requested():
                    raise
                print(f"error: {override_error(e, sys.argv[1:])}", file=sys.stderr)
                sys.exit(1)
            except CompactHydraException as e:  # ConfigCompositionException, MissingConfigException, ...
                if full_error_requested():
                    raise
                cause = f" ({one_line(e.__cause__)})" if isinstance(e.__cause__, OmegaConfBaseException) else ""
                print(f"error: {one_line(e)}{cause}{plugin_hint(str(e))}", file=sys.stderr)
                sys.exit(1)
            except USER_ERRORS as e:
                if full_error_requested() or (type(e), str(e)) not in _SWEEP_JOB_ERRORS:
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
