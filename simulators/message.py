"""What the simulation hands to its outputs: emissions (messages to send) and notes (truth records)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from device_profiles import Reading

if TYPE_CHECKING:
    from simulators.truth import NoteRecord


class Emission:
    """One message a device sends, with everything the ground truth says about it.

    Attributes:
        seq: position in the run (0, 1, 2, ...), unique per emission.
        t_ms: simulated send time (epoch ms).
        topic, payload: what goes on the wire.
        reading: the canonical reading the payload was made from (before any damage).
        gateway_id: the gateway that hears the device.
        malformed: the payload was damaged on purpose (``malform`` says how); it will not decode.
        duplicate: a second copy of the previous emission.
        reordered: sent after a newer message of the same device.
        skew_ms: the device clock's offset included in ``reading.ts``.
        conditions: ids of ground-truth conditions this message carries.
    """

    __slots__ = (
        "conditions",
        "duplicate",
        "gateway_id",
        "malform",
        "malformed",
        "payload",
        "reading",
        "reordered",
        "seq",
        "skew_ms",
        "t_ms",
        "topic",
    )

    def __init__(
        self,
        *,
        seq: int,
        t_ms: int,
        topic: str,
        payload: bytes,
        reading: Reading,
        gateway_id: str,
        skew_ms: int = 0,
        conditions: tuple[str, ...] = (),
        malformed: bool = False,
        malform: str | None = None,
        duplicate: bool = False,
        reordered: bool = False,
    ) -> None:
        self.seq = seq
        self.t_ms = t_ms
        self.topic = topic
        self.payload = payload
        self.reading = reading
        self.gateway_id = gateway_id
        self.skew_ms = skew_ms
        self.conditions = conditions
        self.malformed = malformed
        self.malform = malform
        self.duplicate = duplicate
        self.reordered = reordered

    def __repr__(self) -> str:
        flags = "".join(f" {n}" for n in ("malformed", "duplicate", "reordered") if getattr(self, n))
        return f"<Emission #{self.seq} {self.topic}{flags}>"


class Note:
    """A ground-truth record that is not a message: a condition, a fault, the run header.

    Attributes:
        t_ms: simulated time it belongs to.
        record: the record to write (`simulators.truth`).
    """

    __slots__ = ("record", "t_ms")

    def __init__(self, t_ms: int, record: NoteRecord) -> None:
        self.t_ms = t_ms
        self.record = record

    def __repr__(self) -> str:
        what = getattr(self.record, "condition", None) or getattr(self.record, "fault", "")
        return f"<Note {type(self.record).__name__} {what}>"
