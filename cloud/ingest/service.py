"""``linli cloud ingest``: prepare the database, run one worker and its endpoint until told to stop."""

from __future__ import annotations

import logging
import random
import threading

import psycopg

from cloud.config import CloudSettings
from cloud.endpoint import Endpoint
from cloud.errors import StoreUnavailable
from cloud.ingest.worker import IngestWorker, backoff_delay
from cloud.store.migrate import migrate
from cloud.store.mode import ModeInfo, prepare

log = logging.getLogger("linli.cloud.ingest")


def prepare_store(settings: CloudSettings) -> ModeInfo:
    """Migrate (under the advisory lock, so concurrent workers are safe) and detect the mode."""
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            migrate(conn)
            return prepare(conn, settings.retention)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot prepare the database: {exc}") from exc


def wait_for_store(settings: CloudSettings, stop: threading.Event, rng: random.Random) -> ModeInfo | None:
    """`prepare_store`, retried with backoff while the database is unreachable; None if stopped."""
    attempt = 0
    while not stop.is_set():
        try:
            return prepare_store(settings)
        except StoreUnavailable as exc:
            if attempt == 0:
                log.error("database unavailable at start, retrying: %s", exc)
            delay = backoff_delay(
                attempt, base=settings.ingest.backoff_base_s, cap=settings.ingest.backoff_cap_s, rng=rng
            )
            attempt += 1
            stop.wait(delay)
    return None


def run_ingest(settings: CloudSettings, stop: threading.Event) -> int:
    rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
    mode = wait_for_store(settings, stop, rng)
    if mode is None:
        return 0
    worker = IngestWorker(settings=settings, mode=mode, rng=rng)
    endpoint = None
    if settings.http.address:
        host, port = settings.http.host_port
        endpoint = Endpoint(host=host, port=port, snapshot=worker.snapshot)
        endpoint.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", endpoint.host, endpoint.port)
    worker.start()
    log.info("ingest running as %s (mode %s)", settings.mqtt.client_id, mode.mode)
    try:
        stop.wait()
    finally:
        log.info("stopping: intake, commit, acknowledge, disconnect")
        worker.stop()
        if endpoint is not None:
            endpoint.close()
    return 0
