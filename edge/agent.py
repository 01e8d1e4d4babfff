"""The edge agent: wires the field link, the buffer, the uplink and the housekeeping together.

`Agent.run()` owns every long-running task in one `asyncio.TaskGroup`, each with a name:
``field-link``, ``cloud-link``, ``buffer-writer``, ``uplink``, ``liveness``, ``status``,
``housekeeping``, ``reloader``, ``file-watch`` (reloads a changed inventory or profile file),
``unsubscribe``, ``field-out-link`` and ``downlink`` (commands to the devices, `edge.downlink`),
``watchdog`` (systemd's, `edge.sdnotify`: pings
while the buffer writer keeps committing). SIGTERM (or SIGINT) shuts down in order:

1. stop intake: stop reading the field socket (the broker keeps the rest in our session);
2. flush: commit what was received and acknowledge it;
3. disconnect from the field broker (the session stays);
4. drain: form and send batches while the cloud link is up, up to ``uplink.drain_timeout_s``;
5. await the PUBACKs in flight;
6. publish the final status (``state: offline``, retained) and disconnect from the cloud broker.

Before anything starts, `edge.preflight.preflight` checks the profiles and the inventory together
(the same checks as ``linli edge check-config``): on any problem the agent refuses to start with
`PreflightError`. SIGHUP, or a change to the inventory or a profile file, reloads the profiles and
the inventory through the same checks; a reload that fails them keeps the running set.

Subscriptions outlive the configuration that made them: the field broker keeps them in the
persistent session. The buffer remembers every filter subscribed (before subscribing), so at
start the filters no longer wanted are unsubscribed, and forgotten once the broker confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Final

from device_profiles import ProfileSet
from device_profiles.inventory import file_stamp
from edge.buffer import Buffer, Intake
from edge.discovery import Discovery
from edge.downlink import Downlink
from edge.endpoint import Endpoint, Snapshot
from edge.errors import BufferError_, BufferFull, EdgeError, MqttError
from edge.fieldlink import FieldLink
from edge.inventory import InventoryView
from edge.liveness import DeviceMemory, Liveness
from edge.logs import get_logger
from edge.mqtt import Message, MqttLink, Will, link_options
from edge.normalise import Classifier, Normaliser
from edge.preflight import Loaded, ack_filters, bridge_topic, discovery_filters, preflight
from edge.sdnotify import Notifier
from edge.status import StatusReporter, offline_payload
from edge.uplink import Uplink

if TYPE_CHECKING:
    from edge.config import EdgeConfig

_log = get_logger("edge.agent")

#: Seconds between attempts to commit while the buffer cannot write.
BUFFER_RETRY_S: Final = 1.0


class Agent:
    """One gateway's agent. ``await Agent(config=...).run()`` until `stop()` or a signal."""

    def __init__(
        self,
        *,
        config: EdgeConfig,
        loaded: Loaded | None = None,
        load: Callable[[], Loaded] | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        install_signals: bool = True,
    ) -> None:
        """`loaded`: the profiles and inventory to start with, already checked (else `load` is
        called); `load`: how a start or a reload checks them (default: `preflight` in this
        process; `edge.handoff` does it in a child process)."""
        self.config = config
        self._loaded = loaded
        self._loader: Callable[[], Loaded] = load or partial(preflight, config)
        self.wall = wall
        self.monotonic = monotonic
        self.install_signals = install_signals
        self._stop = asyncio.Event()
        self.notifier = Notifier()
        #: monotonic time the buffer writer last finished a round (the watchdog's health)
        self._writer_beat = monotonic()
        self._reload = asyncio.Event()
        self._flush = asyncio.Event()
        self._intake = Intake()
        self._messages: list[Message] = []
        self._buffer_error: BufferError_ | None = None  # why the last commit failed
        self._field_connected_at: float | None = None
        self.snapshot = Snapshot()
        self.endpoint: Endpoint | None = None
        self.downlink: Downlink | None = None  # with [commands] enabled, beside its field link
        self.field_out: MqttLink

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        self._reload.set()

    # -- setup ----------------------------------------------------------------------------

    async def _load(self) -> Loaded:
        """The checked set handed in at start, else `preflight` (file reads and compiling: off the
        loop); its warnings are logged."""
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            loaded = await asyncio.to_thread(self._loader)
        for warning in loaded.warnings:
            _log.warning("config_warning", detail=warning)
        return loaded

    async def run(self) -> None:
        """Run until `stop()` or a signal. Raises `PreflightError` (before opening anything)
        when the profiles and the inventory do not pass the checks of ``check-config``."""
        cfg = self.config
        loaded = await self._load()
        self.buffer = buffer = await Buffer.open(
            cfg.buffer.path,
            max_bytes=cfg.buffer.max_bytes,
            telemetry_max_age_s=cfg.buffer.telemetry_max_age_s,
            durability=cfg.buffer.durability,
            chunk_max=cfg.uplink.batch_max_readings,
            quarantine_max_rows=cfg.buffer.quarantine_max_rows,
            quarantine_max_payload_bytes=cfg.buffer.quarantine_max_payload_bytes,
            pending_max=cfg.discovery.max_pending,
            wall=self.wall,
        )
        try:
            await self._run(loaded.profiles, loaded.inventory)
        finally:
            await buffer.close()
            _log.info("stopped")

    async def _run(self, profiles: ProfileSet, inventory: InventoryView) -> None:
        cfg = self.config
        memory = {d: DeviceMemory.from_row(row) for d, row in (await self.buffer.devices()).items()}
        self.liveness = Liveness(
            gateway_id=cfg.gateway_id,
            inventory=inventory,
            profile_intervals={p.id: p.report_interval_s for p in profiles.profiles.values()},
            overrides=cfg.liveness.report_intervals_s,
            offline_after_intervals=cfg.liveness.offline_after_intervals,
            memory=memory,
        )
        self.normaliser = Normaliser(
            profiles=profiles,
            inventory=inventory,
            liveness=self.liveness,
            classifier=Classifier(
                alarm_events=cfg.classes.alarm_events, alarm_metrics=cfg.classes.alarm_metrics
            ),
            max_clock_skew_s=cfg.normalise.max_clock_skew_s,
            dedupe_ids_remembered=cfg.normalise.dedupe_ids_remembered,
            state_events=cfg.normalise.state_events,
            discovery=Discovery(
                profiles=profiles,
                inventory=inventory,
                pending=cfg.discovery.pending,
                bridge_topic=bridge_topic(cfg, profiles),
            ),
            wall=self.wall,
            monotonic=self.monotonic,
        )
        self._enrol()
        await self._forget_approved(inventory)
        filters = [*profiles.topic_filters(), *discovery_filters(cfg, profiles), *ack_filters(cfg, profiles)]
        stale: list[str] = []
        try:
            stale = [f for f in await self.buffer.subscriptions() if f not in filters]
            await self.buffer.remember_subscriptions(filters)
        except BufferError_ as exc:  # the buffer's own errors surface at the first commit
            _log.warning("subscriptions_not_recorded", error=str(exc))
        self.field = FieldLink(
            **link_options(cfg.field),
            name="field",
            client_id=cfg.field_client_id,
            receive_maximum=cfg.field.receive_maximum,
            max_packet_bytes=cfg.field.max_packet_bytes,
            subscriptions=filters,
            unsubscribe=stale,
            on_message=self._on_field_message,
        )
        self.cloud = MqttLink(
            **link_options(cfg.cloud),
            name="cloud",
            client_id=cfg.cloud_client_id,
            will=Will(
                cfg.status_topic, offline_payload(gateway_id=cfg.gateway_id, community_id=cfg.community_id)
            ),
            max_inflight=cfg.cloud.max_inflight,
            hurry_retry_s=cfg.cloud.alarm_retry_s,
            subscriptions=[(cfg.down_topic, 1)] if cfg.commands.enabled else (),
            on_message=self._on_command,
        )
        if cfg.commands.enabled:
            self.field_out = MqttLink(
                **link_options(cfg.field), name="field-out", client_id=f"{cfg.field_client_id}-out"
            )
            self.downlink = Downlink(
                buffer=self.buffer,
                cloud=self.cloud,
                field=self.field_out,
                normaliser=self.normaliser,
                profiles=profiles,
                inventory=inventory,
                gateway_id=cfg.gateway_id,
                progress_topic=cfg.progress_topic,
                confirm_timeout_s=cfg.commands.confirm_timeout_s,
                publish_timeout_s=cfg.commands.publish_timeout_s,
                keep_s=cfg.commands.keep_days * 86400,
                wall=self.wall,
            )
        self.uplink = Uplink(
            link=self.cloud,
            buffer=self.buffer,
            topic=cfg.up_topic,
            alarm_topic=cfg.alarm_topic,
            gateway_id=cfg.gateway_id,
            community_id=cfg.community_id,
            batch_max_readings=cfg.uplink.batch_max_readings,
            batch_max_latency_s=cfg.uplink.batch_max_latency_ms / 1000,
            telemetry_batches_in_flight=cfg.uplink.telemetry_batches_in_flight,
            alarm_batches_in_flight=cfg.uplink.alarm_batches_in_flight,
            telemetry_max_readings_per_s=cfg.uplink.telemetry_max_readings_per_s,
            monotonic=self.monotonic,
            wall=self.wall,
        )
        self.status = StatusReporter(
            gateway_id=cfg.gateway_id,
            community_id=cfg.community_id,
            buffer_path=cfg.buffer.path,
            wall=self.wall,
            monotonic=self.monotonic,
        )
        if cfg.http.address:
            host, port = cfg.http.host_port
            self.endpoint = Endpoint(host=host, port=port, snapshot=lambda: self.snapshot)
            try:
                await self.endpoint.start()
            except OSError as exc:
                raise EdgeError(f"cannot listen on http.address {cfg.http.address}: {exc}") from exc
        if self.downlink is not None:
            await self.downlink.start()
        loop = asyncio.get_running_loop()
        if self.install_signals:
            loop.add_signal_handler(signal.SIGTERM, self.stop)
            loop.add_signal_handler(signal.SIGINT, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        _log.info(
            "starting",
            gateway_id=cfg.gateway_id,
            community_id=cfg.community_id,
            devices=len(inventory),
            profiles=len(profiles),
            buffer=str(cfg.buffer.path),
            filters=",".join(filters),
            unsubscribing=",".join(stale),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.field.run(), name="field-link"),
                    tg.create_task(self.cloud.run(), name="cloud-link"),
                    tg.create_task(self._writer(), name="buffer-writer"),
                    tg.create_task(self.uplink.run(), name="uplink"),
                    tg.create_task(self._liveness_loop(), name="liveness"),
                    tg.create_task(self._status_loop(), name="status"),
                    tg.create_task(self._housekeeping(), name="housekeeping"),
                    tg.create_task(self._reloader(), name="reloader"),
                    tg.create_task(self._watch_files(), name="file-watch"),
                    tg.create_task(self._forget_unsubscribed(stale), name="unsubscribe"),
                    tg.create_task(self.notifier.watchdog(self._writer_alive), name="watchdog"),
                ]
                if self.downlink is not None:
                    tasks.append(tg.create_task(self.field_out.run(), name="field-out-link"))
                    tasks.append(tg.create_task(self.downlink.run(), name="downlink"))
                self.notifier.notify("READY=1")
                await self._stop.wait()
                self.notifier.notify("STOPPING=1")
                await self._shutdown()
                for task in tasks:
                    task.cancel()
        finally:
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            if self.endpoint is not None:
                await self.endpoint.close()

    def _enrol(self) -> None:
        now_us = int(self.wall() * 1_000_000)
        for device_id in self.liveness.enrol(now_us):
            self._intake.devices[device_id] = self.liveness.memory[device_id].row()
        if self._intake.devices:
            self._flush.set()

    # -- intake ---------------------------------------------------------------------------

    def _on_command(self, message: Message) -> None:
        if self.downlink is None:  # the session kept an old subscription: acknowledge and drop
            self.cloud.ack(message)
        else:
            self.downlink.on_command(message)

    def _on_field_message(self, message: Message) -> None:
        if self.downlink is not None and self.downlink.is_ack(message.topic):
            self.downlink.on_ack(message.topic, message.payload)
            self._messages.append(message)  # acknowledged with the next commit
            self._flush.set()
            return
        alarm = self.normaliser.handle(message.topic, message.payload, self._intake)
        self._messages.append(message)
        if alarm or len(self._messages) >= self.config.buffer.commit_max_messages:
            self._flush.set()
        if self._field_connected_at is None:
            self._field_connected_at = self.monotonic()

    async def _writer(self) -> None:
        interval = self.config.buffer.commit_interval_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._flush.wait()
            self._flush.clear()
            await self.commit_pending()
            self._writer_beat = self.monotonic()

    def _writer_alive(self) -> bool:
        """The buffer writer finished a round, or a retry of a refusing buffer, lately (it wakes
        every commit interval): a writer stuck in a call stops the watchdog's pings."""
        interval = self.notifier.interval_s or 0.0
        limit = max(3 * interval, 4 * self.config.buffer.commit_interval_ms / 1000)
        return self.monotonic() - self._writer_beat <= limit

    async def commit_pending(self, *, retry: bool = True) -> None:
        """Commit everything received so far in one transaction, then acknowledge it.

        While the buffer cannot write (alarms alone at the cap, a full disk, an I/O error) intake
        pauses, nothing is acknowledged (the field broker keeps the messages), and the same
        commit is tried again every `BUFFER_RETRY_S`; the reason is logged once and shown in
        ``/healthz``. With `retry` False (at shutdown) one attempt is made.
        """
        intake, messages = self._intake, self._messages
        if not messages and not len(intake) and not intake.devices and not intake.quarantine:
            return
        self._intake, self._messages = Intake(), []
        while True:
            try:
                evicted = await self.buffer.commit(intake)
                break
            except BufferError_ as exc:
                self._buffer_failed(exc)
                if not retry:
                    return
                await asyncio.sleep(BUFFER_RETRY_S)
                # a buffer refusing (full, a disk error) is a known state /healthz shows, not a
                # wedged writer: a restart would not help, so the watchdog keeps being fed
                self._writer_beat = self.monotonic()
        if self._buffer_error is not None:
            self._buffer_error = None
            if not self._stop.is_set():  # at shutdown intake stays stopped
                self.field.resume_reading()
            _log.info("buffer_accepting")
        for message in messages:
            self.field.ack(message)
        if evicted:
            self.uplink.evicted(evicted)
            _log.warning("telemetry_evicted", readings=evicted)
        self.uplink.notify(alarm=len(intake.alarm), telemetry=len(intake.telemetry))

    def _buffer_failed(self, exc: BufferError_) -> None:
        if self._buffer_error is None:
            self.field.pause_reading()
        if str(exc) != str(self._buffer_error):
            _log.error("buffer_full" if isinstance(exc, BufferFull) else "buffer_failed", error=str(exc))
        self._buffer_error = exc

    # -- background loops -----------------------------------------------------------------

    async def _liveness_loop(self) -> None:
        cfg = self.config.liveness
        await self.field.wait_connected()
        if self._field_connected_at is None:
            self._field_connected_at = self.monotonic()
        await asyncio.sleep(cfg.startup_grace_s)
        while True:
            now_us = int(self.wall() * 1_000_000)
            found = self.liveness.check(now_us)
            for device, reading in found:
                self.normaliser.add(reading, self._intake)
                self._intake.devices[device.device_id] = self.liveness.memory[device.device_id].row()
                _log.warning("device_offline", device_id=device.device_id)
            if found:
                self._flush.set()
            await asyncio.sleep(cfg.check_interval_s)

    async def _refresh(self, *, publish: bool, state: str = "online") -> None:
        try:
            stats = await self.buffer.stats()
        except BufferError_ as exc:
            self.snapshot = Snapshot(
                counters=self.snapshot.counters,
                gauges=self.snapshot.gauges,
                healthy=False,
                detail=f"buffer unreadable: {exc}",
            )
            return
        doc = self.status.document(
            stats=stats,
            received=self.normaliser.received,
            quarantined=stats.counters.get("quarantined", 0),
            links={"field": self.field.connected, "cloud": self.cloud.connected},
            state=state,
        )
        counters = dict(stats.counters)
        counters["messages_received"] = self.normaliser.received
        failed = self._buffer_error
        buffer_error = str(failed) if failed is not None else self.uplink.buffer_error
        buffer = "ok" if buffer_error is None else "full" if isinstance(failed, BufferFull) else "failed"
        refused = self.uplink.refused
        counters["batches_refused"] = self.uplink.batches_refused
        if self.downlink is not None:  # commands to the devices, by what became of them
            counters |= self.downlink.counters
        self.snapshot = Snapshot(
            counters=counters,
            gauges={
                "buffer_depth": stats.depth,
                "buffer_alarm_readings": stats.alarm_readings,
                "buffer_telemetry_readings": stats.telemetry_readings,
                "buffer_disk_bytes": stats.disk_bytes,
                "buffer_cap_bytes": stats.cap_bytes,
                "oldest_buffered_age_seconds": doc["buffer"]["oldest_age_s"] or 0,
                "batches_in_flight": self.uplink.in_flight,
                "pending_devices": stats.pending_devices,
                "field_connected": int(self.field.connected),
                "cloud_connected": int(self.cloud.connected),
                "rss_bytes": doc["rss_bytes"],
                "cpu_percent": doc["cpu_pct"],
            },
            healthy=self.field.connected and buffer_error is None and refused is None,
            health={
                "field": "up" if self.field.connected else "down",
                "cloud": "up" if self.cloud.connected else "down",
                # the cloud broker refuses our batches (kept, sent again): its reason
                **({"cloud_refuses": refused} if refused else {}),
                "buffer": buffer,
                "depth": stats.depth,
                "unknown_device_messages": counters.get("unknown_device_messages", 0),
                **({"buffer_error": buffer_error} if buffer_error else {}),
            },
            detail=(
                f"field={'up' if self.field.connected else 'down'} "
                f"cloud={'up' if self.cloud.connected else 'down'} "
                f"buffer={buffer} depth={stats.depth} "
                f"unknown_device_messages={counters.get('unknown_device_messages', 0)}"
                + (f" error={buffer_error}" if buffer_error else "")
                + (f" cloud_refuses={refused!r}" if refused else "")
            ),
        )
        if publish and self.cloud.connected:
            try:
                fut = self.cloud.publish(
                    self.config.status_topic, self.status.encode(doc), qos=1, retain=True
                )
            except MqttError:
                return
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            if state != "online":
                with contextlib.suppress(TimeoutError, MqttError):
                    async with asyncio.timeout(2):
                        await fut

    async def _status_loop(self) -> None:
        """Refresh the /metrics and /healthz snapshot every few seconds, from the start (a cloud
        that is down must not hide a full disk); publish the status while the cloud is up."""
        interval = self.config.status.interval_s
        next_at = self.monotonic()
        while True:
            publish = self.cloud.connected and self.monotonic() >= next_at
            await self._refresh(publish=publish)
            if publish:
                next_at = self.monotonic() + interval
            pause = min(interval, 5.0)
            if self.cloud.connected:
                await asyncio.sleep(pause)
            else:  # and the first status goes out as soon as the cloud link is up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self.cloud.wait_connected()

    async def _housekeeping(self) -> None:
        period = min(60.0, self.config.buffer.telemetry_max_age_s / 10)
        while True:
            try:
                expired = await self.buffer.expire()
            except BufferError_ as exc:
                _log.warning("expiry_failed", error=str(exc))
                expired = 0
            if expired:
                self.uplink.evicted(expired)
                _log.warning("telemetry_expired", readings=expired)
            await asyncio.sleep(period)

    async def _forget_unsubscribed(self, stale: list[str]) -> None:
        """Forget the stale filters once the field broker has confirmed unsubscribing them."""
        if not stale:
            return
        await self.field.unsubscribed.wait()
        try:
            await self.buffer.forget_subscriptions([f for f in stale if f not in self.field.subscriptions])
        except BufferError_ as exc:  # remembered: unsubscribed again at the next start, harmless
            _log.warning("subscriptions_not_recorded", error=str(exc))

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            try:
                loaded = await self._load()
            except EdgeError as exc:  # a bad reload keeps the running set
                _log.error("reload_failed", error=str(exc))
                continue
            profiles, inventory = loaded.profiles, loaded.inventory
            self.normaliser.reload(profiles=profiles, inventory=inventory)
            if self.downlink is not None:
                self.downlink.reload(profiles=profiles, inventory=inventory)
            self.liveness.profile_intervals = {p.id: p.report_interval_s for p in profiles.profiles.values()}
            self._enrol()
            try:
                await self.buffer.remember_subscriptions(loaded.filters)
            except BufferError_ as exc:  # then a later removal of these is not unsubscribed
                _log.warning("subscriptions_not_recorded", error=str(exc))
            self.field.set_subscriptions(loaded.filters)
            _log.info("reloaded", devices=len(inventory), profiles=len(profiles))
            await self._forget_approved(inventory)

    async def _forget_approved(self, inventory: InventoryView) -> None:
        """Pending entries of devices the inventory now lists are done with."""
        try:
            forgotten = await self.buffer.forget_pending(inventory.devices)
        except BufferError_ as exc:  # tried again at the next reload; listing them is harmless
            _log.warning("pending_not_forgotten", error=str(exc))
            return
        if forgotten:
            _log.info("pending_approved", devices=forgotten)

    async def _watch_files(self) -> None:
        """Reload when the inventory or a profile file changes (an approval, an import, an edit)."""
        interval = self.config.discovery.watch_interval_s
        if not interval:
            return
        seen = await asyncio.to_thread(self._file_stamps)
        while True:
            await asyncio.sleep(interval)
            now = await asyncio.to_thread(self._file_stamps)
            if now != seen:
                seen = now
                _log.info("files_changed")
                self.reload()

    def _file_stamps(self) -> tuple[tuple[str, tuple[int, int, int]], ...]:
        """(path, stamp) of the inventory and of every profile file in the folders."""
        paths = [self.config.inventory]
        for folder in self.config.profiles:
            with contextlib.suppress(OSError):
                paths.extend(sorted(folder.rglob("*.y*ml")))
        return tuple((str(path), file_stamp(path)) for path in paths)

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        cfg = self.config
        _log.info("stopping")
        self.field.pause_reading()
        await self.commit_pending(retry=False)  # what it cannot commit stays unacknowledged
        await self.field.close()
        if self.downlink is not None:
            await self.field_out.close()
        if self.cloud.connected:
            drained = await self.uplink.drain(within_s=cfg.uplink.drain_timeout_s)
            await self.uplink.wait_acks(within_s=max(1.0, cfg.uplink.drain_timeout_s / 2))
            _log.info("drained", complete=drained)
            await self._refresh(publish=True, state="offline")
        await self.cloud.close()
