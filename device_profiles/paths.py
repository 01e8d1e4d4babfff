"""Field paths into JSON documents: ``data``, ``deviceInfo.devEui``, ``rxInfo[*].rssi``, ``a[0].b``.

A path is parsed once, at profile load, into a tuple of segments (object keys, list indexes and at
most one ``[*]`` wildcard) and compiled into a getter. Getters return None for an absent key or a
JSON null alike: the standard treats both as "not reported".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Final

from device_profiles.errors import Rejected

#: Marks the ``[*]`` segment: every element of a list.
WILDCARD: Final = -1

Segment = str | int
Getter = Callable[[Any], Any]

_TOKEN = re.compile(r"([A-Za-z0-9_\-]+)|\[(\d+|\*)\]")
MAX_SEGMENTS: Final = 8


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[Segment, ...]:
    """Parse a path; raise ValueError with what is wrong. (Memoised: encoders parse per message.)"""
    segments: list[Segment] = []
    pos = 0
    expect_key = True
    while pos < len(path):
        if path[pos] == "." and not expect_key and segments:
            pos += 1
            expect_key = True
            continue
        match = _TOKEN.match(path, pos)
        if match is None or (match.group(1) is not None and not expect_key):
            raise ValueError(f"invalid path {path!r} at character {pos + 1}")
        if match.group(1) is not None:
            segments.append(match.group(1))
        else:
            if not segments:
                raise ValueError(f"invalid path {path!r}: must start with a key")
            index = match.group(2)
            segments.append(WILDCARD if index == "*" else int(index))
        expect_key = False
        pos = match.end()
    if not segments or expect_key:
        raise ValueError(f"invalid path {path!r}")
    if segments.count(WILDCARD) > 1:
        raise ValueError(f"invalid path {path!r}: at most one [*]")
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"invalid path {path!r}: more than {MAX_SEGMENTS} segments")
    return tuple(segments)


def _walk(node: Any, segments: tuple[Segment, ...], path: str) -> Any:
    for seg in segments:
        if node is None:
            return None
        if isinstance(seg, str):
            if type(node) is not dict:
                raise Rejected("bad_type", f"{path}: expected an object before {seg!r}")
            node = node.get(seg)
        else:
            if type(node) is not list:
                raise Rejected("bad_type", f"{path}: expected a list before [{seg}]")
            node = node[seg] if seg < len(node) else None
    return node


def compile_getter(path: str) -> Getter:
    """A function returning the value at `path` in a JSON object (None when absent or null).

    A wildcard path returns a list of the values found (absent and null elements left out), or
    None when the list itself is absent. The document passed in must be a dict.
    """
    segments = parse_path(path)
    if WILDCARD in segments:
        split = segments.index(WILDCARD)
        head, tail = segments[:split], segments[split + 1 :]

        def get_all(doc: Any) -> Any:
            items = _walk(doc, head, path)
            if items is None:
                return None
            if type(items) is not list:
                raise Rejected("bad_type", f"{path}: expected a list")
            found = [_walk(item, tail, path) for item in items]
            return [v for v in found if v is not None]

        return get_all
    if len(segments) == 1 and isinstance(segments[0], str):
        key = segments[0]

        def get_one(doc: Any) -> Any:
            return doc.get(key)

        return get_one
    if len(segments) == 2 and isinstance(segments[0], str) and isinstance(segments[1], str):
        outer, inner = segments

        def get_two(doc: Any) -> Any:
            node = doc.get(outer)
            if type(node) is dict:
                return node.get(inner)
            if node is None:
                return None
            raise Rejected("bad_type", f"{path}: {outer!r} is not an object")

        return get_two

    def get_many(doc: Any) -> Any:
        return _walk(doc, segments, path)

    return get_many


def set_path(
    doc: dict[str, Any],
    segments: tuple[Segment, ...],
    value: Any,
    *,
    on_descend: Callable[[Any], None] | None = None,
) -> None:
    """Write `value` at a parsed path, creating objects and lists on the way (for encoders).

    Index and wildcard segments write into the list element (element 0 for ``[*]``), extending
    the list with empty objects as needed. `on_descend`, when given, sees every intermediate
    node the path goes through (and may raise to refuse it).
    """
    node: Any = doc
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if isinstance(seg, str):
            if last:
                node[seg] = value
                return
            nxt = segments[i + 1]
            if seg not in node or node[seg] is None:
                node[seg] = {} if isinstance(nxt, str) else []
            node = node[seg]
        else:
            index = 0 if seg == WILDCARD else seg
            while len(node) <= index:
                node.append({})
            if last:
                node[index] = value
                return
            node = node[index]
        if on_descend is not None:
            on_descend(node)
