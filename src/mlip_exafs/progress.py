"""A rich progress bar with ETA, shared by all long-running verbs."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``; the bar goes to stderr so stdout stays parseable."""
    from rich.console import Console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total)
        try:
            yield lambda: progress.advance(task)
        except BaseException:
            progress.live.transient = True  # on an error the one line on stderr is the error, not a half-full bar
            raise
