"""Progress lines for jobs whose stderr goes to a log file."""

import contextlib
import io

from mlip_exafs import progress
from mlip_exafs.progress import log_lines


def test_log_lines_report_count_elapsed_and_eta():
    stream = io.StringIO()
    advance = log_lines("CP2K labelling", 3, stream, every_s=0.0)
    for _ in range(3):
        advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("CP2K labelling: 1/3, elapsed 0:00:00, ETA ")
    assert lines[-1].endswith("(in 0:00:00)")


def test_log_lines_are_throttled_but_the_last_one_is_always_written():
    stream = io.StringIO()
    advance = log_lines("MD 300 K", 1000, stream, every_s=3600.0)
    for _ in range(1000):
        advance()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["MD 300 K: 1/1000", "MD 300 K: 1000/1000"]


def test_a_resumed_run_counts_earlier_units_as_done_and_its_eta_from_its_own_rate(monkeypatch):
    stream = io.StringIO()
    clock = iter([0.0, 10.0, 20.0])  # start, then one unit each 10 s
    with monkeypatch.context() as patch:
        patch.setattr(progress.time, "time", lambda: next(clock))
        advance = log_lines("fine-tune on 10 structures, epochs", 100, stream, every_s=0.0, done_before=40)
        advance()
        advance()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("fine-tune on 10 structures, epochs: 41/100, elapsed 0:00:10")
    assert lines[1].startswith("fine-tune on 10 structures, epochs: 42/100, elapsed 0:00:20")
    assert lines[1].endswith("(in 0:09:40)")  # 58 epochs at 10 s each, not at 20 s for 42


def test_a_bar_on_a_terminal_leaves_a_redirected_stdout_where_it_was(monkeypatch):
    """A fine-tune redirects its trainer's prints to train.log; rich's live bar must not take them to the terminal."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stderr counts as a terminal
    trainer_log = io.StringIO()
    with contextlib.redirect_stdout(trainer_log), progress.progress_bar("fine-tune on 3 structures, epochs", 2) as advance:
        print("Epoch: [0][1/1] | Loss 1.0")
        advance()
        advance()
    assert trainer_log.getvalue() == "Epoch: [0][1/1] | Loss 1.0\n"
