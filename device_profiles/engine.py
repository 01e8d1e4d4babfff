"""`ProfileSet`: the loaded, compiled profiles, and decode/encode between vendor payloads and `Reading`.

    profiles = ProfileSet.shipped()
    reading = profiles.decode("nbiot/861234567890123/up", payload, datetime.now(UTC))
    if isinstance(reading, DecodeError):
        quarantine(reading.reason, payload)

Decoding never raises and never returns a partial reading. The work per message is bounded: the
payload size is capped (`too_large`), JSON nesting is capped by the parser's recursion guard
(`too_deep`), and a profile reads a fixed set of paths and bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from device_profiles.dialect import SHIPPED_DIR
from device_profiles.encoders import CompiledEncoder
from device_profiles.errors import ProfileError, Rejected, UnknownProfileError
from device_profiles.reading import Reading
from device_profiles.select import Candidate, Group, TopicIndex
from device_profiles.standard import DecodeError

if TYPE_CHECKING:
    from device_profiles.model import Profile

#: Default cap on a payload's size. A profile's own `max_payload_bytes` may be lower.
MAX_PAYLOAD_BYTES: Final = 64 * 1024


class Route:
    """What topics of one shape lead to: their groups and candidate profiles.

    One object per distinct set of groups, shared by every topic that reaches it. Nothing is kept
    per topic: a gateway's topics are mostly one per device, and finding a topic's groups (a
    comparison of its literal levels per group of its length) costs about as much as a cache's
    lookup would save.
    """

    __slots__ = ("candidates", "groups", "single")

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.candidates = [c for g in self.groups for c in g.candidates]
        self.single = self.groups[0] if len(self.groups) == 1 else None


class ProfileSet:
    """An immutable set of compiled profiles: select, decode and encode.

    Args:
        profiles: validated profiles (ids must be unique).
        device_map: the inventory's device id -> profile id, used to pick a profile when several
            share a topic pattern (before the profiles' `match` rules).
        max_payload_bytes: payloads larger than this are refused with reason ``too_large``.
    """

    def __init__(
        self,
        profiles: Iterable[Profile] = (),
        *,
        device_map: Mapping[str, str] | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        sources: Mapping[str, Path] | None = None,
        _compiled: tuple[dict[str, Profile], dict[str, CompiledEncoder], TopicIndex] | None = None,
    ) -> None:
        if _compiled is None:
            by_id: dict[str, Profile] = {}
            for profile in profiles:
                if profile.id in by_id:
                    raise ProfileError(None, "id", f"duplicate profile id {profile.id!r}")
                by_id[profile.id] = profile
            encoders = {pid: CompiledEncoder(p) for pid, p in by_id.items()}
            _compiled = (by_id, encoders, TopicIndex(by_id.values()))
        by_id, self._encoders, self._index = _compiled
        self._profiles = MappingProxyType(by_id)
        self._device_map = dict(device_map or {})
        self._max_bytes = max_payload_bytes
        self._sources = MappingProxyType(dict(sources or {}))
        self._routes: dict[tuple[int, ...], Route] = {}

    @classmethod
    def load(cls, *dirs: Path, device_map: Mapping[str, str] | None = None) -> ProfileSet:
        """Load and compile every profile under `dirs` (default: the shipped profiles).

        Raises `ProfileError` for the first invalid file, naming the file and the field.
        """
        from device_profiles.loader import load_dirs  # pydantic: only where profiles are validated

        profiles, sources = load_dirs(dirs or (SHIPPED_DIR,))
        return cls(profiles.values(), device_map=device_map, sources=sources)

    @classmethod
    def shipped(cls) -> ProfileSet:
        """The profiles shipped in ``device_profiles/profiles/`` (loaded once per process)."""
        return _shipped()

    @classmethod
    def shipped_and(cls, *dirs: Path) -> ProfileSet:
        """The shipped profiles and those under `dirs` (the shipped set alone, shared, without any)."""
        return cls.load(SHIPPED_DIR, *dirs) if dirs else cls.shipped()

    def with_device_map(self, mapping: Mapping[str, str]) -> ProfileSet:
        """A copy using the inventory's device id -> profile id mapping (compiled profiles shared)."""
        return ProfileSet(
            device_map=mapping,
            max_payload_bytes=self._max_bytes,
            sources=self._sources,
            _compiled=(dict(self._profiles), self._encoders, self._index),
        )

    @property
    def profiles(self) -> Mapping[str, Profile]:
        return self._profiles

    @property
    def sources(self) -> Mapping[str, Path]:
        """The file each profile was loaded from (empty for profiles built in memory)."""
        return self._sources

    @property
    def device_map(self) -> Mapping[str, str]:
        return MappingProxyType(self._device_map)

    def get(self, profile_id: str) -> Profile:
        try:
            return self._profiles[profile_id]
        except KeyError:
            raise UnknownProfileError(profile_id) from None

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, profile_id: object) -> bool:
        return profile_id in self._profiles

    def topic_filters(self) -> list[str]:
        """MQTT subscription filters covering every profile's topics (``zigbee2mqtt/+``, ...)."""
        return self._index.filters()

    def decode(
        self, topic: str, payload: bytes, received_at: datetime, *, profile: str | None = None
    ) -> Reading | DecodeError:
        """Translate one vendor payload into a `Reading`, or say why not.

        Args:
            topic: the MQTT topic it arrived on (selects the profile, may carry the device id).
            payload: the raw bytes.
            received_at: timezone-aware receive time; becomes `Reading.received_at`, and `ts`
                when the payload carries no device time.
            profile: force this profile id, skipping selection (the topic must still fit it).
        """
        selected: str | None = profile
        try:
            if received_at.tzinfo is not UTC:
                if received_at.tzinfo is None or received_at.utcoffset() is None:
                    raise Rejected("bad_timestamp", "received_at must be timezone-aware")
                received_at = received_at.astimezone(UTC)
            parts = topic.split("/")
            groups = self._index.groups_for(parts)
            key = tuple(map(id, groups))  # the index's groups live as long as the index
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = Route(groups)
            if len(payload) > self._max_bytes:
                raise Rejected("too_large", f"payload is {len(payload)} bytes, the cap is {self._max_bytes}")
            group = route.single
            device_id: str | None = None
            if group is not None and profile is None and not self._device_map:  # the usual case, inline
                doc = group.parse(payload)
                matching = group.by_rules(doc)
                if len(matching) == 1:
                    candidate = matching[0]
                else:
                    candidate, doc, device_id = self._select(topic, parts, route, payload, profile)
            else:
                candidate, doc, device_id = self._select(topic, parts, route, payload, profile)
            decoder = candidate.decoder
            selected = decoder.id
            if len(payload) > decoder.max_payload_bytes:
                raise Rejected(
                    "too_large",
                    f"payload is {len(payload)} bytes, the profile's cap is {decoder.max_payload_bytes}",
                )
            return decoder.decode(doc, candidate.topic_vars(parts), payload, received_at, device_id=device_id)
        except Rejected as exc:
            return DecodeError(reason=exc.reason, message=exc.message, topic=topic, profile=selected)

    def _select(
        self, topic: str, parts: list[str], route: Route, payload: bytes, forced: str | None
    ) -> tuple[Candidate, Any, str | None]:
        """The candidate profile for this message, the payload as its group parsed it, and the
        device id when choosing found it already (by the inventory)."""
        if forced is not None:
            if forced not in self._profiles:
                raise Rejected("unknown_profile", f"no profile with id {forced!r} is loaded")
            for c in route.candidates:
                if c.decoder.id == forced:
                    return c, c.group.parse(payload), None
            raise Rejected("no_profile", f"topic {topic!r} does not fit profile {forced!r}")
        if not route.candidates:
            raise Rejected("no_profile", f"no profile handles topic {topic!r}")
        if route.single is not None and not self._device_map:  # the common case, kept short
            doc = route.single.parse(payload)
            matching = route.single.by_rules(doc)
            if len(matching) == 1:
                return matching[0], doc, None
            docs = {route.single: doc}
        else:
            docs = {g: g.parse(payload) for g in route.groups}
            chosen = self._by_inventory(topic, parts, route, docs) if self._device_map else None
            if chosen is not None:
                return chosen[0], docs[chosen[0].group], chosen[1]
            matching = [c for g in route.groups for c in g.by_rules(docs[g])]
        if len(matching) == 1:
            return matching[0], docs[matching[0].group], None
        if not matching:
            raise Rejected("no_profile", f"no profile for topic {topic!r} matches the payload")
        ids = ", ".join(sorted(c.decoder.id for c in matching))
        raise Rejected("ambiguous_profile", f"the payload fits several profiles: {ids}")

    def _by_inventory(
        self, topic: str, parts: list[str], route: Route, docs: dict[Group, Any]
    ) -> tuple[Candidate, str | None] | None:
        """The candidate the inventory names for this message's device, and the device id when that
        candidate reads it the same way; or None to fall back to rules."""
        for c in route.candidates:
            try:
                device_id = c.decoder.device_id(docs[c.group], c.topic_vars(parts))
            except Rejected:
                continue
            mapped = self._device_map.get(device_id)
            if mapped is None:
                continue
            for other in route.candidates:
                if other.decoder.id == mapped:
                    return other, device_id if other.reads_id_as(c) else None
            if mapped not in self._profiles:
                raise Rejected(
                    "unknown_profile", f"the inventory maps {device_id!r} to unknown profile {mapped!r}"
                )
            raise Rejected(
                "no_profile",
                f"the inventory maps {device_id!r} to {mapped!r}, which does not handle {topic!r}",
            )
        return None

    def encode(self, reading: Reading) -> tuple[str, bytes]:
        """Write a reading in its profile's vendor dialect: ``(topic, payload)``.

        Deterministic: the same reading gives the same bytes. Raises `UnknownProfileError` for an
        unknown `reading.profile` and `EncodeError` for a reading the profile cannot express.
        """
        encoder = self._encoders.get(reading.profile)
        if encoder is None:
            raise UnknownProfileError(reading.profile)
        return encoder.encode(reading)

    def encode_message(self, reading: Reading) -> tuple[str, bytes, str]:
        """`encode`, plus the `reading_id` that decoding the payload gives: ``(topic, payload, id)``.

        For a dialect with a vendor message id that is the id written into the payload; for one
        without, the id the decoder derives from the device id and the payload bytes. Either way
        no decode is needed to learn it.
        """
        encoder = self._encoders.get(reading.profile)
        if encoder is None:
            raise UnknownProfileError(reading.profile)
        return encoder.encode_message(reading)


@cache
def _shipped() -> ProfileSet:
    return ProfileSet.load(SHIPPED_DIR)
