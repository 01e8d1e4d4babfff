"""``linli cloud incidents`` and ``linli cloud notify``: build each service from the settings
(the people file and the channels checked: `CloudError` if not) and run it until stopped."""

from __future__ import annotations

import logging
import random
import threading

from cloud.alerts.main import wait_for_schema
from cloud.config import CloudSettings
from cloud.errors import ConfigError
from cloud.incidents.people import People, load_people
from cloud.incidents.record import Context
from cloud.incidents.service import IncidentService
from cloud.notify.channels import build_channel
from cloud.notify.sender import Sender
from cloud.session import run_until_stopped
from device_profiles.config_view import ConfigProblem

log = logging.getLogger("linli.cloud.incidents")


def load_context(settings: CloudSettings) -> Context:
    """The people file (checked against the configured channels) with the message settings."""
    config = settings.incidents
    if config.people is None:
        log.warning("[incidents] people is not set: incidents are stepped but nobody is told")
        people = People()
    else:
        people = load_people(config.people)
    missing = sorted(people.channel_names() - set(settings.notify.channels))
    if missing:
        raise ConfigError(
            problems=[
                ConfigProblem(
                    "notify.channels", f"the people file uses channel {name!r}, not configured here", ""
                )
                for name in missing
            ]
        )
    return Context(people=people, console_url=config.console_url, timezone=config.timezone)


def run_incidents(settings: CloudSettings, stop: threading.Event) -> int:
    """Migrate (as the ingest does), then run the escalator until `stop`."""
    service = IncidentService(
        database_url=settings.database_url, config=settings.incidents, context=load_context(settings)
    )
    if not wait_for_schema(settings, stop, random.Random()):  # noqa: S311 - backoff jitter
        return 0
    log.info("incident escalator running")
    return run_until_stopped(
        name="incidents",
        target=service.run,
        stop=stop,
        http=settings.incidents.http,
        snapshot=service.snapshot,
    )


def run_notify(settings: CloudSettings, stop: threading.Event) -> int:
    """Migrate, then deliver the outbox until `stop`."""
    channels = {name: build_channel(name, cfg) for name, cfg in settings.notify.channels.items()}
    sender = Sender(database_url=settings.database_url, config=settings.notify, channels=channels)
    if not wait_for_schema(settings, stop, random.Random()):  # noqa: S311 - backoff jitter
        return 0
    log.info("notification sender running: %s", ", ".join(sorted(channels)) or "no channels")
    try:
        return run_until_stopped(
            name="notify", target=sender.run, stop=stop, http=settings.notify.http, snapshot=sender.snapshot
        )
    finally:
        sender.close()
