"""PostgreSQL's binary COPY format, written directly from decoded envelopes.

psycopg's ``Copy.write_row`` converts every value through its dumpers (a ``datetime`` per
timestamp); on the ingest's hot path that costs more than the database spends storing the row.
Here each row is packed with `struct` from integer microseconds and cached, length-prefixed
text, and handed to ``Copy.write`` as one block: the bytes psycopg would have produced, without
the objects.

Format (https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.4): a signature, then per
row a big-endian int16 field count and per field an int32 byte length (-1 for NULL) and the
value in the type's binary send format: ``timestamptz`` as int64 microseconds since
2000-01-01 UTC, ``float8`` as IEEE 754 big-endian, ``text`` as UTF-8, ``uuid`` as 16 bytes.
A ``-1`` int16 ends the data.
"""

from __future__ import annotations

import struct
from typing import Final

SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER: Final = b"\xff\xff"
NULL: Final = b"\xff\xff\xff\xff"

#: 2000-01-01T00:00:00Z in microseconds since the Unix epoch: PostgreSQL's timestamp origin.
PG_EPOCH_US: Final = 946_684_800_000_000

_INT32: Final = struct.Struct(">i")
_TIMESTAMP: Final = struct.Struct(">iq")
_FLOAT8: Final = struct.Struct(">id")
_TEXT_CACHE_MAX: Final = 200_000


def timestamp(us: int) -> bytes:
    """A ``timestamptz`` field (length and value) from Unix microseconds."""
    return _TIMESTAMP.pack(8, us - PG_EPOCH_US)


def optional_timestamp(us: int | None) -> bytes:
    return NULL if us is None else _TIMESTAMP.pack(8, us - PG_EPOCH_US)


def float8(value: float) -> bytes:
    """A ``float8`` field (length and value)."""
    return _FLOAT8.pack(8, value)


def optional_float8(value: float | None) -> bytes:
    return NULL if value is None else _FLOAT8.pack(8, value)


def uuid_field(raw: bytes) -> bytes:
    """A ``uuid`` field from its 16 bytes."""
    return b"\x00\x00\x00\x10" + raw


def text(value: str) -> bytes:
    """A ``text`` field (length and UTF-8 bytes)."""
    data = value.encode()
    return _INT32.pack(len(data)) + data


def field_count(n: int) -> bytes:
    return struct.pack(">h", n)


class TextFields(dict[str, bytes]):
    """Memoised `text` fields, ``fields[value]``: device ids, metric names and profiles repeat
    from row to row, and a hit is one dictionary lookup.

    Bounded: cleared when it holds ``max_entries`` strings and a new one arrives.
    """

    __slots__ = ("max_entries",)

    def __init__(self, *, max_entries: int = _TEXT_CACHE_MAX) -> None:
        super().__init__()
        self.max_entries = max_entries

    def __missing__(self, value: str) -> bytes:
        if len(self) >= self.max_entries:
            self.clear()
        field = self[value] = text(value)
        return field
