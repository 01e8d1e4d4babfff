"""schemathesis against the live application (uvicorn on loopback, real PostgreSQL with
TimescaleDB, authenticated as an administrator): for every operation of the OpenAPI document,
generated requests (valid and invalid) never get a server error and every answer conforms to the
schema (status codes, content types, bodies, headers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cloud.api.app import create_app
from cloud.config import build_settings
from cloud.incidents.people import People
from cloud.incidents.record import Context
from cloud.incidents.transitions import apply
from cloud.store.migrate import migrate
from tests.cloud.api.conftest import API_PEOPLE, PASSWORD, login, serve
from tests.cloud.incidents.conftest import fire
from tests.conftest import PgServer

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def live(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """The API on a database of its own, with an administrator logged in: (base URL, headers)."""
    from cloud.api.accounts import add_user

    name = pg_server.create_database()
    url = pg_server.dsn(name)
    people = People.model_validate(API_PEOPLE)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        add_user(conn, people, "a-root", PASSWORD)
    # something to answer with: a device of c01, its SOS incident (with its audit trail once the
    # escalator or a transition writes one), a reading and an event
    incident = fire(url, subject="sos-1", community_id="c01")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO readings (time, device_id, metric, value) VALUES (now(), 'sos-1', 'battery_pct', 80)"
        )
        conn.execute("INSERT INTO events (time, device_id, event) VALUES (now(), 'sos-1', 'sos_pressed')")
        apply(conn, incident, "accept", actor="a-root", ctx=Context(people=people))
    key_file = tmp_path_factory.mktemp("api") / "key"
    app_settings = build_settings({"database_url": url, "api": {"token_key_file": str(key_file)}})
    try:
        with serve(create_app(app_settings, context=Context(people=people))) as base:
            with httpx.Client(base_url=base) as c:
                headers = login(c, "a-root")
            yield base, headers
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def api_schema(live: tuple[str, dict[str, str]]) -> Any:
    base, _ = live
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    # the live feed never ends: tests/cloud/api/test_incidents.py reads it
    return schema.exclude(path="/api/v1/live")


def test_no_server_error_and_answers_conform_to_the_schema(
    api_schema: Any, live: tuple[str, dict[str, str]]
) -> None:
    """Each operation in turn, valid and invalid inputs (schemathesis' pytest plugin does not work
    with pytest 9, so the operations are walked here with its Python API)."""
    base, headers = live
    failures: list[str] = []
    labels: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(
            case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
            | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            # not `positive_data_acceptance`: some refusals cannot be said in OpenAPI (start after
            # end, more points than one answer holds, a stale cursor) and are 422 by design
            case.call_and_validate(base_url=base, headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    assert "POST /api/v1/auth/token" in labels
    assert not failures, "\n\n".join(failures)
