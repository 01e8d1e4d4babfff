"""Reading profile files: YAML (data only) -> validated `Profile`, errors naming file and field.

Profiles live as ``<vendor>/<model>.yaml`` under a profiles directory. YAML is read with the safe
loader (no tags, so no Python objects), duplicate keys are an error rather than "last one wins",
and files over `MAX_PROFILE_BYTES` are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from device_profiles.dialect import SHIPPED_DIR as SHIPPED_DIR
from device_profiles.errors import ProfileError
from device_profiles.model import Profile

MAX_PROFILE_BYTES: Final = 256 * 1024

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader that refuses duplicate mapping keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def profile_from_data(data: Any, path: Path | None = None) -> Profile:
    """Validate parsed profile data; raise `ProfileError` naming `path` and the field."""
    if not isinstance(data, dict):
        raise ProfileError(path, "", "a profile file must hold one YAML mapping")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        ctx = err.get("ctx") or {}
        if err["type"] == "profile":
            raise ProfileError(path, str(ctx["field"]), str(ctx["detail"])) from exc
        loc = _location(tuple(err["loc"]))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProfileError(path, loc, f"{err['msg']}{more}") from exc


def load_file(path: Path) -> Profile:
    """Read and validate one profile file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(path, "", f"cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(path, "", f"larger than {MAX_PROFILE_BYTES} bytes")
    try:
        data = yaml.load(raw, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ProfileError(path, "", f"invalid YAML: {exc}") from exc
    return profile_from_data(data, path)


def profile_files(directory: Path) -> Iterator[Path]:
    """The profile files under a directory (``*.yaml`` and ``*.yml``, recursively, sorted)."""
    if not directory.is_dir():
        raise ProfileError(directory, "", "not a directory")
    yield from sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_dirs(directories: Iterable[Path]) -> tuple[dict[str, Profile], dict[str, Path]]:
    """Load every profile under the directories; raise the first `ProfileError` found.

    Returns profiles by id and the file each came from. Two files with one id are an error.
    """
    profiles: dict[str, Profile] = {}
    sources: dict[str, Path] = {}
    for directory in directories:
        for path in profile_files(directory):
            profile = load_file(path)
            if profile.id in profiles:
                raise ProfileError(path, "id", f"{profile.id!r} is already defined in {sources[profile.id]}")
            profiles[profile.id] = profile
            sources[profile.id] = path
    return profiles, sources


def check_dirs(directories: Iterable[Path]) -> tuple[int, list[ProfileError]]:
    """Validate every file under the directories, collecting all errors (for ``profiles check``).

    Returns the number of files that loaded and the errors of the others.
    """
    errors: list[ProfileError] = []
    ok = 0
    seen: dict[str, Path] = {}
    for directory in directories:
        try:
            paths = list(profile_files(directory))
        except ProfileError as exc:
            errors.append(exc)
            continue
        for path in paths:
            try:
                profile = load_file(path)
            except ProfileError as exc:
                errors.append(exc)
                continue
            if profile.id in seen:
                errors.append(
                    ProfileError(path, "id", f"{profile.id!r} is already defined in {seen[profile.id]}")
                )
                continue
            seen[profile.id] = path
            ok += 1
    return ok, errors
