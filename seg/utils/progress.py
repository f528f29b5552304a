"""The progress bar of seg's long loops outside Lightning (dataset checks, class counts, prediction, export): what,
a bar, done / total and the time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(console: Console | None = None, transient: bool = False) -> Progress:
    """A rich ``Progress`` with seg's columns; use as a context manager (``transient``: erased when done)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=transient)
