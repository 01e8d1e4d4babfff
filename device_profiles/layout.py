"""A JSON message laid out once per profile, for the encoders: literal bytes with holes for values.

An encoder builds a message by writing values into a copy of the profile's template at fixed
paths, in a fixed order (`set_path`). Which keys exist, and where, is the same for every message
of a profile; only the values differ. `JsonLayout` does the writes once with placeholders,
serialises the result, and keeps the bytes between the placeholders. Rendering a message then
encodes each value and joins: the same bytes as writing the values into a fresh copy and
encoding that, without building the document.

A layout where a value would later be written *through* (a path below another write's value) or
that fails to build is not fixed in advance; it renders by replaying the writes on a copy of the
template, which gives exactly the old behaviour, errors included.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from device_profiles.paths import Segment, set_path

#: Kind of a `Write` whose value is part of the profile (a `match` rule's ``equals``).
CONSTANT: Final = "constant"

_MARK: Final = "\x01linli-slot:"
_HOLE: Final = re.compile(rb'"\\u0001linli-slot:(\d+)\\u0001"')


class Write(msgspec.Struct, frozen=True):
    """One value written into the message: where, what kind, and the value when it is constant."""

    segments: tuple[Segment, ...]
    kind: str
    value: Any = None


class _Hole:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _NotFixed(Exception):
    """The layout depends on the values (a write goes through another write's value)."""


def _refuse_hole(node: Any) -> None:
    if type(node) is _Hole:
        raise _NotFixed


def _place(doc: dict[str, Any], segments: tuple[Segment, ...], value: Any) -> None:
    """`set_path`, refusing to descend into a hole."""
    set_path(doc, segments, value, on_descend=_refuse_hole)


class JsonLayout:
    """Renders messages of one profile from the values of its non-constant writes.

    Args:
        template: the JSON object every message starts from.
        writes: the writes in the order the encoder makes them.
        encoder: encodes single values (and the document, when the layout is not fixed).
    """

    def __init__(
        self, *, template: dict[str, Any], writes: list[Write], encoder: msgspec.json.Encoder
    ) -> None:
        self._template = msgspec.json.encode(template)
        self._writes = writes
        self._encode = encoder.encode
        self._decode = msgspec.json.Decoder().decode
        self._head = b""
        self._holes: list[tuple[int, bytes]] | None = None
        if _MARK.encode() in self._template or b"linli-slot" in self._template:
            return
        doc: dict[str, Any] = self._decode(self._template)
        count = 0
        try:
            for w in writes:
                if w.kind == CONSTANT:
                    _place(doc, w.segments, w.value)
                else:
                    _place(doc, w.segments, _Hole(count))
                    count += 1
        except (_NotFixed, TypeError, IndexError, KeyError, AttributeError):
            return  # replayed per message, which raises the same error there
        marked = msgspec.json.Encoder(enc_hook=_mark).encode(doc)
        pieces = _HOLE.split(marked)
        self._head = pieces[0]
        self._holes = [(int(pieces[i]), pieces[i + 1]) for i in range(1, len(pieces), 2)]

    @property
    def fixed(self) -> bool:
        """Whether messages render from precomputed bytes (else by replaying the writes)."""
        return self._holes is not None

    def render(self, values: list[Any]) -> bytes:
        """The message for `values`, one per non-constant write, in order."""
        holes = self._holes
        if holes is None:
            return self._replay(values)
        encode = self._encode
        parts = [self._head]
        append = parts.append
        for index, literal in holes:
            append(encode(values[index]))
            append(literal)
        return b"".join(parts)

    def _replay(self, values: list[Any]) -> bytes:
        doc: dict[str, Any] = self._decode(self._template)
        it = iter(values)
        for w in self._writes:
            set_path(doc, w.segments, w.value if w.kind == CONSTANT else next(it))
        return self._encode(doc)


def _mark(obj: Any) -> Any:
    if type(obj) is _Hole:
        return f"{_MARK}{obj.index}\x01"
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")
