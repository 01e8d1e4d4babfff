"""``[incidents]``: who works incidents (the people file) and how ``linli cloud incidents`` runs
the escalation ladder. docs/incidents.md has every key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from device_profiles.config_sources import HttpConfig, TimeZoneName


def _incidents_http() -> HttpConfig:
    return HttpConfig(address="127.0.0.1:9110")


class IncidentsConfig(BaseModel):
    """``[incidents]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: staff, escalation ladders, SLA targets and residents' contacts (YAML); without it the
    #: escalator starts but tells nobody, and says so
    people: Path | None = None
    #: the staff console's base URL: messages link to ``<console_url>/incidents/<id>``
    console_url: str = ""
    #: IANA time zone of times in messages
    timezone: TimeZoneName = "Asia/Shanghai"
    #: rules whose incidents also reach the resident's emergency contacts and the doctors at once
    contact_rules: tuple[str, ...] = ("sos_pressed",)
    #: due steps are looked for at once on a new incident, at the next deadline, and at least this often
    poll_interval_s: Annotated[float, Field(gt=0)] = 5.0
    backoff_base_s: Annotated[float, Field(gt=0)] = 0.5
    backoff_cap_s: Annotated[float, Field(gt=0)] = 5.0
    http: HttpConfig = Field(default_factory=_incidents_http)
