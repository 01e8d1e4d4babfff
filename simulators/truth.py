"""The ground truth: a JSONL file with every message sent and every condition a pipeline should detect.

Records, one JSON object per line, in the order things happened (see docs/simulators.md):

- ``{"kind": "run", ...}``: first line: seed, start, options, scenario names, fleet size;
- ``{"kind": "message", "seq", "sent", "device_id", "gateway_id", "profile", "topic", "ts",
  "reading_id", "metrics", "events", "malformed", "duplicate", "reordered", "skew_s",
  "conditions"}``: one per message actually handed to the output;
- ``{"kind": "condition", "id", "condition", "at", ...}``: something a correct pipeline detects
  (``sos_pressed``, ``resident_inactive``, ``manhole_open``, ...); messages that carry it list its id;
- ``{"kind": "fault", "fault", "device_id", ...}``: a skewed clock or a silenced device;
- ``{"kind": "end", ...}``: last line: counts, and whether the run was interrupted.

The writer buffers and flushes on `close` (which the runner calls on Ctrl-C too). Content depends
only on the seed and the options, never on wall-clock time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import msgspec

from simulators.clock import iso
from simulators.errors import OutputError
from simulators.message import Emission


class MessageRecord(msgspec.Struct, tag="message", tag_field="kind", omit_defaults=False):
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

    def note(self, record: dict[str, Any]) -> None:
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


def read_truth(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a ground-truth file (for tests and `linli sim` consumers)."""
    decoder = msgspec.json.Decoder()
    with open(path, "rb") as f:
        return [decoder.decode(line) for line in f if line.strip()]
