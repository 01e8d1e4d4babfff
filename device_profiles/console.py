"""The `linli` command line.

One root parser. Each package contributes its own subcommands through entry points, so this
module never imports `edge`, `cloud` or `simulators`:

- group ``linli.commands``: ``register(subparsers)`` adds a top-level command (``profiles``,
  ``sim``, ``edge``, ``cloud``, ``db``, ``demo``);
- group ``linli.bench``: ``register(subparsers)`` adds a ``linli bench <name>`` benchmark.

A registered parser sets ``handler`` (``Callable[[argparse.Namespace], int]``) with
``set_defaults``; the handler's return value is the exit status.

Registration is lazy: the names come from the entry points' metadata, and only the entry point
the command line names is loaded (``linli edge run`` imports ``edge.cli`` and nothing of
``cloud`` or ``simulators``; ``linli bench e2e`` loads only the ``e2e`` benchmark). The other
names stay in the parser as bare choices, so ``linli --help`` lists them (with the first line
of each command module's docstring, read without importing it) and a typo is still an "invalid
choice". A gateway installs linli without the ``cloud`` and ``sim`` extras: a command
that needs one of them ends with the ``pip install`` line that adds it, not with a traceback.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, requires
from pathlib import Path
from typing import Any

from device_profiles.errors import DeviceProfilesError

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["argparse._SubParsersAction[Any]"], None]

_DIST = "linli"
_COMMANDS = "linli.commands"
_BENCHES = "linli.bench"
#: Extras in the order a hint prefers them: the smallest that brings the missing module.
_EXTRAS = ("cloud", "sim", "dev")


class MissingExtra(DeviceProfilesError):
    """A command needs a module that an optional extra of linli installs."""

    def __init__(self, *, command: str, module: str, extra: str) -> None:
        super().__init__(
            f"`linli {command}` needs {module}, which this installation leaves out "
            f"(it comes with linli[{extra}]): pip install 'linli[{extra}]'"
        )
        self.command = command
        self.module = module
        self.extra = extra


def _entries(group: str) -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=group)}


def _positionals(argv: Sequence[str]) -> list[str]:
    # The root and `bench` parsers take no option with a value, so the first words that do not
    # start with "-" are the command and, after `bench`, the benchmark.
    return [arg for arg in argv if not arg.startswith("-")][:2]


def _summary(entry: EntryPoint) -> str | None:
    """The one-line help of a command, read from its module's docstring without importing it
    (``"``linli edge ...``: run the agent, ..."`` gives ``run the agent, ...``). The packages of
    linli sit side by side, so the module's file is found from this one's."""
    module = entry.value.partition(":")[0].strip()
    path = Path(__file__).resolve().parents[1].joinpath(*module.split(".")).with_suffix(".py")
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    if not doc:
        return None
    first = " ".join(doc.split("\n\n", 1)[0].split())
    text = first.split(": ", 1)[1] if ": " in first else first
    return text.split(". ", 1)[0].rstrip(".") or None


def _add(
    target: argparse._SubParsersAction[Any],
    entries: dict[str, EntryPoint],
    wanted: str | None,
    *,
    describe: bool = False,
) -> None:
    for name in sorted(entries):
        if name != wanted:
            summary = _summary(entries[name]) if describe else None
            if summary is None:
                target.add_parser(name)
            else:
                target.add_parser(name, help=summary)
            continue
        entry = entries[name]
        register: Registrar = entry.load()
        register(target)
        if name not in target.choices:
            raise RuntimeError(f"entry point {entry.value} did not register a command named {name!r}")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The root parser, with the subcommands of the command `argv` names registered.

    Raises `MissingExtra` when that command's module needs an extra that is not installed.
    """
    words = _positionals(argv)
    command = words[0] if words else None
    parser = argparse.ArgumentParser(
        prog="linli",
        description="linli: edge-to-cloud pipeline for community sensors. "
        "`linli COMMAND --help` describes a command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar=None)
    bench = commands.add_parser(
        "bench",
        help="run a benchmark and print its figures as JSON",
        description="Run a benchmark. `linli bench NAME --help` describes one.",
    )
    benches = bench.add_subparsers(dest="bench", required=True, metavar=None)
    wanted_bench = words[1] if command == "bench" and len(words) > 1 else None
    try:
        _add(benches, _entries(_BENCHES), wanted_bench)
        # `linli` alone or `linli --help`: each command's one-line help, read without importing it.
        _add(commands, _entries(_COMMANDS), command, describe=command is None)
    except ModuleNotFoundError as exc:
        missing = _missing(exc, f"bench {wanted_bench}" if wanted_bench else str(command))
        if missing is exc:
            raise
        raise missing from exc
    return parser


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_for(module: str) -> str | None:
    """The extra of linli whose requirements bring `module`, or None when no extra does (then
    the error is not a missing extra: a broken install or a bug, and it is raised as it is)."""
    try:
        requirements = requires(_DIST) or []
    except PackageNotFoundError:
        return None
    wanted = _normalise(module)
    found: set[str] = set()
    for requirement in requirements:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if name and extra and _normalise(name.group(1)) == wanted:
            found.add(extra.group(1))
    return next((extra for extra in _EXTRAS if extra in found), min(found, default=None))


def _missing(exc: ModuleNotFoundError, command: str) -> MissingExtra | ModuleNotFoundError:
    """`MissingExtra` when an extra of linli brings the missing module, else `exc` itself."""
    module = (exc.name or "").partition(".")[0]
    extra = _extra_for(module) if module else None
    if extra is None:
        return exc
    return MissingExtra(command=command, module=module, extra=extra)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(args_list)
    except MissingExtra as exc:
        print(f"linli: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stderr.close()
        return 0
    except ModuleNotFoundError as exc:
        # A handler imports its heavy modules when it runs: the extra may be missing only now.
        command = f"bench {args.bench}" if args.command == "bench" else args.command
        missing = _missing(exc, command)
        if missing is exc:
            raise
        print(f"linli: {missing}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
