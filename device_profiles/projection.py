"""JSON projections: parse only the parts of a document that some profile reads.

For each group of profiles sharing a topic shape, the paths its profiles read (fields, match
rules, device id, timestamp, message id, embedded binary) are merged into a tree, and the tree
becomes nested msgspec Struct types: one attribute per key read, every other key skipped by the
parser without building Python objects. Values at the leaves stay untyped (`Any`), so type checks
and their reason codes remain the profile's; a key read both as a value and as an object keeps
its whole value as plain JSON, read with `device_profiles.paths`.

Getters compiled here return None for an absent key or a JSON null, like those of `paths`.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from device_profiles.errors import Rejected
from device_profiles.paths import WILDCARD, Getter, Segment, parse_path

_counter = itertools.count()


class _Node:
    """A position in the merged path tree."""

    def __init__(self) -> None:
        self.leaf = False
        self.keys: dict[str, _Node] = {}
        self.items: _Node | None = None  # the element of a list, for index and [*] segments

    def add(self, segments: tuple[Segment, ...]) -> None:
        node = self
        for seg in segments:
            if isinstance(seg, str):
                node = node.keys.setdefault(seg, _Node())
            else:
                if node.items is None:
                    node.items = _Node()
                node = node.items
        node.leaf = True

    @property
    def raw(self) -> bool:
        """Kept as plain JSON: a value, or both object and list, or read as a value and deeper."""
        return (
            self.leaf
            or (bool(self.keys) and self.items is not None)
            or (not self.keys and self.items is None)
        )


class Projection:
    """Struct types and getters for one group's JSON paths."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.root = _Node()
        for path in paths:
            self.root.add(parse_path(path))
        self.root.leaf = False
        if self.root.items is not None or not self.root.keys:
            self.root.items = None
        self.attrs: dict[int, dict[str, str]] = {}
        self.type = self._struct(self.root)
        self.decoder = msgspec.json.Decoder(self.type)

    def _type(self, node: _Node) -> Any:
        """The type of a node: `Any` for plain JSON, a Struct for an object, a list of its element."""
        if node.raw:
            return Any
        if node.keys:
            return self._struct(node)
        assert node.items is not None  # noqa: S101 - a non-raw node has keys or items
        return list[self._type(node.items)]  # type: ignore[misc]

    def _struct(self, node: _Node) -> type[msgspec.Struct]:
        # An absent object or list decodes as an empty one, so attribute chains never meet None
        # (an explicit null where an object or list belongs is a type error: `bad_type`).
        names = {key: f"k{i}" for i, key in enumerate(node.keys)}
        fields: list[tuple[str, Any, Any]] = []
        for key, child in node.keys.items():
            kind = self._type(child)
            default: Any = (
                None if kind is Any else msgspec.field(default_factory=kind if child.keys else list)
            )
            fields.append((names[key], kind, default))
        struct = msgspec.defstruct(
            f"Projection{next(_counter)}", fields, rename={v: k for k, v in names.items()}, kw_only=True
        )
        self.attrs[id(node)] = names
        return struct

    def parse(self, payload: bytes) -> Any:
        """Parse a payload; raise `Rejected` with the reason when it is not usable JSON."""
        try:
            return self.decoder.decode(payload)
        except msgspec.ValidationError as exc:
            text = str(exc)
            if text.startswith("Number out of range"):
                raise Rejected("not_finite", f"JSON number out of range ({text})") from None
            raise Rejected("bad_type", text) from None
        except msgspec.DecodeError as exc:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise Rejected("not_utf8", "payload is not valid UTF-8") from None
            raise Rejected("malformed_json", str(exc)) from None
        except UnicodeDecodeError:
            raise Rejected("not_utf8", "a JSON string is not valid UTF-8") from None
        except RecursionError:
            raise Rejected("too_deep", "JSON nests too deeply to parse") from None

    def getter(self, path: str) -> Getter:
        """A function from a parsed document to the value at `path` (None when absent or null)."""
        return self._getter(self.root, parse_path(path), path)

    def _getter(self, node: _Node, segments: tuple[Segment, ...], path: str) -> Getter:
        steps: list[Callable[[Any], Any]] = []
        attrs: list[str] = []  # a run of object keys: one C-level attrgetter
        for i, seg in enumerate(segments):
            if isinstance(seg, str) and not node.raw:
                attrs.append(self.attrs[id(node)][seg])
                node = node.keys[seg]
                continue
            if attrs:
                steps.append(operator.attrgetter(".".join(attrs)))
                attrs = []
            if node.raw:
                steps.append(_raw_walker(segments[i:], path))
                break
            assert node.items is not None  # noqa: S101 - the tree holds every path
            if seg == WILDCARD:
                rest = segments[i + 1 :]
                steps.append(_each(self._getter(node.items, rest, path) if rest else _same))
                break
            steps.append(_index(int(seg)))
            node = node.items
        if attrs:
            steps.append(operator.attrgetter(".".join(attrs)))
        return _chain(steps)


def _same(value: Any) -> Any:
    return value


def _chain(steps: list[Callable[[Any], Any]]) -> Getter:
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def two(doc: Any) -> Any:
            node = first(doc)
            return None if node is None else second(node)

        return two

    def many(doc: Any) -> Any:
        node = doc
        for step in steps:
            node = step(node)
            if node is None:
                return None
        return node

    return many


def _index(index: int) -> Callable[[Any], Any]:
    def at(items: Any) -> Any:
        return items[index] if index < len(items) else None

    return at


def _each(rest: Getter) -> Callable[[Any], Any]:
    def each(items: Any) -> Any:
        return [v for v in map(rest, items) if v is not None]

    return each


def _raw_walker(segments: tuple[Segment, ...], path: str) -> Callable[[Any], Any]:
    """Walk plain JSON (dicts and lists) for the rest of a path."""

    def walk(node: Any) -> Any:
        for j, seg in enumerate(segments):
            if node is None:
                return None
            if isinstance(seg, str):
                if type(node) is not dict:
                    raise Rejected("bad_type", f"{path}: expected an object before {seg!r}")
                node = node.get(seg)
            elif seg == WILDCARD:
                if type(node) is not list:
                    raise Rejected("bad_type", f"{path}: expected a list")
                tail = _raw_walker(segments[j + 1 :], path)
                found = [tail(item) for item in node]
                return [v for v in found if v is not None]
            else:
                if type(node) is not list:
                    raise Rejected("bad_type", f"{path}: expected a list before [{seg}]")
                node = node[seg] if seg < len(node) else None
        return node

    return walk


def profile_paths(profile: Any) -> list[str]:
    """Every JSON path a profile reads (for building its group's projection)."""
    paths: list[str] = [rule.path for rule in profile.match]
    paths += [f.path for f in profile.fields if f.path is not None]
    for optional in (
        profile.device_id.path,
        profile.timestamp.path if profile.timestamp else None,
        profile.reading_id.path if profile.reading_id else None,
        profile.payload.binary.path if profile.payload.binary else None,
    ):
        if optional is not None:
            paths.append(optional)
    return paths
