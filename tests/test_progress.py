"""Progress lines for jobs whose stderr goes to a log file."""

import io

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
