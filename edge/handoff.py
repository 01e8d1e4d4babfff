"""``linli edge run`` in two stages, so that the running agent never loads pydantic.

1. **Check** (``linli edge run``): the configuration is validated by its pydantic models
   (`edge.config.load_config`: every problem with its file and key), the profiles and the inventory
   by `edge.preflight.preflight`, exactly as ``check-config`` does; any problem refuses the start.
2. **Run**: what passed is encoded (MessagePack) into an anonymous memory file, and the process
   replaces itself (`os.execv`, same PID, so systemd's supervision and the watchdog are
   unaffected) with ``python -m edge.handoff run FD``, which decodes it into `edge.frozen`'s
   msgspec copies of the models and runs the `edge.agent.Agent`.

pydantic and the models' schemas are about 10 MB of resident memory that the agent never uses
after start-up (docs/benchmarks.md, issue 10's 40 MB idle target); a gateway has little to spare.

A reload (SIGHUP, or a changed inventory or profile file) needs the same checks: the agent runs
``python -m edge.handoff check`` as a short-lived child, hands it the running configuration on
stdin, and reads back the checked profiles and inventory, or the problems (`PreflightError`, the
running set kept). The copies carry the models' fields and their read-only members (their
pydantic-free base classes); a test holds `edge/frozen.py` to a fresh rendering of the models and
compares every value and member of a handed-over configuration and profile set with the
originals.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, cast

import msgspec

from device_profiles.config_view import Secret
from device_profiles.engine import ProfileSet
from edge import frozen
from edge.errors import EdgeError, PreflightError
from edge.inventory import Device, InventoryView
from edge.preflight import Loaded

if TYPE_CHECKING:
    from device_profiles.model import Profile
    from edge.agent import Agent
    from edge.config import EdgeConfig

#: How long a reload's check may take at most (start a Python, validate, compile the profiles).
CHECK_TIMEOUT_S: Final = 300.0
#: Bytes of a failed check's standard error quoted in the error.
_STDERR_TAIL: Final = 2000


class Handed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """What the check hands to the agent: the configuration and what `preflight` loaded."""

    config: frozen.EdgeConfig
    #: in the loaded order (which decides among profiles sharing a topic)
    profiles: list[frozen.Profile]
    sources: dict[str, Path]
    #: this gateway's devices, and the gateway of every other device the inventory lists
    devices: list[Device]
    owners: dict[str, str]
    filters: tuple[str, ...]
    warnings: tuple[str, ...]


class Refused(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The check found problems (a reload's: the running set stays)."""

    problems: list[str]


def _enc_hook(obj: object) -> object:
    dump = getattr(obj, "model_dump", None)  # a validated model: its fields, by name
    if dump is not None:
        return dump()
    secret = getattr(obj, "get_secret_value", None)  # pydantic's SecretStr, or `Secret`
    if secret is not None:
        return secret()
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot hand over {type(obj).__name__}")


def _dec_hook(tp: type, obj: object) -> object:
    if tp is Path and isinstance(obj, str):
        return Path(obj)
    if tp is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError(f"not a {tp.__name__}: {obj!r}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(Handed | Refused, dec_hook=_dec_hook)


def encode(config: EdgeConfig, loaded: Loaded) -> bytes:
    """The hand-over of a configuration and what `preflight` loaded for it."""
    return _encoder.encode(
        {
            "type": "Handed",
            "config": config,
            "profiles": list(loaded.profiles.profiles.values()),
            "sources": dict(loaded.profiles.sources),
            "devices": list(loaded.inventory.devices.values()),
            "owners": dict(loaded.inventory.owners),
            "filters": loaded.filters,
            "warnings": loaded.warnings,
        }
    )


def decode(data: bytes) -> tuple[EdgeConfig, Loaded]:
    """The configuration and the loaded set from a hand-over; `PreflightError` for a refusal.

    The configuration is `edge.frozen.EdgeConfig` and the profiles `edge.frozen.Profile`: the
    validated models' fields and members, which is all the agent reads (typed as the models).
    """
    outcome = _decoder.decode(data)
    if isinstance(outcome, Refused):
        raise PreflightError(outcome.problems)
    profiles = ProfileSet(cast("list[Profile]", outcome.profiles), sources=outcome.sources)
    inventory = InventoryView.restore(
        gateway_id=outcome.config.gateway_id,
        devices=[
            Device(
                device_id=d.device_id, device_type=sys.intern(d.device_type), profile=sys.intern(d.profile)
            )
            for d in outcome.devices
        ],
        owners=outcome.owners,
    )
    loaded = Loaded(
        profiles=profiles, inventory=inventory, filters=outcome.filters, warnings=outcome.warnings
    )
    return cast("EdgeConfig", outcome.config), loaded


def exec_agent(config: EdgeConfig, loaded: Loaded) -> NoReturn:
    """Replace this process with the agent running `config` and `loaded` (checked by the caller)."""
    data = encode(config, loaded)
    fd = -1
    try:
        fd = os.memfd_create("linli-edge-handoff", 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        os.set_inheritable(fd, True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "edge.handoff", "run", str(fd)])  # noqa: S606
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise EdgeError(f"cannot start the agent ({sys.executable} -m edge.handoff): {exc}") from exc


def check_in_child(config: EdgeConfig) -> Loaded:
    """`preflight` for the running `config`, in a short-lived child process (which loads pydantic
    and the models, and exits). Raises `PreflightError` for problems, `EdgeError` when the check
    itself fails."""
    import subprocess

    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge.handoff", "check"],
            input=_encoder.encode(config),
            capture_output=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
            start_new_session=True,  # a SIGHUP to the agent's process group is not for it
        )
    except subprocess.TimeoutExpired as exc:
        raise EdgeError(f"the check of the profiles and the inventory took over {exc.timeout:.0f} s") from exc
    except OSError as exc:
        raise EdgeError(f"cannot start the check of the profiles and the inventory: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise EdgeError(
            f"the check of the profiles and the inventory failed (exit {proc.returncode}): {tail}"
        )
    try:
        return decode(proc.stdout)[1]
    except msgspec.DecodeError as exc:  # a bug, not the operator's input: say what happened
        raise EdgeError(f"the check of the profiles and the inventory answered nonsense: {exc}") from exc


def run_agent(agent: Agent) -> int:
    """Run `agent` (handed its checked set: nothing left to refuse) until it stops: the exit status
    of ``linli edge run``."""
    from edge.logs import get_logger

    log = get_logger("edge.agent")
    try:
        asyncio.run(agent.run())
    except EdgeError as exc:
        log.error("fatal", error=str(exc))
        return 1
    return 0


def _run(fd: int) -> int:
    from edge.agent import Agent
    from edge.logs import configure

    with os.fdopen(fd, "rb") as handed:
        config, loaded = decode(handed.read())
    configure(config.log_level, fmt=config.log_format)
    return run_agent(Agent(config=config, loaded=loaded, load=partial(check_in_child, config)))


def _check() -> int:
    from edge.config import EdgeConfig
    from edge.preflight import preflight

    config = EdgeConfig.model_validate(msgspec.msgpack.decode(sys.stdin.buffer.read()))
    try:
        out = encode(config, preflight(config))
    except PreflightError as exc:
        out = _encoder.encode(Refused(problems=list(exc.problems)))
    except EdgeError as exc:
        out = _encoder.encode(Refused(problems=[str(exc)]))
    sys.stdout.buffer.write(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"] and len(args) == 2 and args[1].isdigit():
        return _run(int(args[1]))
    if args == ["check"]:
        return _check()
    print("usage: python -m edge.handoff run FD | check (started by linli edge run)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
