"""The rule engine, kind by kind, on feed rows built by hand (no database): what fires, when,
what clears, what a late reading does, and that a restored engine goes on exactly as one that
never stopped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud.alerts.engine import Engine
from cloud.alerts.feed import FeedRow
from cloud.alerts.model import Action, Community, DeviceInfo, Directory, GatewayObservation
from cloud.alerts.rules import RuleBook
from cloud.ingest.envelope import Envelope, WireReading

S = 1_000_000
MIN = 60 * S
H = 3600 * S
#: 2025-06-01 00:00 UTC = 08:00 in Shanghai
T0 = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp()) * S
C = "c1"


def device(
    device_id: str, device_type: str, *, interval: float = 3600.0, gateway: str = "gw1", **extra: Any
) -> DeviceInfo:
    return DeviceInfo(
        device_id=device_id,
        device_type=device_type,
        profile=f"generic/{device_type}",
        community_id=C,
        gateway_id=gateway,
        report_interval_s=interval,
        lat=31.23,
        lon=121.47,
        **extra,
    )


def directory(*devices: DeviceInfo) -> Directory:
    return Directory(
        devices={d.device_id: d for d in devices},
        communities={C: Community(community_id=C, lat=31.23, lon=121.47, timezone="Asia/Shanghai")},
        profile_intervals={f"generic/{t}": 3600.0 for t in ("door_contact", "sos_button")}
        | {"generic/manhole_cover": 1800.0, "generic/streetlight": 900.0},
    )


class Harness:
    """An engine on the data clock with helpers to feed it readings one row at a time."""

    def __init__(
        self, tmp: Path | None, rules_yaml: str | None, *devices: DeviceInfo, shipped: bool = False
    ) -> None:
        paths = []
        if rules_yaml is not None:
            assert tmp is not None
            (tmp / "rules.yaml").write_text(rules_yaml)
            paths = [tmp / "rules.yaml"]
        self.book = RuleBook.load(shipped=shipped, paths=paths)
        self.dir = directory(*devices)
        self.engine = Engine(rules=self.book, directory=self.dir, clock="data")
        self.seq = 0
        self.actions: list[Action] = []

    def feed(
        self,
        device_id: str,
        t_us: int,
        metrics: dict[str, float] | None = None,
        events: Sequence[str] = (),
        *,
        device_type: str | None = None,
        alarm: bool = False,
        statuses: Sequence[GatewayObservation] = (),
        gateway: str = "gw1",
        quality: tuple[str, ...] = (),
    ) -> list[Action]:
        info = self.dir.devices.get(device_id)
        dtype = device_type or (info.device_type if info else "door_contact")
        reading = WireReading(
            device_id=device_id,
            device_type=dtype,
            ts_us=t_us,
            received_at_us=t_us,
            metrics=metrics or {},
            events=tuple(events),
            quality=quality,
            profile=f"generic/{dtype}",
            reading_id="",
        )
        self.seq += 1
        env = Envelope(
            v=1,
            gateway_id=gateway,
            community_id=C,
            batch_seq=self.seq,
            batch_class="alarm" if alarm else "telemetry",
            created_at_us=t_us,
            counters={},
            readings=(reading,),
        )
        row = FeedRow(
            feed_seq=self.seq,
            community_id=C,
            committed_at=datetime.now(UTC),
            envelopes=[env],
            statuses=list(statuses),
        )
        got = self.engine.step(row, wall_us=0)
        self.actions += got
        return got

    def clock(self, t_us: int) -> list[Action]:
        """Move the community's data clock with a heartbeat of an unrelated device (on a gateway
        of its own: data from a gateway says it is online)."""
        return self.feed("clock", t_us, {}, device_type="clock", gateway="gw0")


def kinds(actions: Sequence[Action]) -> list[tuple[str, str, str]]:
    return [(a.kind, a.rule, a.subject) for a in actions]


TEXT = """
    title: {zh: "标题 {device_id}", en: "title {device_id}"}
    detail: {zh: "详情 {value}", en: "detail {value} {threshold}"}
"""


def rule(body: str) -> str:
    return "rules:\n  - " + body.strip().replace("\n", "\n    ") + TEXT


def test_threshold_pending_period_hysteresis_and_keep_firing(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: water
kind: threshold
device_types: [manhole_cover]
severity: major
metric: water_level_mm
op: ">="
value: 1000
clear: 800
for: 10m
keep_firing_for: 20m
"""),
        device("m1", "manhole_cover", interval=1800),
    )
    assert h.feed("m1", T0, {"water_level_mm": 1200}) == []  # pending
    assert h.feed("m1", T0 + 5 * MIN, {"water_level_mm": 1100}) == []
    fired = h.feed("m1", T0 + 10 * MIN, {"water_level_mm": 1050})
    assert kinds(fired) == [("fire", "water", "m1")]
    assert fired[0].started_us == T0
    assert fired[0].title_en == "title m1"
    assert fired[0].detail_en == "detail 1050 1000"
    assert fired[0].evidence[0].metric == "water_level_mm"
    # under the fire threshold but above the clear one: still firing (hysteresis)
    assert h.feed("m1", T0 + 15 * MIN, {"water_level_mm": 900}) == []
    # cleared side, but kept firing for 20 min
    assert h.feed("m1", T0 + 20 * MIN, {"water_level_mm": 700}) == []
    assert h.feed("m1", T0 + 30 * MIN, {"water_level_mm": 600}) == []
    cleared = h.feed("m1", T0 + 41 * MIN, {"water_level_mm": 600})
    assert kinds(cleared) == [("clear", "water", "m1")]
    # a short spike shorter than `for` never fires
    h.feed("m1", T0 + 60 * MIN, {"water_level_mm": 1300})
    assert h.feed("m1", T0 + 65 * MIN, {"water_level_mm": 100}) == []
    assert kinds(h.clock(T0 + 90 * MIN)) == []


def test_threshold_pending_period_fires_on_time_without_another_reading(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: gas
kind: threshold
severity: critical
metric: h2s_ppm
op: ">="
value: 10
for: 5m
"""),
        device("m1", "manhole_cover", interval=1800),
    )
    h.feed("m1", T0, {"h2s_ppm": 30})
    assert h.clock(T0 + 4 * MIN) == []
    fired = h.clock(T0 + 6 * MIN)
    assert kinds(fired) == [("fire", "gas", "m1")]
    assert T0 + 5 * MIN <= fired[0].at_us <= T0 + 6 * MIN


@pytest.mark.parametrize(("mode", "expected"), [("keep", []), ("clear", ["clear"]), ("alert", ["fire"])])
def test_threshold_no_data(tmp_path: Path, mode: str, expected: list[str]) -> None:
    h = Harness(
        tmp_path,
        rule(f"""
id: batt
kind: threshold
severity: minor
metric: battery_pct
op: "<"
value: 15
for: 1h
no_data: {mode}
no_data_after: 2h
"""),
        device("d1", "door_contact"),
    )
    if mode == "clear":
        h.feed("d1", T0, {"battery_pct": 10})
        h.feed("d1", T0 + 61 * MIN, {"battery_pct": 10})
        assert kinds(h.actions) == [("fire", "batt", "d1")]
    else:
        h.feed("d1", T0, {"battery_pct": 10})  # pending; then silence
    before = len(h.actions)
    h.clock(T0 + 4 * H)
    assert [a.kind for a in h.actions[before:]] == expected


def test_latched_event_fires_every_press_and_never_clears(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: sos
kind: event
device_types: [sos_button]
severity: critical
events: [sos_pressed, sos_long_pressed]
latched: true
"""),
        device("s1", "sos_button"),
    )
    assert kinds(h.feed("s1", T0, events=["sos_pressed"], alarm=True)) == [("fire", "sos", "s1")]
    assert kinds(h.feed("s1", T0 + MIN, events=["sos_long_pressed"], alarm=True)) == [("fire", "sos", "s1")]
    assert h.feed("s1", T0 + 2 * MIN, events=["heartbeat"]) == []
    assert h.clock(T0 + 48 * H) == []
    # delivered late (after an outage): still fires, started at its device time
    late = h.feed("s1", T0 + 10 * MIN, events=["sos_pressed"], alarm=True)
    assert kinds(late) == [("fire", "sos", "s1")]
    assert late[0].started_us == T0 + 10 * MIN


def test_a_note_event_is_noted_and_changes_nothing_else(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: sos
kind: event
device_types: [sos_button]
severity: critical
events: [sos_pressed]
latched: true
note_events: [sos_cancelled]
"""),
        device("s1", "sos_button"),
    )
    assert kinds(h.feed("s1", T0, events=["sos_pressed"], alarm=True)) == [("fire", "sos", "s1")]
    noted = h.feed("s1", T0 + MIN // 2, events=["sos_cancelled"], alarm=True)
    assert kinds(noted) == [("note", "sos", "s1")]
    assert [e.event for e in noted[0].evidence] == ["sos_cancelled"]
    assert h.clock(T0 + 48 * H) == []  # still latched: nothing clears it
    # a press after the cancel is a new trigger as before
    assert kinds(h.feed("s1", T0 + MIN, events=["sos_pressed"], alarm=True)) == [("fire", "sos", "s1")]


def test_event_repeats_and_clears_on_clear_event_or_after_quiet(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        """
rules:
  - id: lifted
    kind: event
    severity: critical
    events: [cover_opened]
    clear_events: [cover_closed]
"""
        + TEXT.replace("\n    ", "\n    ", 1)
        + """
  - id: gas_evt
    kind: event
    severity: critical
    events: [gas_alarm]
    clear_after: 30m
"""
        + TEXT,
        device("m1", "manhole_cover"),
    )
    assert kinds(h.feed("m1", T0, events=["cover_opened"])) == [("fire", "lifted", "m1")]
    assert kinds(h.feed("m1", T0 + MIN, events=["cover_opened"])) == [("repeat", "lifted", "m1")]
    assert kinds(h.feed("m1", T0 + 2 * MIN, events=["cover_closed"])) == [("clear", "lifted", "m1")]
    # an opening older than the close that ended it: stale, nothing
    assert h.feed("m1", T0 + 90 * S, events=["cover_opened"]) == []
    assert kinds(h.feed("m1", T0 + 3 * MIN, events=["gas_alarm"])) == [("fire", "gas_evt", "m1")]
    assert h.clock(T0 + 20 * MIN) == []
    assert kinds(h.clock(T0 + 40 * MIN)) == [("clear", "gas_evt", "m1")]


def test_state_duration_with_the_sun(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: day_lamp
kind: state_duration
device_types: [streetlight]
severity: minor
metric: lamp_on
equals: 1
sun: day
for: 30m
"""),
        device("l1", "streetlight", interval=900),
    )
    night = T0 + 13 * H  # 21:00 in Shanghai
    for i in range(5):
        h.feed("l1", night + i * 15 * MIN, {"lamp_on": 1})
    assert h.actions == []
    noon = T0 + 28 * H  # 12:00 in Shanghai, the next day
    h.feed("l1", noon - 10 * MIN, {"lamp_on": 0})
    h.feed("l1", noon, {"lamp_on": 1})
    h.feed("l1", noon + 15 * MIN, {"lamp_on": 1})
    assert h.actions == []
    fired = h.feed("l1", noon + 30 * MIN, {"lamp_on": 1})
    assert kinds(fired) == [("fire", "day_lamp", "l1")]
    assert kinds(h.feed("l1", noon + 45 * MIN, {"lamp_on": 0})) == [("clear", "day_lamp", "l1")]


def test_state_duration_needs_fresh_data(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: open_door
kind: state_duration
severity: minor
metric: contact_open
equals: 1
for: 90m
"""),
        device("d1", "door_contact"),
    )
    h.feed("d1", T0, {"contact_open": 1})
    # silent for longer than two report intervals: the state is not known any more
    assert h.clock(T0 + 3 * H) == []
    h2 = Harness(tmp_path, None, device("d1", "door_contact"))
    h2.engine = Engine(rules=h.book, directory=h.dir, clock="data")
    h2.feed("d1", T0, {"contact_open": 1})
    h2.feed("d1", T0 + H, {"contact_open": 1})
    assert kinds(h2.clock(T0 + 91 * MIN)) == [("fire", "open_door", "d1")]


def test_absence_of_devices_heard_and_never_heard(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: silent
kind: absence
severity: minor
after_intervals: 4
"""),
        device("d1", "door_contact"),
        device("d2", "door_contact"),
        device("m1", "manhole_cover", interval=1800),
    )
    h.feed("d1", T0, {"contact_open": 0})
    h.feed("m1", T0, {"cover_open": 0})
    h.clock(T0 + 2 * H + MIN)
    assert kinds(h.actions) == [("fire", "silent", "m1")]  # 4 x 30 min
    h.feed("d1", T0 + 3 * H, {"contact_open": 0})
    h.clock(T0 + 4 * H + MIN)
    assert ("fire", "silent", "d2") in kinds(h.actions)  # never heard: from when watching began
    assert ("fire", "silent", "d1") not in kinds(h.actions)
    back = h.feed("m1", T0 + 5 * H, {"cover_open": 0})
    assert kinds(back) == [("clear", "silent", "m1")]


def test_gateway_offline_after_its_last_will_and_back(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: gw_off
kind: absence
scope: gateway
severity: major
after: 5m
"""),
        device("d1", "door_contact"),
    )
    h.feed("d1", T0, {"contact_open": 0}, statuses=[GatewayObservation(C, "gw1", "online", 1)])
    h.feed("d1", T0 + MIN, {"contact_open": 0}, statuses=[GatewayObservation(C, "gw1", "offline", 2)])
    assert h.clock(T0 + 4 * MIN) == []
    assert kinds(h.clock(T0 + 7 * MIN)) == [("fire", "gw_off", "gw1")]
    assert h.actions[-1].subject_kind == "gateway"
    back = h.feed("d1", T0 + 8 * MIN, {"contact_open": 0})
    assert kinds(back) == [("clear", "gw_off", "gw1")]


def test_inactivity_counts_active_hours_only(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: inactive
kind: inactivity
severity: major
hours: 12
active_hours: "07:00-22:00"
"""),
        device("d1", "door_contact", resident_id="r1", living_alone=True),
        device("d2", "door_contact", resident_id="r2", living_alone=False),
    )
    # 08:00 local: a door opening; 12 active hours later is 20:00 local the same day
    h.feed("d1", T0, {"contact_open": 1, "open_count": 5}, ["door_opened"])
    h.feed("d2", T0, {"contact_open": 0, "open_count": 1})
    for hour in range(1, 12):
        h.feed("d1", T0 + hour * H, {"contact_open": 0, "open_count": 5})
    assert h.actions == []
    h.feed("d1", T0 + 12 * H + MIN, {"contact_open": 0, "open_count": 5})
    assert kinds(h.actions) == [("fire", "inactive", "r1")]  # r2 does not live alone
    assert h.actions[0].subject_kind == "resident"
    assert h.actions[0].device_id == "d1"
    # the opening counter moved (an opening between two reports): activity
    cleared = h.feed("d1", T0 + 13 * H, {"contact_open": 0, "open_count": 6})
    assert kinds(cleared) == [("clear", "inactive", "r1")]
    # 21:00 local -> the night does not count: next morning 07:00 + 11 h = 18:00 local, not yet
    h.feed("d1", T0 + 13 * H + 30 * MIN, {"contact_open": 0, "open_count": 6})
    h.clock(T0 + 33 * H)  # 17:00 local, next day
    assert len(h.actions) == 2


def test_composite_all_and_any(tmp_path: Path) -> None:
    h = Harness(
        tmp_path, None, device("l1", "streetlight", interval=900), device("m1", "manhole_cover"), shipped=True
    )
    # a dead lamp: on, dimmed up, no power, for 10 min
    h.feed("l1", T0 + 14 * H, {"lamp_on": 1, "dim_pct": 100, "power_w": 0.0})
    assert h.actions == []
    h.feed("l1", T0 + 14 * H + 15 * MIN, {"lamp_on": 1, "dim_pct": 100, "power_w": 0.0})
    assert kinds(h.actions) == [("fire", "lamp_failure", "l1")]
    h.feed("l1", T0 + 14 * H + 30 * MIN, {"lamp_on": 1, "dim_pct": 100, "power_w": 80.0})
    assert kinds(h.actions)[-1] == ("clear", "lamp_failure", "l1")
    # a cover tilted but reported closed: any of the conditions
    h.feed("m1", T0 + 14 * H + 31 * MIN, {"cover_open": 0, "tilt_deg": -40})
    assert kinds(h.actions)[-1] == ("fire", "manhole_open", "m1")


def test_late_readings_never_fire_a_condition_that_is_over(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        rule("""
id: gas
kind: threshold
severity: critical
metric: h2s_ppm
op: ">="
value: 10
"""),
        device("m1", "manhole_cover", interval=1800),
    )
    h.feed("m1", T0 + 10 * MIN, {"h2s_ppm": 0.2})
    assert h.feed("m1", T0, {"h2s_ppm": 40}) == []  # older than what we know: superseded
    fired = h.feed("m1", T0 + 20 * MIN, {"h2s_ppm": 40})
    assert kinds(fired) == [("fire", "gas", "m1")]
    assert h.feed("m1", T0 + 15 * MIN, {"h2s_ppm": 0.1}) == []  # late: does not clear either
    assert kinds(h.feed("m1", T0 + 25 * MIN, {"h2s_ppm": 0.1})) == [("clear", "gas", "m1")]


def test_restored_engine_continues_exactly(tmp_path: Path) -> None:
    devices = [
        device("d1", "door_contact", resident_id="r1", living_alone=True),
        device("m1", "manhole_cover", interval=1800),
        device("s1", "sos_button"),
    ]
    script: list[tuple[str, int, dict[str, float], list[str]]] = []
    for i in range(48):
        t = T0 + i * 30 * MIN
        script.append(("m1", t, {"water_level_mm": 900 + 300 * (i % 5 == 0), "battery_pct": 20 - i / 4}, []))
        if i in (0, 40):
            script.append(("d1", t + MIN, {"contact_open": 1, "open_count": i}, ["door_opened"]))
        if i == 30:
            script.append(("s1", t + 2 * MIN, {}, ["sos_pressed"]))
    whole = Harness(None, None, *devices, shipped=True)
    for d, t, m, e in script:
        whole.feed(d, t, m, e)
    first = Harness(None, None, *devices, shipped=True)
    half = len(script) // 2
    for d, t, m, e in script[:half]:
        first.feed(d, t, m, e)
    saved = first.engine.take_dirty()
    second = Harness(None, None, *devices, shipped=True)
    second.seq = first.seq
    second.engine.restore((k, v) for k, v in saved.items() if v is not None)
    for d, t, m, e in script[half:]:
        second.feed(d, t, m, e)
    assert kinds(first.actions + second.actions) == kinds(whole.actions)
    assert {a.rule for a in whole.actions} >= {
        "battery_low",
        "water_level_high",
        "sos_pressed",
        "resident_inactive",
    }


def test_a_gateway_offline_is_one_incident_not_one_per_device(tmp_path: Path) -> None:
    """The devices of a gateway that said it is offline are not each `device_silent`; and with
    the data clock a device is absent by its own gateway's time (while that lags by an hour at
    most), so another gateway's data running ahead does not make it absent."""
    h = Harness(
        tmp_path,
        rule("""
id: silent
kind: absence
severity: minor
after_intervals: 0.5
"""),
        device("d1", "door_contact"),
        device("d2", "door_contact", gateway="gw2"),
    )
    h.feed("d1", T0, {"contact_open": 0}, gateway="gw1")
    h.feed("d2", T0, {"contact_open": 0}, gateway="gw2")
    h.feed("d1", T0 + 50 * MIN, {"contact_open": 0}, gateway="gw1")  # gw2's data is 50 min behind
    assert h.actions == []
    h.feed("d2", T0 + 20 * MIN, {"contact_open": 0}, gateway="gw2")
    h.feed("d1", T0 + 55 * MIN, {"contact_open": 0}, gateway="gw1")
    assert h.actions == []
    # gw2 says it is offline: its devices are left to the gateway's own rule
    offline = [GatewayObservation(C, "gw2", "offline", 1)]
    h.feed("d1", T0 + 60 * MIN, {"contact_open": 0}, gateway="gw1", statuses=offline)
    h.clock(T0 + 6 * H)
    assert ("fire", "silent", "d2") not in kinds(h.actions)
    assert ("fire", "silent", "d1") in kinds(h.actions)  # gw1 is not offline: d1 is silent


def test_a_lamp_that_does_not_follow_its_command_is_an_incident_until_one_is_confirmed(
    tmp_path: Path,
) -> None:
    """The shipped ``command`` rule: ``linli cloud commands`` writes ``command_not_confirmed`` when
    the gateway reports a command failed or expired; a later confirmed command clears it. The
    cloud's note (quality ``cloud``) is no sign of the device's life: the absence rule still fires."""
    h = Harness(None, None, device("lamp1", "streetlight", interval=900), shipped=True)
    h.feed("lamp1", T0, {"lamp_on": 1, "dim_pct": 100, "power_w": 80})
    fired = h.feed("lamp1", T0 + MIN, events=["command_not_confirmed"], alarm=True, quality=("cloud",))
    assert kinds(fired) == [("fire", "lamp_ignores_command", "lamp1")]
    again = h.feed("lamp1", T0 + 2 * MIN, events=["command_not_confirmed"], alarm=True, quality=("cloud",))
    assert [a.kind for a in again] in ([], ["repeat"])
    cleared = h.feed("lamp1", T0 + 3 * MIN, events=["command_confirmed"], quality=("cloud",))
    assert kinds(cleared) == [("clear", "lamp_ignores_command", "lamp1")]
    # only notes from the cloud after the last report: the device is still silent, and is offline
    h.feed("lamp1", T0 + 30 * MIN, events=["command_not_confirmed"], alarm=True, quality=("cloud",))
    silent = [a for a in h.clock(T0 + 80 * MIN) if a.rule == "device_silent"]
    assert kinds(silent) == [
        ("fire", "device_silent", "lamp1")
    ]  # 4 x 900 s after its last report, not its last note
