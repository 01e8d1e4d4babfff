"""``linli cloud alerts``: build the rules, the directory and the service, and run them with an
endpoint until told to stop."""

from __future__ import annotations

import logging
import random
import threading
import time

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
from cloud.errors import CloudError
from cloud.ingest.worker import backoff_delay
from cloud.store.inventory import DeviceFacts, sync_devices
from cloud.store.migrate import migrate
from device_profiles.inventory import file_stamp

log = logging.getLogger("linli.cloud.alerts")


class DirectoryBox:
    """The directory each new session's engine is built with; replaced when the inventory changes."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory


def build_service(
    settings: CloudSettings, directory: Directory | None = None, *, box: DirectoryBox | None = None
) -> AlertService:
    """The service of `settings` (rules and directory loaded and checked: `CloudError` if not)."""
    config = settings.alerts
    rules = RuleBook.load(shipped=config.shipped_rules, paths=config.rules)
    if box is None:
        box = DirectoryBox(directory if directory is not None else load_directory(config))
    current = box

    def make_engine() -> Engine:
        return Engine(rules=rules, directory=current.directory, clock=config.clock)

    def make_detection() -> DetectionRound:
        return DetectionRound(directory=current.directory, partition=Partition.parse(config.partition))

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


def reload_inventory(settings: CloudSettings, box: DirectoryBox, service: AlertService) -> bool:
    """A changed inventory file: load and check it, write its facts to the devices table, and
    renew the service's session with it. An invalid file is logged and the running one kept."""
    try:
        directory = load_directory(settings.alerts)
    except CloudError as exc:
        log.error("inventory changed but not reloaded (the running one stays): %s", exc)
        return False
    sync_inventory(settings, directory)
    box.directory = directory
    service.renew()
    log.info("inventory reloaded: %d devices", len(directory.devices))
    return True


def run_alerts(settings: CloudSettings, stop: threading.Event) -> int:
    """Migrate (as the ingest does), write the inventory's facts, then run one partition until
    `stop`."""
    box = DirectoryBox(load_directory(settings.alerts))
    service = build_service(settings, box=box)
    if not wait_for_schema(settings, stop, random.Random()):  # noqa: S311 - backoff jitter
        return 0
    sync_inventory(settings, box.directory)
    inventory, every = settings.alerts.inventory, settings.alerts.inventory_watch_s
    stamp = file_stamp(inventory) if inventory is not None else None
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
        next_check = time.monotonic() + every
        while thread.is_alive() and not stop.wait(min(0.5, every) if every else 0.5):
            if inventory is None or not every or time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + every
            now = file_stamp(inventory)
            if now != stamp:
                stamp = now
                reload_inventory(settings, box, service)
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
