"""``GET /api/v1/devices/{id}/readings``: raw pages, buckets from the raw table and from the hourly
rollup (equal to SQL over the raw rows), time zones, CSV, limits and bad input."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from cloud.api.app import create_app
from cloud.api.history import RollupState
from cloud.api.hourly import HourlyCache
from cloud.config import CloudSettings, RetentionConfig
from cloud.incidents.record import Context
from cloud.store.mode import prepare
from cloud.store.rollup import refresh_rollup
from tests.cloud.api.conftest import Clock, client_state, login, serve

pytestmark = [pytest.mark.integration]

END = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
START = END - timedelta(days=3)
URL = "/api/v1/devices/lamp-1/readings"


@pytest.fixture
def history(migrated_url: str) -> str:
    """lamp-1 (c01) and lamp-2 (c02): a power and a lamp_on value every minute for 3 days; the
    hourly rollup brought up to the last day (so the view mixes rollup and raw rows)."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id) VALUES"
            " ('lamp-1', 'streetlight', 'p', 'c01'), ('lamp-2', 'streetlight', 'p', 'c02')"
        )
        conn.execute(
            "INSERT INTO readings (time, device_id, metric, value)"
            " SELECT t, d, m, CASE m WHEN 'power_w' THEN 40 + extract(epoch FROM t)::bigint %% 17 ELSE 1 END"
            " FROM generate_series(%s::timestamptz, %s::timestamptz - INTERVAL '1 minute',"
            " INTERVAL '1 minute') AS t,"
            " unnest(ARRAY['lamp-1', 'lamp-2']) AS d, unnest(ARRAY['power_w', 'lamp_on']) AS m",
            (START, END),
        )
        prepare(conn, RetentionConfig())
        with conn.transaction():
            refresh_rollup(conn, now=END - timedelta(days=1), margin=timedelta(minutes=5))
    return migrated_url


@pytest.fixture
def staff(client: httpx.Client, accounts: Callable[..., None]) -> dict[str, str]:
    accounts("w-zhang")
    return login(client, "w-zhang")


def _get(client: httpx.Client, headers: dict[str, str], **params: Any) -> httpx.Response:
    params.setdefault("start", START.isoformat())
    params.setdefault("end", END.isoformat())
    return client.get(URL, headers=headers, params={k: v for k, v in params.items() if v is not None})


def _sql(url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()


def test_raw_rows_come_page_by_page_without_gap_or_repeat(
    client: httpx.Client, history: str, staff: dict[str, str]
) -> None:
    seen: list[tuple[str, str]] = []
    after = None
    pages = 0
    start = END - timedelta(hours=2)
    while True:
        params: dict[str, Any] = {"metric": ["power_w", "lamp_on"], "limit": 50, "start": start.isoformat()}
        if after:
            params["after"] = after
        body = _get(client, staff, **params).json()
        assert body["source"] == "raw"
        assert body["interval"] is None
        seen += [(p["time"], m) for m, points in body["series"].items() for p in points]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert pages == 5  # 240 rows, 50 a page
    assert len(seen) == len(set(seen)) == 240


def test_hourly_buckets_come_from_the_rollup_and_equal_sql_over_the_raw_rows(
    client: httpx.Client, history: str, staff: dict[str, str]
) -> None:
    body = _get(client, staff, metric="power_w", interval="1h", agg="avg").json()
    assert body["source"] == "hourly"
    expected = _sql(
        history,
        "SELECT date_trunc('hour', time), avg(value) FROM readings WHERE device_id = 'lamp-1'"
        " AND metric = 'power_w' GROUP BY 1 ORDER BY 1",
    )
    got = body["series"]["power_w"]
    assert len(got) == len(expected) == 72
    for point, (hour, value) in zip(got, expected, strict=True):
        assert datetime.fromisoformat(point["time"]) == hour
        assert point["value"] == pytest.approx(value)
    hourly_counts = _get(client, staff, metric="power_w", interval="1h", agg="count").json()
    assert [p["value"] for p in hourly_counts["series"]["power_w"]] == [60.0] * 72  # rollup rows and raw
    peaks = _get(client, staff, metric="power_w", interval="1h", agg="max").json()["series"]["power_w"]
    assert [(p["value"],) for p in peaks] == _sql(
        history,
        "SELECT max(value) FROM readings WHERE device_id = 'lamp-1' AND metric = 'power_w'"
        " GROUP BY date_trunc('hour', time) ORDER BY date_trunc('hour', time)",
    )
    counts = _get(client, staff, metric="power_w", interval="6h", agg="count", tz="UTC").json()
    assert counts["source"] == "hourly"
    assert [p["value"] for p in counts["series"]["power_w"]] == [360.0] * 12


def test_buckets_that_the_rollup_cannot_answer_come_from_the_raw_rows(
    client: httpx.Client, history: str, staff: dict[str, str]
) -> None:
    quarter = _get(
        client,
        staff,
        metric="power_w",
        interval="15m",
        agg="max",
        start=(END - timedelta(hours=1)).isoformat(),
    )
    assert quarter.json()["source"] == "raw"
    expected = _sql(
        history,
        "SELECT max(value) FROM readings WHERE device_id = 'lamp-1' AND metric = 'power_w' AND time >= %s"
        " GROUP BY date_bin('15 minutes', time, TIMESTAMPTZ '2000-01-01') ORDER BY 1",
        END - timedelta(hours=1),
    )
    assert sorted(p["value"] for p in quarter.json()["series"]["power_w"]) == sorted(v for (v,) in expected)
    first = _get(client, staff, metric="power_w", interval="1h", agg="first").json()
    assert first["source"] == "raw"
    assert first["series"]["power_w"][0]["value"] == 40 + int(START.timestamp()) % 17
    last = _get(client, staff, metric="power_w", interval="1h", agg="last").json()
    final = END - timedelta(minutes=1)
    assert last["series"]["power_w"][-1]["value"] == 40 + int(final.timestamp()) % 17
    off_hour = _get(
        client, staff, metric="power_w", interval="1h", start=(START + timedelta(minutes=30)).isoformat()
    )
    assert off_hour.json()["source"] == "raw"


def test_daily_buckets_start_at_midnight_in_the_requested_zone(
    client: httpx.Client, history: str, staff: dict[str, str]
) -> None:
    shanghai = _get(client, staff, metric="lamp_on", interval="1d", agg="count").json()
    times = [datetime.fromisoformat(p["time"]) for p in shanghai["series"]["lamp_on"]]
    assert {(t.astimezone(UTC).hour, t.minute) for t in times} == {(16, 0)}
    assert sum(p["value"] for p in shanghai["series"]["lamp_on"]) == 3 * 1440
    utc = _get(client, staff, metric="lamp_on", interval="1d", agg="count", tz="UTC").json()
    assert [p["value"] for p in utc["series"]["lamp_on"]] == [1440.0] * 3


def test_several_metrics_and_csv(client: httpx.Client, history: str, staff: dict[str, str]) -> None:
    both = _get(client, staff, metric=["power_w", "lamp_on"], interval="1d", agg="sum", tz="UTC").json()
    assert set(both["series"]) == {"power_w", "lamp_on"}
    assert [p["value"] for p in both["series"]["lamp_on"]] == [1440.0] * 3
    r = client.get(
        URL,
        headers={**staff, "Accept": "text/csv"},
        params={
            "metric": "power_w",
            "start": (END - timedelta(minutes=3)).isoformat(),
            "end": END.isoformat(),
        },
    )
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["time", "metric", "value"]
    assert [row[1] for row in rows[1:]] == ["power_w"] * 3


def test_large_answers_are_gzip_compressed_for_clients_that_accept_it(
    client: httpx.Client, history: str, staff: dict[str, str]
) -> None:
    params = {"metric": "power_w", "start": (END - timedelta(hours=8)).isoformat(), "end": END.isoformat()}
    plain = client.get(URL, headers={**staff, "Accept-Encoding": "identity"}, params=params)
    assert "content-encoding" not in plain.headers
    with client.stream("GET", URL, headers={**staff, "Accept-Encoding": "gzip"}, params=params) as r:
        assert r.headers["content-encoding"] == "gzip"
        wire = b"".join(r.iter_raw())
    assert gzip.decompress(wire) == plain.content  # the same answer ...
    assert len(wire) * 5 < len(plain.content)  # ... in a fraction of the bytes (480 points)
    # a small answer is sent as it is
    small = client.get(URL, headers={**staff, "Accept-Encoding": "gzip"}, params={**params, "limit": 1})
    assert "content-encoding" not in small.headers


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"metric": "power_w", "interval": "10s"}, "ask for a shorter range"),
        ({"metric": "power_w", "limit": 20_000}, "above the most points"),
        ({"metric": "power_w", "start": "2026-11-29T00:00:00"}, "timezone"),
        ({"metric": "power_w", "interval": "5min"}, "should match pattern"),
        ({"metric": "power_w", "interval": "1h", "agg": "median"}, "avg"),
        ({"metric": "power_w", "interval": "1d", "tz": "Mars/Olympus"}, "Asia/Shanghai"),
        (
            {"metric": "power_w", "start": END.isoformat(), "end": START.isoformat()},
            "end must be after start",
        ),
        ({"metric": "power_w", "after": "garbage!"}, "not a cursor"),
        ({"metric": "power_w", "start": None, "end": "0001-01-01T05:00:00+00:00"}, "a time out of range"),
        ({}, "metric"),
    ],
)
def test_bad_requests_are_422_saying_what_to_change(
    client: httpx.Client, history: str, staff: dict[str, str], params: dict[str, Any], fragment: str
) -> None:
    r = _get(client, staff, **params)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_another_communitys_device_is_404_and_an_integrator_reads_its_own(
    client: httpx.Client, history: str, staff: dict[str, str], api_key: Callable[..., str]
) -> None:
    foreign = client.get("/api/v1/devices/lamp-2/readings", headers=staff, params={"metric": "power_w"})
    assert foreign.status_code == 404
    missing = client.get("/api/v1/devices/nope/readings", headers=staff, params={"metric": "power_w"})
    assert missing.status_code == 404
    assert foreign.json()["detail"].replace("lamp-2", "X") == missing.json()["detail"].replace("nope", "X")
    key = {"X-API-Key": api_key("c02")}
    own = client.get(
        "/api/v1/devices/lamp-2/readings",
        headers=key,
        params={"metric": "power_w", "interval": "1d", "start": START.isoformat(), "end": END.isoformat()},
    )
    assert own.status_code == 200
    assert len(own.json()["series"]["power_w"]) == 4  # three days, cut at Shanghai midnight


@pytest.fixture
def uncached(api_settings: CloudSettings, api_context: Context, clock: Clock) -> Iterator[httpx.Client]:
    """The same API without the cache of rolled-up hours: every series from SQL."""
    settings = api_settings.model_copy(
        update={"api": api_settings.api.model_copy(update={"hourly_cache_hours": 0})}
    )
    with (
        serve(create_app(settings, context=api_context, clock=clock)) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        yield c


def _series(body: dict[str, Any]) -> dict[str, list[tuple[datetime, float]]]:
    return {
        m: [(datetime.fromisoformat(p["time"]), p["value"]) for p in points]
        for m, points in body["series"].items()
    }


@pytest.fixture
def server_in_shanghai(history: str) -> str:
    """The database's own time zone is not UTC (the API's answers are in UTC all the same)."""
    with psycopg.connect(history, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Shanghai'")
    return history


@pytest.mark.parametrize("agg", ["avg", "min", "max", "sum", "count"])
def test_hourly_history_from_the_cache_equals_the_sql_path(
    server_in_shanghai: str, client: httpx.Client, uncached: httpx.Client, staff: dict[str, str], agg: str
) -> None:
    for interval, tz, start in (
        ("1h", None, START),
        ("3h", "UTC", START),
        ("1d", None, START),  # Shanghai midnights: 16:00 UTC
        ("1h", None, END - timedelta(hours=30)),  # the last 6 rolled-up hours and a day of raw ones
        ("2h", "Asia/Kathmandu", START),  # UTC+05:45: not composable from hours, raw SQL on both
    ):
        params = {"metric": ["power_w", "lamp_on"], "interval": interval, "agg": agg, "tz": tz}
        params["start"] = start.isoformat()
        cached, direct = _get(client, staff, **params), _get(uncached, staff, **params)
        assert cached.status_code == direct.status_code == 200, (cached.text, direct.text)
        assert cached.json()["source"] == direct.json()["source"]
        answers = (cached.json(), direct.json())
        times = [p["time"] for b in answers for points in b["series"].values() for p in points]
        assert all(t.endswith("+00:00") for t in times)
        got, want = _series(cached.json()), _series(direct.json())
        assert got.keys() == want.keys() == {"power_w", "lamp_on"}
        for m in want:
            assert [t for t, _ in got[m]] == [t for t, _ in want[m]], (interval, m)
            assert [v for _, v in got[m]] == pytest.approx([v for _, v in want[m]], rel=1e-12), (interval, m)
        assert any(got.values())
    metrics = client.get("/metrics").text
    assert "linli_cloud_api_hourly_cache_hits_total" in metrics


def test_the_cache_follows_each_rollup_run_and_still_checks_the_community(
    client: httpx.Client, history: str, staff: dict[str, str], accounts: Callable[..., None]
) -> None:
    accounts("q-sun")
    district = login(client, "q-sun")
    hour = START + timedelta(hours=5)
    params = {"metric": "power_w", "interval": "1h", "agg": "sum"}
    before = dict(_series(_get(client, staff, **params).json())["power_w"])
    assert _get(client, district, **params).status_code == 200
    # the cache is warm with lamp-1 and lamp-2 (read by the district); a worker of c01 still
    # cannot read lamp-2
    lamp2_url, lamp2_params = URL.replace("lamp-1", "lamp-2"), {**params, "start": START.isoformat()}
    assert client.get(lamp2_url, headers=district, params=lamp2_params).status_code == 200
    foreign = client.get(lamp2_url, headers=staff, params=lamp2_params)
    assert foreign.status_code == 404
    # a run of the rollup that changes an hour (as late readings would) and stamps job_state
    with psycopg.connect(history, autocommit=True) as conn:
        conn.execute(
            "UPDATE readings_hourly_rollup SET sum = sum + 1000"
            " WHERE device_id = 'lamp-1' AND metric = 'power_w' AND bucket = %s",
            (hour,),
        )
        conn.execute("UPDATE job_state SET mark = mark + INTERVAL '5 minutes' WHERE job = 'rollup'")
    client_state(client).rollup = RollupState(ttl_s=0.0)  # the next request reads job_state
    after = dict(_series(_get(client, staff, **params).json())["power_w"])
    assert after[hour] == before[hour] + 1000
    assert {t: v for t, v in after.items() if t != hour} == {t: v for t, v in before.items() if t != hour}


def test_the_cache_keeps_at_most_its_hours_least_recently_used_out_first(history: str) -> None:
    generation = datetime(2026, 11, 29, tzinfo=UTC)
    cache = HourlyCache(max_hours=100)
    with psycopg.connect(history, autocommit=True) as conn:
        first = cache.series(conn, generation, "lamp-1", "power_w")
        assert len(first.at) == 48  # two rolled-up days
        cache.series(conn, generation, "lamp-1", "lamp_on")
        assert cache.hours == 96
        cache.series(conn, generation, "lamp-1", "power_w")  # the most recent again
        cache.series(conn, generation, "lamp-2", "power_w")  # lamp-1 lamp_on goes
        assert cache.hours == 96
        assert (cache.hits, cache.misses) == (1, 3)
        cache.series(conn, generation, "lamp-1", "power_w")
        assert (cache.hits, cache.misses) == (2, 3)
        cache.series(conn, generation + timedelta(minutes=5), "lamp-1", "power_w")  # a new run: all gone
        assert (cache.hits, cache.misses, cache.hours) == (2, 4, 48)


def test_a_request_with_an_earlier_runs_stamp_does_not_empty_the_cache(history: str) -> None:
    run = datetime(2026, 11, 29, tzinfo=UTC)
    cache = HourlyCache(max_hours=1000)
    with psycopg.connect(history, autocommit=True) as conn:
        cache.series(conn, run, "lamp-1", "power_w")
        cache.series(conn, run - timedelta(minutes=5), "lamp-1", "lamp_on")  # read before the run
        assert (cache.hours, cache.hits, cache.misses) == (48, 0, 2)
        assert len(cache.series(conn, run, "lamp-1", "power_w").at) == 48
        assert (cache.hours, cache.hits, cache.misses) == (48, 1, 2)
