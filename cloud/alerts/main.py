"""``linli cloud alerts``: build the rules, the directory and the service, and run them with an
endpoint until told to stop."""

from __future__ import annotations

import logging
import threading

from cloud.alerts.directory import load_directory
from cloud.alerts.engine import Engine
from cloud.alerts.rules import RuleBook
from cloud.alerts.service import AlertService
from cloud.config import CloudSettings
from cloud.endpoint import Endpoint
from cloud.ingest.service import wait_for_store

log = logging.getLogger("linli.cloud.alerts")


def build_service(settings: CloudSettings) -> AlertService:
    """The service of `settings` (rules and directory loaded and checked: `CloudError` if not)."""
    config = settings.alerts
    rules = RuleBook.load(shipped=config.shipped_rules, paths=config.rules)
    directory = load_directory(config)

    def make_engine() -> Engine:
        return Engine(rules=rules, directory=directory, clock=config.clock)

    return AlertService(database_url=settings.database_url, config=config, make_engine=make_engine)


def run_alerts(settings: CloudSettings, stop: threading.Event) -> int:
    """Migrate (as the ingest does), then run one partition until `stop`."""
    import random

    service = build_service(settings)
    if wait_for_store(settings, stop, random.Random()) is None:  # noqa: S311 - backoff jitter
        return 0
    endpoint = None
    if settings.alerts.http.address:
        host, port = settings.alerts.http.host_port
        endpoint = Endpoint(host=host, port=port, snapshot=service.snapshot, service="alerts")
        endpoint.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", endpoint.host, endpoint.port)
    log.info("alert service running: partition %s, clock %s", service.partition, settings.alerts.clock)
    thread = threading.Thread(target=service.run, args=(stop,), name="linli-alerts")
    thread.start()
    try:
        stop.wait()
    finally:
        log.info("stopping: finish the transaction in progress, disconnect")
        thread.join()
        if endpoint is not None:
            endpoint.close()
    return 0
