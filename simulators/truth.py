"""The ground truth: a JSONL file with every message sent and every condition a pipeline should detect.

Records, one JSON object per line, in the order things happened (see docs/simulators.md). This
module defines every record once, as a msgspec Struct tagged by ``kind``; the simulation writes
them and `read_records` (used by ``linli sim verify``) reads them back:

- `RunRecord` (``"run"``): first line: seed, start, options, scenario names, fleet size;
- `MessageRecord` (``"message"``): one per message actually handed to the output;
- `ConditionRecord` (``"condition"``): something a correct pipeline detects (``sos_pressed``,
  ``resident_inactive``, ``manhole_open``, ...); messages that carry it list its id;
- `FaultRecord` (``"fault"``): a skewed clock or a silenced device;
- `EndRecord` (``"end"``): last line: counts, and whether the run was interrupted.

Optional keys default to ``UNSET`` and are then left out of the line; ``None`` is written as
``null`` (a ``to`` of ``null`` is a window that never ends). The writer buffers and flushes on
`close` (which the runner calls on Ctrl-C too). Content depends only on the seed and the options,
never on wall-clock time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
from msgspec import UNSET, UnsetType

from simulators.clock import iso
from simulators.errors import ConfigError, OutputError
from simulators.faults import FaultOptions
from simulators.message import Emission


class RunRecord(msgspec.Struct, tag="run", tag_field="kind", kw_only=True):
    """The run's header: what produced the file."""

    seed: int
    start: str
    devices: int
    gateways: int
    scenarios: list[str]
    faults: FaultOptions


class MessageRecord(msgspec.Struct, tag="message", tag_field="kind", omit_defaults=False):
    """One message handed to the output, with the canonical reading its payload decodes to."""

    seq: int
    sent: str
    device_id: str
    gateway_id: str
    profile: str
    topic: str
    ts: str
    reading_id: str
    metrics: dict[str, float]
    events: tuple[str, ...]
    malformed: bool
    duplicate: bool
    reordered: bool
    skew_s: float
    conditions: tuple[str, ...]
    malform: str | None = None


class ConditionRecord(
    msgspec.Struct, tag="condition", tag_field="kind", kw_only=True, forbid_unknown_fields=True
):
    """A condition a correct pipeline detects. Times are ISO 8601 UTC with milliseconds.

    ``id``, ``condition``, ``at`` (when it starts) and ``source`` (``scenario:<name>``,
    ``behaviour``, ``fault``) are always there; the other keys depend on the condition.
    """

    id: str
    condition: str
    at: str
    device_id: str | UnsetType = UNSET
    gateway_id: str | UnsetType = UNSET
    resident_id: str | UnsetType | None = UNSET
    event: str | UnsetType = UNSET
    cancelled_at: str | UnsetType | None = UNSET
    last_open_at: str | UnsetType | None = UNSET
    from_: str | UnsetType = msgspec.field(default=UNSET, name="from")
    to: str | UnsetType | None = UNSET
    hours: float | UnsetType = UNSET
    tilt_deg: float | UnsetType = UNSET
    level_mm: int | UnsetType = UNSET
    battery_pct: int | UnsetType = UNSET
    factor: float | UnsetType = UNSET
    devices: int | UnsetType = UNSET
    fails_at: str | UnsetType = UNSET
    silent_at: str | UnsetType = UNSET
    to_ratio: float | UnsetType = UNSET
    from_pct: float | UnsetType = UNSET
    days: float | UnsetType = UNSET
    source: str


class FaultRecord(msgspec.Struct, tag="fault", tag_field="kind", kw_only=True):
    """A fault injected into one device: ``clock_skew`` (with ``skew_s``) or ``silent`` (``from``)."""

    fault: str
    device_id: str
    skew_s: float | UnsetType = UNSET
    from_: str | UnsetType = msgspec.field(default=UNSET, name="from")


class CommandRecord(msgspec.Struct, tag="command", tag_field="kind", kw_only=True):
    """A command a device received from the gateway (`simulators.commands`), and what it did.

    ``at`` is the simulated time it arrived, ``effect`` what the device did (``switched on until
    ...``, ``acknowledged: ...``, ``ignored: ...``); ``report`` the seq of the message that shows
    the effect (none for a device that does not report it).
    """

    at: str
    device_id: str
    name: str
    params: dict[str, bool | int | str]
    topic: str
    effect: str
    report: int | UnsetType = UNSET


class EndRecord(msgspec.Struct, tag="end", tag_field="kind", kw_only=True):
    """The last line, also after Ctrl-C (``interrupted``) or a broker failure (``failure``)."""

    messages: int
    conditions: int
    sim_end: str
    interrupted: bool
    failure: str | UnsetType = UNSET


#: A record that is not a message (`simulators.message.Note` carries one).
NoteRecord = RunRecord | ConditionRecord | FaultRecord | CommandRecord | EndRecord
#: Any line of a ground-truth file.
TruthRecord = RunRecord | MessageRecord | ConditionRecord | FaultRecord | CommandRecord | EndRecord

_decoder = msgspec.json.Decoder(TruthRecord)


def message_record(em: Emission) -> MessageRecord:
    r = em.reading
    return MessageRecord(
        seq=em.seq,
        sent=iso(em.t_ms),
        device_id=r.device_id,
        gateway_id=em.gateway_id,
        profile=r.profile,
        topic=em.topic,
        ts=r.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        reading_id=r.reading_id,
        metrics=r.metrics,
        events=r.events,
        malformed=em.malformed,
        duplicate=em.duplicate,
        reordered=em.reordered,
        skew_s=em.skew_ms / 1000,
        conditions=em.conditions,
        malform=em.malform,
    )


class TruthWriter:
    """Writes ground-truth records to `path` (None: count them, write nothing)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._file: IO[bytes] | None = None
        if self.path is not None:
            try:
                self._file = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise OutputError(
                    f"cannot write the ground truth: {exc.strerror or exc}", target=str(path)
                ) from exc
        self._encoder = msgspec.json.Encoder()
        self.messages = 0
        self.notes = 0

    def message(self, em: Emission) -> None:
        self.messages += 1
        if self._file is not None:
            self._file.write(self._encoder.encode(message_record(em)) + b"\n")

    def note(self, record: NoteRecord) -> None:
        self.notes += 1
        if self._file is not None:
            self._file.write(self._encoder.encode(record) + b"\n")

    def close(self) -> None:
        """Flush to disk and close (idempotent)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[TruthRecord, bytes]]:
    name = os.fspath(path)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield _decoder.decode(line), line
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ConfigError(name, f"line {lineno}", f"not a ground-truth record: {exc}") from exc


def read_records(path: str | os.PathLike[str]) -> Iterator[TruthRecord]:
    """The records of a ground-truth file, in order, each checked against its definition.

    Raises:
        ConfigError: a line is not a ground-truth record (naming the file and line).
        OSError: the file cannot be read.
    """
    for record, _ in _lines(path):
        yield record


def read_truth(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a ground-truth file as JSON objects, each checked like `read_records` does
    (for tests and `linli sim` consumers)."""
    plain = msgspec.json.Decoder(dict[str, Any])
    return [plain.decode(line) for _, line in _lines(path)]
