"""The engine: deterministic, every payload decodes back to its reading, faults at the shares asked."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from device_profiles import DecodeError, ProfileSet, Reading
from simulators.clock import SimClock
from simulators.faults import FaultOptions
from simulators.output import FileSink, read_messages
from simulators.runner import run_simulation
from simulators.scenarios import load_scenario, shipped_scenarios
from simulators.simulation import Simulation
from simulators.truth import TruthWriter, read_truth

from .conftest import EVERY_TYPE, HOUR_MS, START, Run, simulate

FAULTS = FaultOptions(malformed=0.1, duplicate=0.1, reordered=0.1, clock_skew_min=10, skew_share=0.3)


@pytest.fixture(scope="module")
def faulty() -> Run:
    return simulate(devices=300, hours=24, seed=11, faults=FAULTS, mix=EVERY_TYPE)


def _write(tmp: Path, seed: int) -> tuple[bytes, bytes]:
    run = simulate(devices=150, hours=12, seed=seed, faults=FAULTS, scenarios=[load_scenario("sos-press")])
    # Re-run through the runner with file output to compare bytes on disk.
    sim = Simulation(
        inventory=run.inventory, start=START, seed=seed, scenarios=[load_scenario("sos-press")], faults=FAULTS
    )
    tmp.mkdir()
    out, truth = tmp / "out.jsonl", tmp / "truth.jsonl"
    run_simulation(
        sim,
        sink=FileSink(out),
        truth=TruthWriter(truth),
        clock=SimClock(start_ms=sim.start_ms, speed=None),
        until_ms=sim.start_ms + 12 * HOUR_MS,
    )
    return out.read_bytes(), truth.read_bytes()


def test_same_seed_gives_identical_output(tmp_path: Path) -> None:
    a, b, c = _write(tmp_path / "a", 3), _write(tmp_path / "b", 3), _write(tmp_path / "c", 4)
    assert a[0] == b[0]
    assert len(a[0]) > 100_000
    assert a[1] == b[1]
    assert a[0] != c[0]


def test_every_payload_decodes_back_to_its_reading(faulty: Run, profiles: ProfileSet) -> None:
    decoder = profiles.with_device_map(faulty.inventory.device_profile_map())
    seen: Counter[str] = Counter()
    for em in faulty.emissions:
        result = decoder.decode(em.topic, em.payload, em.reading.received_at)
        if em.malformed:
            assert isinstance(result, DecodeError), f"malformed payload decoded: {em.payload[:80]!r}"
            continue
        assert isinstance(result, Reading), result
        assert result == em.reading
        seen[em.reading.profile] += 1
    assert set(seen) == set(profiles.profiles), "every shipped profile was exercised"


def test_decodes_without_inventory_where_the_dialect_selects_itself(
    faulty: Run, profiles: ProfileSet
) -> None:
    # Only Tuya SOS heartbeats (battery-only state without `action`) need the inventory's device map.
    for em in faulty.emissions[:5000]:
        if em.malformed:
            continue
        result = profiles.decode(em.topic, em.payload, em.reading.received_at)
        if isinstance(result, DecodeError):
            assert em.reading.profile == "tuya/ts0215a_sos"
            assert not em.reading.events
        else:
            assert result == em.reading


def test_fault_shares_are_close_to_those_requested(faulty: Run) -> None:
    originals = [e for e in faulty.emissions if not e.duplicate]
    assert len(originals) > 10_000
    malformed = sum(e.malformed for e in originals) / len(originals)
    duplicates = sum(e.duplicate for e in faulty.emissions) / len(originals)
    timed = [e for e in originals if e.reading.quality == () and not e.malformed]
    reordered = sum(e.reordered for e in timed) / len(timed)
    for share in (malformed, duplicates):
        assert 0.08 <= share <= 0.12
    # reordering is drawn after malformed (10%) is excluded: expect 0.1 among the rest
    assert 0.08 <= reordered <= 0.12
    assert faulty.sim.counts["malformed"] == sum(e.malformed for e in faulty.emissions)


def test_duplicates_follow_their_original(faulty: Run) -> None:
    emissions = faulty.emissions
    for i, em in enumerate(emissions):
        if em.duplicate:
            first = emissions[i - 1]
            assert (first.topic, first.payload, first.reading) == (em.topic, em.payload, em.reading)
            assert not first.duplicate


def test_reordered_messages_arrive_after_newer_ones(faulty: Run) -> None:
    newest: dict[str, int] = {}
    late = 0
    for em in faulty.emissions:
        device = em.reading.device_id
        ts = int(em.reading.ts.timestamp() * 1000)
        if em.reordered:
            assert ts < newest[device], "a reordered message is older than one already sent"
            late += 1
        elif not em.duplicate:
            assert ts >= newest.get(device, 0) or em.malformed or device in _skewed(faulty)
        newest[device] = max(newest.get(device, 0), ts)
    assert late > 100


def _skewed(run: Run) -> set[str]:
    return {n["device_id"] for n in run.notes if n.get("fault") == "clock_skew"}


def test_clock_skew_is_recorded_and_applied(faulty: Run) -> None:
    skews = {n["device_id"]: n["skew_s"] for n in faulty.notes if n.get("fault") == "clock_skew"}
    assert skews
    assert all(abs(s) <= 600 for s in skews.values())
    checked = 0
    for em in faulty.emissions:
        skew = skews.get(em.reading.device_id)
        if skew is None or em.reordered:
            continue
        offset = (em.reading.ts - em.reading.received_at).total_seconds()
        assert abs(offset - skew) < 1.0  # NB-IoT times are whole seconds
        assert em.skew_ms / 1000 == skew
        checked += 1
    assert checked > 100


def test_silent_devices_stop_and_are_recorded() -> None:
    run = simulate(devices=200, hours=30, seed=5, faults=FaultOptions(silent_share=0.1))
    faults = [n for n in run.notes if n.get("fault") == "silent"]
    assert 10 <= len(faults) <= 32
    conditions = {c["device_id"]: c for c in run.conditions("device_silent")}
    last: dict[str, str] = {}
    for em in run.emissions:
        last[em.reading.device_id] = em.reading.received_at.isoformat()
    for fault in faults:
        device = fault["device_id"]
        assert conditions[device]["to"] is None
        assert last.get(device, "") < fault["from"].replace("Z", "+00:00")


def test_truth_lists_exactly_what_was_sent(tmp_path: Path) -> None:
    run = simulate(devices=100, hours=6, seed=9)
    sim = Simulation(
        inventory=run.inventory, start=START, seed=9, faults=FaultOptions(duplicate=0.2, malformed=0.1)
    )
    out, truth = tmp_path / "out.jsonl", tmp_path / "truth.jsonl"
    summary = run_simulation(
        sim,
        sink=FileSink(out),
        truth=TruthWriter(truth),
        clock=SimClock(start_ms=sim.start_ms, speed=None),
        until_ms=sim.start_ms + 6 * HOUR_MS,
    )
    sent = read_messages(out)
    records = read_truth(truth)
    assert records[0]["kind"] == "run"
    assert records[-1]["kind"] == "end"
    messages = [r for r in records if r["kind"] == "message"]
    assert len(messages) == len(sent) == summary.messages
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert [m["topic"] for m in messages] == [topic for topic, _ in sent]
    decoder = ProfileSet.shipped().with_device_map(run.inventory.device_profile_map())
    by_device: defaultdict[str, int] = defaultdict(int)
    for record, (topic, payload) in zip(messages, sent, strict=True):
        by_device[record["device_id"]] += 1
        result = decoder.decode(topic, payload, START)
        if record["malformed"]:
            assert isinstance(result, DecodeError)
            continue
        assert isinstance(result, Reading)
        assert result.reading_id == record["reading_id"]
        assert result.device_id == record["device_id"]
        assert result.metrics == record["metrics"]
        assert list(result.events) == record["events"]
        if not result.quality:  # the dialect carries device time
            assert result.ts.isoformat().replace("+00:00", "Z").startswith(record["ts"][:19])
    assert records[-1]["messages"] == len(messages)
    assert not records[-1]["interrupted"]
    assert len(by_device) > 90


def test_run_can_continue() -> None:
    run = simulate(devices=50, hours=2, seed=2)
    sim = Simulation(inventory=run.inventory, start=START, seed=2)
    first = list(sim.run(until_ms=sim.start_ms + HOUR_MS))
    second = list(sim.run(until_ms=sim.start_ms + 2 * HOUR_MS))
    whole = Simulation(inventory=run.inventory, start=START, seed=2)
    together = list(whole.run(until_ms=whole.start_ms + 2 * HOUR_MS))
    assert [getattr(i, "payload", None) for i in first + second] == [
        getattr(i, "payload", None) for i in together
    ]


def test_all_scenarios_together() -> None:
    run = simulate(devices=300, hours=36, seed=13, scenarios=[load_scenario(n) for n in shipped_scenarios()])
    names = Counter(
        n["condition"] for n in run.notes if n.get("kind") == "condition" and n["source"] != "behaviour"
    )
    assert names >= Counter(
        {
            "resident_inactive": 1,
            "manhole_open": 1,
            "lamp_failure": 1,
            "lamp_on_daytime": 1,
            "sos_pressed": 1,
            "gateway_storm": 1,
            "device_silent": 3,
        }
    )
