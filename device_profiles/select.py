"""Profile selection: topic patterns first, then the inventory's device map, then `match` rules.

Profiles whose topic patterns have the same shape (``zigbee2mqtt/{device_id}`` for every Zigbee
device) form a group. When every profile of a group tests one path for equality (``fPort`` on
ChirpStack, ``type`` on NB-IoT), the group keeps a table from that value to its profiles, so
selection costs one lookup however many profiles share the topic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from device_profiles.decoders import CompiledDecoder
from device_profiles.dialect import topic_segments, topic_vars
from device_profiles.errors import Rejected
from device_profiles.fields import GetterFactory
from device_profiles.paths import compile_getter
from device_profiles.projection import Projection, profile_paths

if TYPE_CHECKING:
    from device_profiles.model import MatchRule, Profile

Predicate = Callable[[Any], bool]


def _rule(rule: MatchRule, getter: GetterFactory) -> Predicate:
    get = getter(rule.path)
    if rule.present is not None:
        want = rule.present

        def present(doc: Any) -> bool:
            try:
                return (get(doc) is not None) is want
            except Rejected:
                return not want

        return present
    expected = rule.equals
    kind = type(expected)

    def equals(doc: Any) -> bool:
        try:
            value = get(doc)
        except Rejected:
            return False
        return type(value) is kind and value == expected

    return equals


def compile_rules(rules: Iterable[MatchRule], getter: GetterFactory) -> Predicate:
    predicates = [_rule(r, getter) for r in rules]
    if not predicates:
        return lambda doc: True
    if len(predicates) == 1:
        return predicates[0]
    return lambda doc: all(p(doc) for p in predicates)


class Candidate:
    """A profile under one of its topic patterns, compiled for its group's projection."""

    __slots__ = ("decoder", "group", "id_key", "names", "predicate", "rest")

    def __init__(self, profile: Profile, pattern: str, group: Group) -> None:
        self.group = group
        self.decoder = CompiledDecoder(profile, group.getter)
        self.names = [(i, name) for i, (seg, name) in enumerate(_annotated(pattern)) if seg is None]
        self.predicate = compile_rules(profile.match, group.getter)
        self.rest = self.predicate  # replaced by the group when one rule becomes a table lookup
        spec = profile.device_id
        topic_level = next((i for i, name in self.names if name == spec.topic), None)
        #: how the device id is read: candidates of one group with equal keys read the same id
        self.id_key = (spec.path, topic_level, spec.case, spec.pattern)

    def reads_id_as(self, other: Candidate) -> bool:
        """Whether this candidate reads a message's device id exactly as `other` does."""
        return self.group is other.group and self.id_key == other.id_key

    def topic_vars(self, parts: list[str]) -> dict[str, str]:
        return {name: parts[i] for i, name in self.names}


def _annotated(pattern: str) -> list[tuple[str | None, str]]:
    names = iter(topic_vars(pattern))
    return [(seg, "" if seg is not None else next(names)) for seg in topic_segments(pattern)]


class Group:
    """Profiles sharing one topic shape (same literal segments, variables anywhere).

    The group parses a JSON payload once, with a projection of every path its profiles read.
    """

    def __init__(self, filter_: str, members: list[tuple[Profile, str]]) -> None:
        self.filter = filter_
        self.literals = [(i, seg) for i, seg in enumerate(filter_.split("/")) if seg != "+"]
        # The literal levels of a topic in one C call, compared with the filter's.
        self._literals_of: Callable[[list[str]], Any] = (
            itemgetter(*(i for i, _ in self.literals)) if self.literals else lambda parts: ()
        )
        self._literal_values: Any = (
            self.literals[0][1] if len(self.literals) == 1 else tuple(seg for _, seg in self.literals)
        )
        json_profiles = [p for p, _ in members if p.payload.format == "json"]
        self.is_json = bool(json_profiles)
        self.projection = (
            Projection(path for p in json_profiles for path in profile_paths(p)) if json_profiles else None
        )
        self.getter: GetterFactory = self.projection.getter if self.projection is not None else compile_getter
        #: The projected JSON document of a payload (raises `Rejected`), or None without JSON.
        self.parse: Callable[[bytes], Any] = (
            self.projection.parse if self.projection is not None else self._no_json
        )
        self.candidates = [Candidate(profile, pattern, self) for profile, pattern in members]
        self.table: dict[tuple[type, Any], list[Candidate]] | None = None
        self.get_key: Callable[[Any], Any] | None = None
        self.trivial_rest = False
        self._build_table()

    @staticmethod
    def _no_json(payload: bytes) -> None:
        return None

    def _build_table(self) -> None:
        """Turn a shared ``equals`` rule into a lookup table (see the module docstring)."""
        if len(self.candidates) < 2 or not all(c.decoder.is_json for c in self.candidates):
            return
        common: set[str] | None = None
        for c in self.candidates:
            paths = {r.path for r in c.decoder.profile.match if r.equals is not None}
            common = paths if common is None else common & paths
        if not common:
            return
        path = sorted(common)[0]
        table: dict[tuple[type, Any], list[Candidate]] = defaultdict(list)
        for c in self.candidates:
            rules = c.decoder.profile.match
            key = next(r.equals for r in rules if r.path == path and r.equals is not None)
            table[(type(key), key)].append(c)
            c.rest = compile_rules(
                (r for r in rules if not (r.path == path and r.equals is not None)), self.getter
            )
        self.table = dict(table)
        self.get_key = self.getter(path)
        self.trivial_rest = all(
            all(r.path == path and r.equals is not None for r in c.decoder.profile.match)
            for c in self.candidates
        )

    def matches(self, parts: list[str]) -> bool:
        return bool(self._literals_of(parts) == self._literal_values)

    def by_rules(self, doc: Any) -> list[Candidate]:
        """The candidates whose match rules hold for `doc`."""
        if self.table is not None and self.get_key is not None:
            try:
                value = self.get_key(doc)
            except Rejected:
                return []
            kind = type(value)
            if kind is not int and kind is not str and kind is not bool and kind is not float:
                return []  # None, or a list or object where a scalar belongs
            pool = self.table.get((kind, value), [])
            return pool if self.trivial_rest else [c for c in pool if c.rest(doc)]
        return [c for c in self.candidates if c.predicate(doc)]


class TopicIndex:
    """Groups by topic length, for the first cut of selection."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        by_filter: dict[str, list[tuple[Profile, str]]] = defaultdict(list)
        for profile in profiles:
            for pattern in profile.topics:
                filter_ = "/".join("+" if s is None else s for s in topic_segments(pattern))
                by_filter[filter_].append((profile, pattern))
        self.groups = [Group(f, members) for f, members in sorted(by_filter.items())]
        self.by_length: dict[int, list[Group]] = defaultdict(list)
        for group in self.groups:
            self.by_length[group.filter.count("/") + 1].append(group)

    def filters(self) -> list[str]:
        return [g.filter for g in self.groups]

    def groups_for(self, parts: list[str]) -> list[Group]:
        return [g for g in self.by_length.get(len(parts), ()) if g.matches(parts)]
