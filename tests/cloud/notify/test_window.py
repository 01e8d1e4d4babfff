"""The mirrored rate limit: a sliding window, a reserve for critical messages, a block."""

from __future__ import annotations

from cloud.notify.window import RateWindow


def test_twenty_a_minute_in_any_sliding_minute() -> None:
    w = RateWindow(per_minute=20, per_second=None)
    for i in range(20):
        assert w.allows(100.0 + i, critical=True)
        w.record(100.0 + i)
    assert not w.allows(119.5, critical=True)
    # the first send (t=100) leaves the window at t=160
    assert w.wait_s(119.5, critical=True) == 40.5
    assert w.allows(160.0, critical=True)
    w.record(160.0)
    assert w.wait_s(160.0, critical=True) == 1.0  # then the one of t=101


def test_minor_messages_leave_the_reserve_to_critical_ones() -> None:
    w = RateWindow(per_minute=20, per_second=None, reserve=5)
    assert w.spare(0.0, critical=False) == 15
    for i in range(15):
        w.record(float(i))
    assert w.spare(15.0, critical=False) == 0
    assert not w.allows(15.0, critical=False)
    assert w.spare(15.0, critical=True) == 5
    assert w.allows(15.0, critical=True)


def test_per_second_limit_and_a_block() -> None:
    w = RateWindow(per_minute=100, per_second=5)
    for _ in range(5):
        w.record(10.0)
    assert w.wait_s(10.25, critical=True) == 0.75
    assert w.spare(11.0, critical=True) == 5
    w.block(11.0, 600.0)
    assert w.wait_s(11.0, critical=True) == 600.0
    assert w.spare(11.0, critical=True) == 0


def test_seeded_from_before_a_restart() -> None:
    w = RateWindow(per_minute=20, per_second=None)
    w.seed(float(t) for t in range(20))
    assert w.wait_s(30.0, critical=True) == 30.0


def test_unlimited() -> None:
    w = RateWindow(per_minute=None, per_second=None, reserve=5)
    for _ in range(1000):
        w.record(1.0)
    assert w.allows(1.0, critical=False)
