"""The issue's "Done when", read from the files a run writes: the ground truth and the messages.

Each shipped scenario's condition is in the ground truth together with messages that carry it, and
those messages' payloads decode to readings that show the condition; every injected fault is in
the ground truth at the share requested (within 20 %); every payload that is not deliberately
malformed decodes back to the reading it was made from.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from device_profiles import DecodeError, ProfileSet, Reading
from simulators.clock import SimClock
from simulators.errors import ConfigError
from simulators.faults import FaultOptions
from simulators.output import FileSink, read_messages
from simulators.runner import run_simulation
from simulators.scenarios import load_scenario, shipped_scenarios
from simulators.simulation import Simulation
from simulators.truth import (
    ConditionRecord,
    EndRecord,
    FaultRecord,
    MessageRecord,
    RunRecord,
    TruthWriter,
    read_records,
    read_truth,
)

from .conftest import EVERY_TYPE, HOUR_MS, START, simulate

#: Simulated hours each scenario needs to show its condition (and, for silences, the return).
HOURS = {
    "elderly-inactive": 36,
    "flaky-devices": 23,
    "gateway-storm": 3,
    "lamp-failure": 30,
    "manhole-lifted": 24,
    "radio-fading": 97,
    "sos-press": 2,
}

Check = Callable[[dict[str, Any], dict[str, Any], Reading], bool]

#: What a message carrying each condition shows: (condition, message record, decoded reading).
SHOWS: dict[str, Check] = {
    "resident_inactive": lambda c, m, r: r.metrics["contact_open"] == 0.0,
    "manhole_open": lambda c, m, r: r.metrics["cover_open"] == 1.0 and r.metrics["tilt_deg"] == 45.0,
    "lamp_failure": lambda c, m, r: r.metrics["lamp_on"] == 1.0 and r.metrics["power_w"] == 0.0,
    "lamp_on_daytime": lambda c, m, r: r.metrics["lamp_on"] == 1.0 and r.metrics["power_w"] > 0,
    "sos_pressed": lambda c, m, r: "sos_pressed" in r.events,
    "gateway_storm": lambda c, m, r: m["gateway_id"] == c["gateway_id"],
    "device_silent": lambda c, m, r: m["sent"] >= c["to"],
    "radio_fading": lambda c, m, r: c["from"] <= m["sent"] < c["silent_at"],
}


def _run_to_files(
    tmp: Path,
    *,
    devices: int,
    hours: float,
    seed: int,
    scenarios: list[str] = (),  # type: ignore[assignment]
    faults: FaultOptions | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]], ProfileSet, Simulation]:
    fleet = simulate(devices=devices, hours=0, seed=seed)
    sim = Simulation(
        inventory=fleet.inventory,
        start=START,
        seed=seed,
        scenarios=[load_scenario(name) for name in scenarios],
        faults=faults,
    )
    out, truth = tmp / "out.jsonl", tmp / "truth.jsonl"
    summary = run_simulation(
        sim,
        sink=FileSink(out),
        truth=TruthWriter(truth),
        clock=SimClock(start_ms=sim.start_ms, speed=None),
        until_ms=sim.start_ms + round(hours * HOUR_MS),
    )
    assert summary.failure is None
    decoder = ProfileSet.shipped().with_device_map(fleet.inventory.device_profile_map())
    return read_truth(truth), read_messages(out), decoder, sim


@pytest.mark.parametrize("name", shipped_scenarios())
def test_scenario_condition_and_the_payloads_carrying_it_are_in_the_truth(tmp_path: Path, name: str) -> None:
    records, sent, decoder, _ = _run_to_files(
        tmp_path, devices=240, hours=HOURS[name], seed=21, scenarios=[name]
    )
    messages = [r for r in records if r["kind"] == "message"]
    assert len(messages) == len(sent)
    conditions = [r for r in records if r["kind"] == "condition" and r["source"] == f"scenario:{name}"]
    assert conditions, f"{name} recorded no condition"
    for cond in conditions:
        shows = SHOWS[cond["condition"]]
        carrying = [m for m in messages if cond["id"] in m["conditions"]]
        assert carrying, f"no message carries {cond['condition']} ({cond['id']})"
        for record in carrying:
            assert not record["malformed"]
            if "device_id" in cond:
                assert record["device_id"] == cond["device_id"]
            assert record["sent"] >= cond.get("from", cond["at"])
            topic, payload = sent[record["seq"]]
            assert topic == record["topic"]
            reading = decoder.decode(topic, payload, START)
            assert isinstance(reading, Reading), reading
            assert reading.reading_id == record["reading_id"]
            assert reading.metrics == record["metrics"]
            assert list(reading.events) == record["events"]
            assert shows(cond, record, reading), (cond, record)


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _within(share: float, requested: float) -> bool:
    return abs(share - requested) <= 0.2 * requested


def test_every_injected_fault_is_in_the_truth_at_the_share_requested(tmp_path: Path) -> None:
    faults = FaultOptions(
        malformed=0.05,
        duplicate=0.04,
        reordered=0.06,
        clock_skew_min=5,
        skew_share=0.2,
        silent_share=0.1,
        silent_within_ms=3 * HOUR_MS,
    )
    records, sent, decoder, sim = _run_to_files(tmp_path, devices=1000, hours=6, seed=17, faults=faults)
    messages = [r for r in records if r["kind"] == "message"]
    originals = [m for m in messages if not m["duplicate"]]
    assert len(originals) > 10_000
    malformed = sum(m["malformed"] for m in originals) / len(originals)
    duplicates = sum(m["duplicate"] for m in messages) / len(originals)
    # Only dialects with device time are reordered, after the malformed ones are set aside.
    timed = [m for m in originals if decoder.get(m["profile"]).timestamp is not None and not m["malformed"]]
    reordered = sum(m["reordered"] for m in timed) / len(timed)
    timed_devices = [d for d in sim.inventory if decoder.get(d.profile).timestamp is not None]
    skews = {
        r["device_id"]: r["skew_s"] for r in records if r["kind"] == "fault" and r["fault"] == "clock_skew"
    }
    silent = {r["device_id"] for r in records if r["kind"] == "fault" and r["fault"] == "silent"}
    shares = {
        "malformed": (malformed, faults.malformed),
        "duplicate": (duplicates, faults.duplicate),
        "reordered": (reordered, faults.reordered),
        "skew_share": (len(skews) / len(timed_devices), faults.skew_share),
        "silent_share": (len(silent) / len(sim.inventory), faults.silent_share),
    }
    for name, (share, requested) in shares.items():
        assert _within(share, requested), (name, share, requested)
    # Each message states the faults applied to it, and they agree with the fault records.
    for m in messages:
        assert m["skew_s"] == skews.get(m["device_id"], 0.0)
        if m["malformed"]:
            assert m["malform"] in ("truncated", "not_utf8", "json_array")
            assert isinstance(decoder.decode(m["topic"], sent[m["seq"]][1], START), DecodeError)
    silenced_at = {
        r["device_id"]: r["from"] for r in records if r["kind"] == "fault" and r["fault"] == "silent"
    }
    for m in messages:
        if m["device_id"] in silenced_at:
            # Read when the device measured it (a message held back for reordering goes out at the end).
            measured = _ms(m["ts"]) - round(m["skew_s"] * 1000)
            assert measured < _ms(silenced_at[m["device_id"]])
    end = records[-1]
    assert end["kind"] == "end"
    assert end["messages"] == len(messages)


def test_every_payload_decodes_back_under_all_scenarios_and_faults(profiles: ProfileSet) -> None:
    faults = FaultOptions(malformed=0.05, duplicate=0.05, reordered=0.05, clock_skew_min=3, skew_share=0.2)
    run = simulate(
        devices=400,
        hours=30,
        seed=23,
        faults=faults,
        scenarios=[load_scenario(name) for name in shipped_scenarios()],
        mix=EVERY_TYPE,
    )
    decoder = profiles.with_device_map(run.inventory.device_profile_map())
    decoded = 0
    for em in run.emissions:
        result = decoder.decode(em.topic, em.payload, em.reading.received_at)
        if em.malformed:
            assert isinstance(result, DecodeError)
            continue
        assert result == em.reading
        decoded += 1
    assert decoded > 20_000
    assert {em.reading.profile for em in run.emissions} == set(profiles.profiles)


def test_every_record_is_one_the_truth_module_defines(tmp_path: Path) -> None:
    faults = FaultOptions(malformed=0.05, clock_skew_min=3, silent_share=0.05)
    _run_to_files(tmp_path, devices=300, hours=12, seed=5, scenarios=shipped_scenarios(), faults=faults)
    records = list(read_records(tmp_path / "truth.jsonl"))
    kinds = [type(r) for r in records]
    assert kinds[0] is RunRecord
    assert kinds[-1] is EndRecord
    assert set(kinds) == {RunRecord, MessageRecord, ConditionRecord, FaultRecord, EndRecord}
    end = records[-1]
    assert isinstance(end, EndRecord)
    assert end.messages == kinds.count(MessageRecord)
    assert end.conditions == kinds.count(ConditionRecord)


def test_a_record_the_truth_module_does_not_define_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    condition = b'{"kind":"condition","id":"c1","condition":"x","at":"2025-06-01T00:00:00.000Z","source":"s"'
    path.write_bytes(condition + b"}\n" + condition + b',"colour":"red"}\n')
    records = read_records(path)
    assert isinstance(next(records), ConditionRecord)
    with pytest.raises(ConfigError, match=r"truth.jsonl: line 2: not a ground-truth record: .*colour"):
        next(records)
    path.write_bytes(b'{"kind":"comment","text":"hello"}\n')
    with pytest.raises(ConfigError, match="line 1: not a ground-truth record"):
        list(read_records(path))
