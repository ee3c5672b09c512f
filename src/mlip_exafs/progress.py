"""Progress with ETA, shared by all long-running verbs.

On a terminal: a rich progress bar. Redirected to a file (a background
labelling run, a batch job): one plain line at most every ``LOG_EVERY_S``
seconds and at the end, so the log tells how far a job is and when it ends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LOG_EVERY_S = 30.0


@contextlib.contextmanager
def progress_bar(description: str, total: int, done_before: int = 0) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``; progress goes to stderr so stdout stays parseable.

    ``done_before``: units a resumed run finished earlier; they count as done but not towards the rate.
    """
    console = Console(stderr=True)
    if not console.is_terminal:
        yield log_lines(description, total, sys.stderr, done_before=done_before)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, redirect_stdout=False) as progress:  # rich would take stdout off a redirect (a trainer's log)
        task = progress.add_task(description, total=total, completed=done_before)
        try:
            yield lambda: progress.advance(task)
        except BaseException:
            progress.live.transient = True  # on an error the one line on stderr is the error, not a half-full bar
            raise


def log_lines(description: str, total: int, stream: TextIO, every_s: float = LOG_EVERY_S, done_before: int = 0) -> Callable[[], None]:
    """``advance()`` that writes 'DESCRIPTION: i/total, elapsed H:MM:SS, ETA HH:MM (in H:MM:SS)' lines.

    Elapsed time and rate are this run's: a resumed run's ETA comes from the units it did itself.
    """
    start = time.time()
    state = {"done": done_before, "last": float("-inf")}

    def advance() -> None:
        state["done"] += 1
        now = time.time()
        if now - state["last"] < every_s and state["done"] < total:
            return
        state["last"] = now
        done, elapsed = state["done"], now - start
        remaining = elapsed / (done - done_before) * (total - done)
        eta = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + remaining))
        stream.write(f"{description}: {done}/{total}, elapsed {_hms(elapsed)}, ETA {eta} (in {_hms(remaining)})\n")
        stream.flush()

    return advance


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
