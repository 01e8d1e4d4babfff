"""The detectors' rule kinds: parameters in the same YAML files as the engine's rules.

A detector rule is a rule like any other (an id, a severity, device types, bilingual texts; the
overrides and per-community files of `cloud.alerts.rules` apply), but the engine does not evaluate
it: the detection round of the alert service does (`cloud.alerts.detect.runner`), on the stored
history of a community. Its texts may use ``{why}``: the detector's own explanation, in the
text's language ("usually opens the door by 07:10 after an evening like this; ...").
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from cloud.alerts.rulebase import Duration, RuleBase

DAY: Final = 86_400.0
HOUR: Final = 3_600.0


class DetectorBase(RuleBase):
    """What every detector rule has besides a rule's keys: how often it runs (``every``, on the
    community's clock: the wall clock, or the data clock of a simulation)."""

    every: Duration = Field(default=600.0, gt=0)


class RoutineRule(DetectorBase):
    """A resident living alone whose door has been quiet for longer than is plausible **for this
    resident at this time of day**. For each of the last ``history`` days, the activity nearest
    the clock time of the last activity (within ``match_within``) and the quiet time after it
    are a sample of how long this resident usually stays quiet after activity at that time of
    day (at least ``min_days`` such days are needed); the incident fires when the current
    quiet time exceeds the weighted ``quantile`` of those samples by ``margin`` (and is at least
    ``min_gap``), at most ``max_probability`` of the weighted days were as quiet, and at most
    ``population_max`` of the community's quiet times after activity in that hour of the day were
    as long (a rare day of this resident that is ordinary life for the community). A door contact
    that sent less than ``min_reports`` of its periodic reports over the quiet time is losing its
    messages: its quiet says nothing about the resident (``report_interval_drift``). Recent days
    weigh more (``half_life``), so a routine that changes for good is learnt within days; days
    of the other kind (weekday, weekend) weigh ``other_day_weight``. With less than
    ``min_history`` of history it stays silent: the fixed ``inactivity`` rule covers the cold
    start."""

    kind: Literal["routine"]
    device_types: tuple[str, ...] = ("door_contact",)
    history: Duration = Field(default=56 * DAY, ge=7 * DAY)
    min_history: Duration = Field(default=21 * DAY, ge=3 * DAY)
    quantile: float = Field(default=0.9, gt=0.5, lt=1.0)
    margin: Duration = 3 * HOUR
    population_max: float = Field(default=0.01, gt=0.0, le=1.0)
    min_reports: float = Field(default=0.8, ge=0.0, le=1.0)
    min_gap: Duration = 3 * HOUR
    max_probability: float = Field(default=0.05, gt=0.0, lt=1.0)
    half_life: Duration = Field(default=14 * DAY, gt=0)
    other_day_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    match_within: Duration = Field(default=2 * HOUR, gt=0)
    min_days: int = Field(default=14, ge=1)

    def describe(self) -> str:
        return (
            f"door quiet longer than the resident's own {self.quantile:g} quantile at this time of day"
            f" + {self.margin / HOUR:g} h (at least {self.min_gap / HOUR:g} h); clears on door activity"
        )


class LampDriftRule(DetectorBase):
    """A streetlight whose power at full output drifts below its own baseline: the median power
    (normalised to 100 % dim level, readings at ``full_dim_pct`` or more) over the ``recent``
    nights is ``drop`` below the median of the ``baseline`` before them (at least
    ``min_nights`` nights of it). The explanation projects when it falls to ``fail_ratio``."""

    kind: Literal["lamp_drift"]
    device_types: tuple[str, ...] = ("streetlight",)
    baseline: Duration = Field(default=28 * DAY, ge=3 * DAY)
    recent: Duration = Field(default=2 * DAY, ge=HOUR)
    min_nights: int = Field(default=5, ge=2)
    drop: float = Field(default=0.12, gt=0.0, lt=1.0)
    full_dim_pct: float = Field(default=90.0, gt=0.0, le=100.0)
    fail_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)

    def describe(self) -> str:
        return f"power at full output {self.drop:.0%} under the lamp's own baseline; clears when back"


class LampTimingRule(DetectorBase):
    """A streetlight that switches on at times inconsistent with the sun: over the last
    ``nights`` evenings its median switch-on time is more than ``tolerance`` away from dusk at
    the community (the sun ``sun_deg`` below the horizon)."""

    kind: Literal["lamp_timing"]
    device_types: tuple[str, ...] = ("streetlight",)
    nights: int = Field(default=3, ge=1, le=14)
    tolerance: Duration = Field(default=20 * 60.0, gt=0)
    sun_deg: float = -2.0

    def describe(self) -> str:
        return f"switches on more than {self.tolerance / 60:g} min from dusk over {self.nights} evenings"


class WaterTrendRule(DetectorBase):
    """Water rising under a manhole cover: a straight line fitted to the last ``window`` of
    readings (at least ``min_points``) rises at ``min_rate`` mm/min or more and reaches
    ``overflow_mm`` within ``horizon``; the level is at least ``floor_mm`` already."""

    kind: Literal["water_trend"]
    device_types: tuple[str, ...] = ("manhole_cover",)
    metric: str = "water_level_mm"
    window: Duration = Field(default=90 * 60.0, gt=0)
    min_points: int = Field(default=3, ge=3)
    min_rate: float = Field(default=5.0, gt=0.0)
    overflow_mm: float = Field(default=1000.0, gt=0.0)
    floor_mm: float = Field(default=200.0, ge=0.0)
    horizon: Duration = Field(default=HOUR, gt=0)

    def describe(self) -> str:
        return (
            f"{self.metric} rising {self.min_rate:g}/min or faster, reaching {self.overflow_mm:g}"
            f" within {self.horizon / 60:g} min; clears when it stops rising"
        )


class BatteryLifeRule(DetectorBase):
    """Days left per battery: a straight line through the last ``window`` of ``battery_pct``
    (spanning at least ``min_span``) reaches ``empty_pct``. Fires when that is within
    ``warn_within``; `linli detect batteries` lists every device within ``list_within``."""

    kind: Literal["battery_life"]
    device_types: tuple[str, ...] = ("door_contact", "sos_button", "manhole_cover")
    metric: str = "battery_pct"
    window: Duration = Field(default=21 * DAY, ge=DAY)
    min_span: Duration = Field(default=5 * DAY, ge=HOUR)
    empty_pct: float = Field(default=5.0, ge=0.0, lt=100.0)
    warn_within: Duration = Field(default=10 * DAY, gt=0)
    list_within: Duration = Field(default=30 * DAY, gt=0)

    def describe(self) -> str:
        return f"{self.metric} reaches {self.empty_pct:g} within {self.warn_within / DAY:g} days at its rate"


class ReportDriftRule(DetectorBase):
    """Radio trouble before silence: a device that sent less than ``ratio`` of its usual
    messages over the last ``window`` (its usual count per hour of the day learnt over
    ``baseline``, of which at least ``min_baseline``; at least ``min_expected`` messages
    expected)."""

    kind: Literal["report_drift"]
    window: Duration = Field(default=12 * HOUR, gt=0)
    baseline: Duration = Field(default=14 * DAY, ge=DAY)
    ratio: float = Field(default=0.6, gt=0.0, lt=1.0)
    min_expected: float = Field(default=8.0, gt=0.0)
    min_baseline: Duration = Field(default=2 * DAY, ge=DAY)

    def describe(self) -> str:
        return f"under {self.ratio:.0%} of its usual messages over {self.window / HOUR:g} h; clears when back"


DetectorRule = (
    RoutineRule | LampDriftRule | LampTimingRule | WaterTrendRule | BatteryLifeRule | ReportDriftRule
)
DETECTOR_KINDS: Final = (
    "routine",
    "lamp_drift",
    "lamp_timing",
    "water_trend",
    "battery_life",
    "report_drift",
)
