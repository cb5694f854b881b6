"""The [eval] progress lines (when they are due, what they say) and the coordinator's task-affinity choice."""

from __future__ import annotations

import pytest

from evaluation.progress import ProgressLines, format_duration, progress_line
from evaluation.runtime.coordinator import next_episode
from evaluation.runtime.episode import EpisodeSpec

pytestmark = pytest.mark.unit


def test_progress_line_names_done_success_rate_and_eta():
    assert progress_line(120, 500, 54, 120.0) == (
        "[eval] 120/500 episodes (24%)  success 45.0% so far  1.00 episodes/s  ETA 6m20s"
    )
    assert progress_line(500, 500, 250, 3725.0).endswith("0.13 episodes/s  took 1h02m")
    assert (
        progress_line(0, 500, 0, 31.0)
        == "[eval] 0/500 episodes (0%)  success - so far  0.00 episodes/s  ETA -"
    )
    assert [format_duration(s) for s in (42, 187, 3720)] == ["42s", "3m07s", "1h02m"]


def test_lines_every_10_percent_and_every_interval_after_the_first_interval(capsys):
    lines = ProgressLines(total=100, every_s=30.0, enabled=True, start=0.0)
    lines.update(25, 10, now=29.0)  # a quick run prints nothing in its first 30 s
    assert capsys.readouterr().out == ""
    lines.update(25, 10, now=30.0)  # then the first line
    lines.update(26, 10, now=31.0)  # same 10 % mark, interval not passed: nothing
    lines.update(30, 12, now=32.0)  # the 30 % mark
    lines.update(30, 12, now=62.5)  # nothing finished for 30 s: a line anyway (the run is alive)
    lines.update(100, 40, final=True, now=100.0)
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(" episodes")[0] for ln in out] == [
        "[eval] 25/100",
        "[eval] 30/100",
        "[eval] 30/100",
        "[eval] 100/100",
    ]
    assert "ETA" in out[0] and out[-1].endswith("took 1m40s")


def test_no_lines_when_disabled_or_when_the_run_was_short(capsys):
    off = ProgressLines(total=10, every_s=1.0, enabled=False, start=0.0)
    off.update(5, 5, now=100.0)
    off.update(10, 10, final=True, now=200.0)
    short = ProgressLines(total=10, every_s=30.0, enabled=True, start=0.0)
    short.update(10, 10, final=True, now=5.0)  # finished before any line: no lone final line
    assert capsys.readouterr().out == ""


def test_task_affinity_prefers_own_task_then_a_task_nobody_holds_then_the_first():
    specs = [EpisodeSpec(t, 0, i) for i, t in enumerate(["a", "a", "b", "b", "c", "c"])]
    queue = [1, 2, 3, 4, 5]
    assert next_episode(queue, specs, own="c", held={"a", "b"}) == 4  # its own task, even if later
    assert next_episode(queue, specs, own=None, held={"a"}) == 2  # the first task no other actor holds
    assert next_episode(queue, specs, own="z", held={"a", "b", "c"}) == 1  # all held: the first waiting
