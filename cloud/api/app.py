"""The FastAPI application: `create_app(settings)` builds it, its lifespan opens the connection
pool and reads the token key and the people file; ``linli cloud api`` serves it with uvicorn.

Errors never become a 500: validation errors are 422 (FastAPI's shape: where and why), a missing
or foreign row 404, a refused workflow action 409 naming the state and what it allows, and a
database that is down or saturated 503 with Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.api.deps import ApiState, utcnow
from cloud.api.problems import Invalid, Problem
from cloud.api.security import load_or_create_key
from cloud.config import CloudSettings
from cloud.errors import DeviceNotFound, IncidentNotFound, StoreUnavailable, TransitionRefused
from cloud.incidents.record import Context
from device_profiles.metrics_text import CONTENT_TYPE, exposition
from device_profiles.model import Profile

log = logging.getLogger("linli.cloud.api")

API_PREFIX = "/api/v1"
RETRY_AFTER_S = 5


def _profiles(settings: CloudSettings) -> dict[str, Profile]:
    """The profiles devices name, for their details; a folder that does not load is logged and
    left out (the devices still answer, without their profile's details)."""
    from device_profiles.errors import ProfileError
    from device_profiles.loader import SHIPPED_DIR, load_dirs

    profiles: dict[str, Profile] = {}
    for directory in (SHIPPED_DIR, *settings.alerts.profiles):
        try:
            loaded, _ = load_dirs([directory])
        except ProfileError as exc:
            log.warning("profiles in %s not loaded: %s", directory, exc)
            continue
        profiles.update(loaded)
    return profiles


class _Counts:
    """Requests answered, by status class: ``/metrics`` reads them."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}


class _CountResponses:
    """A pure ASGI middleware (it does not buffer streamed answers such as the live feed)."""

    def __init__(self, app: ASGIApp, counts: _Counts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counters = self.counts.counters

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                name = f"api_responses_{message['status'] // 100}xx"
                counters[name] = counters.get(name, 0) + 1
            await send(message)

        await self.app(scope, receive, counting)


def create_app(
    settings: CloudSettings,
    *,
    context: Context | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The API for `settings`; `context` (the people file and message settings) is loaded from
    ``[incidents] people`` when not given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from cloud.commands.schedules import load_schedules
        from cloud.incidents.main import load_context

        api = settings.api
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            settings.database_url,
            min_size=api.pool_min,
            max_size=max(api.pool_min, api.pool_max),
            # times written by PostgreSQL (JSON series) in UTC, as this process writes them,
            # whatever the server's own time zone
            kwargs={"autocommit": True, "application_name": "linli-api", "options": "-c TimeZone=UTC"},
            timeout=api.pool_timeout_s,
            open=False,
            name="linli-api",
        )
        pool.open(wait=False)  # a database that is down is answered 503 until it is back
        app.state.linli = ApiState(
            settings=settings,
            pool=pool,
            token_key=load_or_create_key(api.token_key_file),
            context=context if context is not None else load_context(settings),
            clock=clock,
            profiles=_profiles(settings),
            schedules=load_schedules(settings.commands.schedules) if settings.commands.schedules else None,
        )
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="linli API",
        version="1",
        summary="Sensor history, devices and incidents of linli's communities.",
        lifespan=lifespan,
        # linli exports its own metrics (/metrics); FastAPI's OpenTelemetry hooks would only
        # cost time on every request and every dependency
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    from cloud.api.routes import (
        audit,
        auth,
        commands,
        communities,
        devices,
        events,
        incidents,
        live,
        performance,
        plan,
        readings,
    )

    app.include_router(auth.router, prefix=API_PREFIX, responses=_documented(400, 422, 503))
    refusals = _documented(400, 401, 403, 404, 422, 503)
    for module in (
        communities,
        plan,
        devices,
        commands,
        readings,
        events,
        incidents,
        performance,
        live,
        audit,
    ):
        app.include_router(module.router, prefix=API_PREFIX, responses=refusals)
    _register_errors(app)
    from cloud.console.pages import mount

    mount(app)
    counts = _Counts()
    _register_health(app, counts)
    if settings.api.gzip_min_bytes:
        from starlette.middleware.gzip import GZipMiddleware

        # level 5: most of the saving for a fraction of level 9's CPU
        app.add_middleware(GZipMiddleware, minimum_size=settings.api.gzip_min_bytes, compresslevel=5)
    app.add_middleware(_CountResponses, counts=counts)
    return app


_MEANINGS: dict[int, str] = {
    400: "a body that cannot be parsed (not JSON, not UTF-8)",
    401: "not authenticated: no credentials, or a token or key that is not valid (any more)",
    403: "the caller's role may not use this",
    404: "no such resource, or one of a community the caller does not serve",
    422: "invalid input: the detail says which and why",
    503: "the database is unavailable or busy: try again after Retry-After seconds",
}


def _documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": Invalid if code == 422 else Problem, "description": _MEANINGS[code]} for code in codes
    }


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"detail": detail},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _register_errors(app: FastAPI) -> None:
    @app.exception_handler(PoolTimeout)
    async def _pool(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        return _unavailable("no database connection available in time; try again")

    @app.exception_handler(psycopg.OperationalError)
    async def _down(_request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _unavailable("the database is unavailable; try again")

    @app.exception_handler(psycopg.DataError)
    async def _data(_request: Request, exc: psycopg.DataError) -> JSONResponse:
        # a value the database cannot hold or compare (a NUL character, an out-of-range number):
        # the request's fault, said plainly
        return JSONResponse(status_code=422, content={"detail": f"invalid input: {exc}"})

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, exc: OverflowError) -> JSONResponse:
        # a time at the edge of the calendar (year 1 or 9999) moved by a default span: the
        # request's fault
        return JSONResponse(
            status_code=422, content={"detail": f"invalid input: a time out of range ({exc})"}
        )

    @app.exception_handler(StoreUnavailable)
    async def _store(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s", exc)
        return _unavailable("the database is unavailable; try again")

    @app.exception_handler(IncidentNotFound)
    async def _incident(_request: Request, exc: IncidentNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(DeviceNotFound)
    async def _device(_request: Request, exc: DeviceNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(TransitionRefused)
    async def _refused(_request: Request, exc: TransitionRefused) -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content={
                "detail": str(exc),
                "state": exc.state,
                "allowed": list(exc.allowed),
                "reason": exc.reason,
            },
        )


def _register_health(app: FastAPI, counts: _Counts) -> None:
    @app.get("/healthz", tags=["health"], responses={503: {"description": "the database is unreachable"}})
    def healthz(request: Request) -> JSONResponse:
        """Whether the API can reach its database (no authentication)."""
        state: ApiState = request.app.state.linli
        try:
            with state.pool.connection(timeout=1.0) as conn:
                conn.execute("SELECT 1")
        except (PoolTimeout, psycopg.OperationalError) as exc:
            return JSONResponse(
                status_code=503,
                content={"healthy": False, "database": "down", "detail": f"database=down ({exc})"},
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return JSONResponse(content={"healthy": True, "database": "up", "detail": "database=up"})

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus text format: responses by status class, the connection pool (no authentication)."""
        state: ApiState = request.app.state.linli
        stats = state.pool.get_stats()
        gauges = {
            "api_pool_size": float(stats.get("pool_size", 0)),
            "api_pool_available": float(stats.get("pool_available", 0)),
            "api_pool_waiting": float(stats.get("requests_waiting", 0)),
            "api_hourly_cache_hours": float(state.hourly.hours if state.hourly else 0),
        }
        body = exposition(
            prefix="linli_cloud_",
            help_prefix="linli cloud api: ",
            counters={
                **counts.counters,
                # requests that found a connection ready, and those that waited for one in a thread
                "api_connections_ready_total": float(state.gate.ready),
                "api_connections_waited_total": float(state.gate.waited),
                # hourly series answered from the cache of rolled-up hours, and read into it
                "api_hourly_cache_hits_total": float(state.hourly.hits if state.hourly else 0),
                "api_hourly_cache_misses_total": float(state.hourly.misses if state.hourly else 0),
            },
            gauges=gauges,
        )
        return Response(content=body, media_type=CONTENT_TYPE)
