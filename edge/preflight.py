"""What a configuration must pass before the agent runs it: one function, `preflight`, used by
``linli edge check-config``, by ``linli edge run`` (which refuses to start on any problem) and by
a SIGHUP reload (which keeps the running set on any problem).

Beyond the configuration file itself (`edge.config.load_config`), for the devices this gateway
serves:

- the profiles load (a `ProfileError` names the file and the field);
- the inventory loads (an error names the file and the entry);
- every device's profile is loaded: otherwise its messages are quarantined as undecodable;
- every device's type is its profile's: a door contact decoded by an SOS button's profile would
  raise false alarms (the check is `device_profiles.inventory.Inventory.profile_problems`, shared
  with every other reader of the inventory);
- some subscription covers every topic of every device's profile: a profile whose topics no
  topic filter matches would never hear from its devices.

Every problem is reported, not only the first; devices with the same problem are named together
(the first few of them). What is suspicious but can be right (no device at all for this
gateway; an alarm event or metric in ``classes`` that no loaded profile gives) is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from device_profiles import DERIVED_EVENTS, SHIPPED_DIR, DeviceProfilesError, ProfileSet
from device_profiles.inventory import Inventory
from device_profiles.inventory import InventoryError as InventoryFileError
from edge.errors import InventoryError, PreflightError
from edge.inventory import InventoryView, load_inventory

if TYPE_CHECKING:
    from edge.config import EdgeConfig

#: Devices named per problem; the rest are counted.
NAMED_PER_PROBLEM: Final = 5


@dataclass(frozen=True, slots=True)
class Loaded:
    """What passed: the profiles, this gateway's inventory, the topic filters to subscribe to,
    and warnings to show."""

    profiles: ProfileSet
    inventory: InventoryView
    filters: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def load_profiles(config: EdgeConfig) -> ProfileSet:
    """The shipped profiles (unless ``shipped_profiles = false``) and those in the configured
    folders. A profile id defined twice (a folder repeating a shipped id) is a `ProfileError`
    naming both files: to replace a shipped profile, turn the shipped set off and copy the rest.
    """
    if not config.profiles:
        return ProfileSet.shipped()
    folders = (SHIPPED_DIR, *config.profiles) if config.shipped_profiles else config.profiles
    return ProfileSet.load(*folders)


def preflight(config: EdgeConfig) -> Loaded:
    """Load the profiles and the inventory and check them together; raise `PreflightError`
    listing every problem."""
    problems: list[str] = []
    profiles: ProfileSet | None = None
    whole: Inventory | None = None
    try:
        profiles = load_profiles(config)
    except DeviceProfilesError as exc:  # a ProfileError names the file and the field
        problems.append(f"profiles: {exc}")
    try:
        whole = load_inventory(config.inventory)
    except InventoryError as exc:
        problems.append(f"inventory: {exc}")
    if profiles is None or whole is None:
        raise PreflightError(problems)
    inventory = InventoryView(whole, gateway_id=config.gateway_id)
    filters = (
        *profiles.topic_filters(),
        *discovery_filters(config, profiles),
        *ack_filters(config, profiles),
    )
    problems += _grouped(whole.profile_problems(profiles, gateway_id=config.gateway_id))
    problems += unheard_profiles(profiles, inventory, filters)
    if problems:
        raise PreflightError(problems)
    warnings = unmatched_classes(config, profiles)
    if not len(inventory):
        gateways = ", ".join(whole.gateways()[:NAMED_PER_PROBLEM]) or "none"
        warnings.append(
            f"inventory: {config.inventory} assigns no device to gateway {config.gateway_id!r} "
            f"(it has {len(whole)} devices, for gateways: {gateways}); "
            "every message will be quarantined as unknown_device"
        )
    return Loaded(profiles=profiles, inventory=inventory, filters=filters, warnings=tuple(warnings))


def bridge_topic(config: EdgeConfig, profiles: ProfileSet) -> str | None:
    """Zigbee2MQTT's device list topic, when configured and a loaded profile speaks Zigbee2MQTT
    under the same base topic."""
    topic = config.discovery.zigbee2mqtt_devices_topic
    base = topic.split("/", 1)[0]
    if not topic or not any(t.startswith(f"{base}/") for p in profiles.profiles.values() for t in p.topics):
        return None
    return topic


def discovery_filters(config: EdgeConfig, profiles: ProfileSet) -> tuple[str, ...]:
    topic = bridge_topic(config, profiles)
    return () if topic is None else (topic,)


def ack_filters(config: EdgeConfig, profiles: ProfileSet) -> tuple[str, ...]:
    """The field topics of the network's acknowledgements of commands (``confirm: network``)."""
    if not config.commands.enabled:
        return ()
    from device_profiles.command_decode import topic_filter

    found = {
        topic_filter(s.ack_topic)
        for p in profiles.profiles.values()
        for s in p.commands.values()
        if s.ack_topic
    }
    return tuple(sorted(found))


def unmatched_classes(config: EdgeConfig, profiles: ProfileSet) -> list[str]:
    """Alarm events and metrics that no loaded profile gives and the agent does not derive: they
    never make a reading alarm-class (a typo, or a profile not loaded). Warnings, not errors: a
    profile added later may give them."""
    events: set[str] = set(DERIVED_EVENTS)
    metrics: set[str] = set()
    for profile in profiles.profiles.values():
        for spec in profile.fields:
            if spec.metric is not None:
                metrics.add(spec.metric)
            events.update(e for e in (spec.events or {}).values() if e is not None)
    warnings = []
    for key, wanted, known in (
        ("classes.alarm_events", config.classes.alarm_events, events),
        ("classes.alarm_metrics", tuple(config.classes.alarm_metrics), metrics),
    ):
        unknown = [name for name in wanted if name not in known]
        if unknown:
            warnings.append(
                f"{key}: no loaded profile gives {', '.join(map(repr, unknown))} and the agent does not "
                "derive it, so it never makes a reading alarm-class (a typo, or a profile not loaded?)"
            )
    return warnings


def _grouped(errors: list[InventoryFileError]) -> list[str]:
    """One line per (file, problem): ``inventory.yaml: unknown profile 'x': devices[3] (id), ...``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for exc in errors:
        groups.setdefault((str(exc.path), exc.detail), []).append(exc.entry)
    return [f"{path}: {detail}: {_some(entries)}" for (path, detail), entries in groups.items()]


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED_PER_PROBLEM])
    more = len(names) - NAMED_PER_PROBLEM
    return f"{shown} and {more} more" if more > 0 else shown


def unheard_profiles(profiles: ProfileSet, inventory: InventoryView, filters: tuple[str, ...]) -> list[str]:
    """Profiles in use with a topic that no subscription filter matches."""
    problems = []
    used: dict[str, list[str]] = {}
    for device_id, profile_id in inventory.profile_map().items():
        used.setdefault(profile_id, []).append(device_id)
    for profile_id, devices in used.items():
        profile = profiles.profiles.get(profile_id)
        if profile is None:
            continue  # reported above
        for pattern in profile.topics:
            # A topic of this pattern: every {variable} level filled with one sample level.
            topic = "/".join("x" if level.startswith("{") else level for level in pattern.split("/"))
            if not any(topic_matches(f, topic) for f in filters):
                problems.append(
                    f"profile {profile_id!r}: no subscription matches its topic {pattern!r} "
                    f"(subscribed: {', '.join(filters) or 'nothing'}), so its devices are never "
                    f"heard: {_some(devices)}"
                )
    return problems


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether an MQTT topic filter (``+`` one level, ``#`` the rest) matches a topic."""
    if topic.startswith("$") and not topic_filter.startswith("$"):
        return False  # wildcards at the first level never match $-topics
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)
