"""Failures that come in storms are logged once per interval, with the count of the rest."""

from __future__ import annotations

from inkwave.lib.logstorm import LogStorm


def test_the_first_failure_of_each_interval_is_logged_with_how_many_it_stands_for() -> None:
    now = [1000.0]
    storm = LogStorm(interval=10.0, clock=lambda: now[0])
    assert storm.admit("leave") == 0  # the first: logged
    assert [storm.admit("leave") for _ in range(1000)] == [None] * 1000  # counted
    assert storm.admit("join") == 0  # another kind has its own interval
    now[0] += 9.9
    assert storm.admit("leave") is None
    now[0] += 0.2
    assert storm.admit("leave") == 1001  # logged, standing for those since the last
    assert storm.admit("leave") is None
    now[0] += 10
    assert storm.admit("leave") == 1
    now[0] += 10
    assert storm.admit("leave") == 0
