"""The demo's live one-screen summary, and the loop that runs it until Ctrl-C or `--duration`."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from simulators.demo.incidents import (
    LATEST_PUSHES,
    OpenIncidents,
    PushLine,
    incidents_table,
    push_lines,
    pushes_table,
    read_open_incidents,
)
from simulators.demo.pipeline import DemoPipeline

if TYPE_CHECKING:
    from edge.config import EdgeConfig


@dataclass(slots=True)
class GatewayView:
    gateway_id: str
    devices: int
    buffer_depth: float | None = None
    received_total: float | None = None
    received_per_s: float = 0.0
    field_up: bool | None = None
    cloud_up: bool | None = None
    #: devices heard or discovered that the inventory lacks (``linli edge devices pending``)
    pending: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Snapshot:
    at: float
    rows: int = 0
    readings: int = 0
    readings_per_s: float = 0.0
    devices_online: int = 0
    devices_known: int = 0
    gateways: list[GatewayView] = field(default_factory=list)
    incidents: OpenIncidents = field(default_factory=OpenIncidents)
    pushes: list[PushLine] = field(default_factory=list)
    pushes_total: int = 0
    #: commands by state, and the latest few (device, command, state, by whom)
    commands: dict[str, int] = field(default_factory=dict)
    latest_commands: list[str] = field(default_factory=list)
    error: str = ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {name: value} for unlabelled samples."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        try:
            out[name] = float(value.split(" ")[0])
        except ValueError:
            continue
    return out


def _edge_metrics(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return parse_metrics(resp.read().decode())
    except (OSError, urllib.error.URLError):
        return {}


class Watcher:
    """Polls the database and the edge agents' /metrics, and keeps rates between two polls."""

    #: rates are averaged over this many seconds (batches commit about once a second)
    WINDOW_S = 5.0

    def __init__(self, pipeline: DemoPipeline) -> None:
        self.pipeline = pipeline
        self.history: deque[Snapshot] = deque()
        self.configs: dict[Path, EdgeConfig] = {}

    def poll(self) -> Snapshot:
        snap = Snapshot(at=time.monotonic())
        try:
            with psycopg.connect(self.pipeline.database_url, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SET statement_timeout = '2s'")
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
                snap.rows = int(row[0]) if row else 0
                row = conn.execute("SELECT coalesce(sum(readings), 0) FROM ingested_batches").fetchone()
                snap.readings = int(row[0]) if row else 0
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'online'), count(*) FROM devices"
                ).fetchone()
                if row:
                    snap.devices_online, snap.devices_known = int(row[0]), int(row[1])
                snap.incidents = read_open_incidents(conn)
                snap.commands = {
                    str(state): int(n)
                    for state, n in conn.execute("SELECT state, count(*) FROM commands GROUP BY state")
                }
                snap.latest_commands = [
                    f"{name} {_params(params)} to {device} by {who}: {state}"
                    for device, name, params, who, state in conn.execute(
                        "SELECT device_id, name, params, requested_by, state FROM commands"
                        " ORDER BY updated_at DESC, seq DESC LIMIT 3"
                    )
                ]
        except psycopg.Error as exc:
            snap.error = f"database: {exc}".splitlines()[0]
        if self.pipeline.pushes is not None:
            snap.pushes = push_lines(self.pipeline.pushes.recent(LATEST_PUSHES))
            snap.pushes_total = len(self.pipeline.pushes.received)
        while len(self.history) > 1 and snap.at - self.history[1].at >= self.WINDOW_S:
            self.history.popleft()
        prev = self.history[0] if self.history else None
        dt = (snap.at - prev.at) if prev else 0.0
        if prev and dt > 0:
            snap.readings_per_s = max(0.0, (snap.readings - prev.readings) / dt)
        for i, parts in enumerate(self.pipeline.gateways):
            m = _edge_metrics(parts.metrics_port)
            view = GatewayView(parts.gateway_id, parts.devices)
            if m:
                view.buffer_depth = m.get("linli_edge_buffer_depth")
                view.received_total = m.get("linli_edge_messages_received_total")
                view.field_up = bool(m.get("linli_edge_field_connected", 0))
                view.cloud_up = bool(m.get("linli_edge_cloud_connected", 0))
                before = prev.gateways[i].received_total if prev and i < len(prev.gateways) else None
                if before is not None and view.received_total is not None and dt > 0:
                    view.received_per_s = max(0.0, (view.received_total - before) / dt)
            view.pending = self._pending(parts.config)
            snap.gateways.append(view)
        self.history.append(snap)
        return snap

    def _pending(self, config: Path) -> list[str]:
        from edge.config import load_config
        from edge.devices_cli import pending_devices
        from edge.errors import EdgeError

        try:
            cfg = self.configs.get(config) or self.configs.setdefault(
                config, load_config(config, check_files=False)
            )
            return [
                f"{d.device_id} ({d.device_type} by {d.profile})"
                if d.profile
                else f"{d.device_id} (no profile)"
                for d in pending_devices(cfg)
            ]
        except EdgeError:  # no buffer yet, or busy: shown at the next refresh
            return []


def commands_text(counts: dict[str, int]) -> str:
    """``12 confirmed, 2 sent_to_device, 1 failed``: the commands by state, in their life's order."""
    order = ("queued", "at_gateway", "sent_to_device", "confirmed", "failed", "expired")
    return ", ".join(f"{counts[s]:,} {s}" for s in order if counts.get(s))


def _params(params: dict[str, object]) -> str:
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("up" if flag else "DOWN")


def render(pipeline: DemoPipeline, snap: Snapshot, started: float, until: float | None) -> Panel:
    elapsed = time.monotonic() - started
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("community", f"{pipeline.community}: {len(pipeline.gateways)} gateways")
    head.add_row(
        "devices online",
        f"{snap.devices_online:,} of {snap.devices_known:,} heard (fleet {pipeline.devices_total:,})",
    )
    head.add_row("readings/s", f"{snap.readings_per_s:,.0f} committed to TimescaleDB")
    head.add_row(
        "rows stored", f"{snap.rows:,} in readings ({snap.rows - pipeline.rows_at_start:+,} this run)"
    )
    head.add_row(
        "open incidents",
        f"{snap.incidents.total:,} ({snap.incidents.counts_text()})" if snap.incidents.total else "none",
    )
    head.add_row(
        "commands",
        commands_text(snap.commands) + "".join(f"\n{line}" for line in snap.latest_commands)
        if snap.commands
        else "none yet (the streetlight schedule queues them at its transitions)",
    )
    head.add_row("time", f"{elapsed:,.0f} s elapsed, simulated at {pipeline.speed:g}x")
    gw = Table(title="gateways", expand=True)
    for col in ("gateway", "devices", "received/s", "buffer depth", "field link", "cloud link", "pending"):
        gw.add_column(col, justify="right" if col not in ("gateway",) else "left")
    for v in snap.gateways:
        gw.add_row(
            v.gateway_id,
            str(v.devices),
            f"{v.received_per_s:,.0f}",
            "-" if v.buffer_depth is None else f"{v.buffer_depth:,.0f}",
            _yes(v.field_up),
            _yes(v.cloud_up),
            str(len(v.pending)),
        )
    pending = [(v, d) for v in snap.gateways for d in v.pending]
    if pending:
        gw_of = {p.gateway_id: p for p in pipeline.gateways}
        first = pending[0][0]
        head.add_row(
            "pending devices",
            "; ".join(f"{d} on {v.gateway_id}" for v, d in pending[:3])
            + f"\napprove: linli edge devices approve ID --config {gw_of[first.gateway_id].config} "
            "--lat LAT --lon LON",
        )
    footer = Text.assemble(
        ("connect: ", "bold"),
        pipeline.psql_command(),
        "\n",
        ("console: ", "bold"),
        f"{pipeline.api_url}/console" if pipeline.api_url else "-",
        f"  (log in as {pipeline.api_login[0]} / {pipeline.api_login[1]}; API {pipeline.api_url}/docs)"
        if pipeline.api_login
        else "",
        "\n",
        ("stop: ", "bold"),
        "Ctrl-C" + (f" (or in {max(0.0, until - time.monotonic()):.0f} s)" if until else ""),
        ("\n" + snap.error, "red") if snap.error else "",
    )
    return Panel(
        Group(
            head, gw, incidents_table(snap.incidents), pushes_table(snap.pushes, snap.pushes_total), footer
        ),
        title="linli demo",
        border_style="cyan",
    )


def plain_line(snap: Snapshot) -> str:
    depth = ", ".join(
        f"{v.gateway_id} depth {'-' if v.buffer_depth is None else int(v.buffer_depth)}"
        for v in snap.gateways
    )
    parts = [
        f"devices online {snap.devices_online}/{snap.devices_known}, {snap.readings_per_s:,.0f} readings/s, "
        f"{snap.rows:,} rows stored",
        depth,
        _pending_text(snap),
        f"open incidents {snap.incidents.counts_text()}",
        f"pushes {snap.pushes_total}",
        f"commands {commands_text(snap.commands)}" if snap.commands else "",
    ]
    return "; ".join(part for part in parts if part)


def _pending_text(snap: Snapshot) -> str:
    pending = [f"{d} on {v.gateway_id}" for v in snap.gateways for d in v.pending]
    return f"pending devices {len(pending)} ({', '.join(pending)})" if pending else ""


def run_screen(
    pipeline: DemoPipeline, *, console: Console, stop: threading.Event, duration: float | None
) -> Snapshot:
    """Refresh the summary every second until `stop` is set, `duration` passed, or a child failed."""
    watcher = Watcher(pipeline)
    started = time.monotonic()
    until = started + duration if duration else None
    snap = watcher.poll()

    def done() -> bool:
        return stop.is_set() or (until is not None and time.monotonic() >= until) or bool(pipeline.failed())

    if console.is_terminal:
        with Live(render(pipeline, snap, started, until), console=console, refresh_per_second=2) as live:
            while not done():
                stop.wait(1.0)
                snap = watcher.poll()
                live.update(render(pipeline, snap, started, until))
    else:
        last_line = 0.0
        while not done():
            stop.wait(1.0)
            snap = watcher.poll()
            if time.monotonic() - last_line >= 5:
                console.print(plain_line(snap), soft_wrap=True)
                last_line = time.monotonic()
    return watcher.poll()
