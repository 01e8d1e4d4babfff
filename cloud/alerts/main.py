"""``linli cloud alerts``: build the rules, the directory and the service, and run them with an
endpoint until told to stop."""

from __future__ import annotations

import logging
import random
import threading

import psycopg

from cloud.alerts.detect.round import DetectionRound
from cloud.alerts.directory import load_directory
from cloud.alerts.engine import Engine
from cloud.alerts.feed import Partition
from cloud.alerts.model import Directory
from cloud.alerts.rules import RuleBook
from cloud.alerts.service import AlertService
from cloud.config import CloudSettings
from cloud.endpoint import Endpoint
from cloud.ingest.worker import backoff_delay
from cloud.store.inventory import DeviceFacts, sync_devices
from cloud.store.migrate import migrate

log = logging.getLogger("linli.cloud.alerts")


def build_service(settings: CloudSettings, directory: Directory | None = None) -> AlertService:
    """The service of `settings` (rules and directory loaded and checked: `CloudError` if not)."""
    config = settings.alerts
    rules = RuleBook.load(shipped=config.shipped_rules, paths=config.rules)
    if directory is None:
        directory = load_directory(config)

    def make_engine() -> Engine:
        return Engine(rules=rules, directory=directory, clock=config.clock)

    def make_detection() -> DetectionRound:
        return DetectionRound(directory=directory, partition=Partition.parse(config.partition))

    return AlertService(
        database_url=settings.database_url,
        config=config,
        make_engine=make_engine,
        make_detection=make_detection if config.detect else None,
    )


def wait_for_schema(settings: CloudSettings, stop: threading.Event, rng: random.Random) -> bool:
    """Migrate the database (under the migration lock: safe beside ingest workers doing the same),
    retried with backoff while it is unreachable; False if stopped first. The storage mode's
    views and jobs are the ingest's business, not prepared here."""
    attempt = 0
    while not stop.is_set():
        try:
            with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
                migrate(conn)
            return True
        except psycopg.OperationalError as exc:
            if attempt == 0:
                log.error("database unavailable at start, retrying: %s", exc)
            config = settings.alerts
            stop.wait(backoff_delay(attempt, base=config.backoff_base_s, cap=config.backoff_cap_s, rng=rng))
            attempt += 1
    return False


def sync_inventory(settings: CloudSettings, directory: Directory) -> None:
    """Write the inventory's facts (places, residents) to the ``devices`` table, where the API and
    the console read them; a database that fails here is logged and left to the next start."""
    if not directory.devices:
        return
    facts = [
        DeviceFacts(d.device_id, d.device_type, d.profile, d.community_id, d.gateway_id, d.lat, d.lon,
                    d.building, d.unit, d.room, d.resident_id, d.living_alone)
        for d in directory.devices.values()
    ]  # fmt: skip
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            changed = sync_devices(conn, facts)
    except psycopg.Error as exc:
        log.warning("inventory not written to the devices table: %s", exc)
        return
    log.info("inventory: %d devices, %d added or changed in the devices table", len(facts), changed)


def run_alerts(settings: CloudSettings, stop: threading.Event) -> int:
    """Migrate (as the ingest does), write the inventory's facts, then run one partition until
    `stop`."""
    directory = load_directory(settings.alerts)
    service = build_service(settings, directory)
    if not wait_for_schema(settings, stop, random.Random()):  # noqa: S311 - backoff jitter
        return 0
    sync_inventory(settings, directory)
    endpoint = None
    if settings.alerts.http.address:
        host, port = settings.alerts.http.host_port
        endpoint = Endpoint(host=host, port=port, snapshot=service.snapshot, service="alerts")
        endpoint.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", endpoint.host, endpoint.port)
    log.info("alert service running: partition %s, clock %s", service.partition, settings.alerts.clock)
    thread = threading.Thread(target=service.run, args=(stop,), name="linli-alerts")
    thread.start()
    told = False
    try:
        # the service thread ends only when told to, or on a bug (its traceback is logged): then
        # exit non-zero, so the supervisor restarts the service from its committed state
        while thread.is_alive() and not stop.wait(0.5):
            pass
        told = stop.is_set()
    finally:
        log.info("stopping: finish the transaction in progress, disconnect")
        stop.set()
        thread.join()
        if endpoint is not None:
            endpoint.close()
    if not told:
        log.error("the alert service stopped unexpectedly")
        return 1
    return 0
