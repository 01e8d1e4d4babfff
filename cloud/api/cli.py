"""``linli users add|passwd|disable|enable|list`` and ``linli apikeys create|list|revoke``: the
API's staff accounts and integrators' keys. Passwords are read from the terminal (or, with
``--password-stdin``, one line of standard input): never from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud.errors import CloudError


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, required=True, help="the cloud configuration (database, people file)"
    )


def register_users(subparsers: argparse._SubParsersAction[Any]) -> None:
    users = subparsers.add_parser("users", help="staff accounts of the API and the console")
    commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    for name, helptext in (
        ("add", "give a staff member of the people file a password"),
        ("passwd", "change a staff member's password (their refresh tokens stop working)"),
    ):
        cmd = commands.add_parser(name, help=helptext)
        _config(cmd)
        cmd.add_argument("staff_id")
        cmd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        cmd.set_defaults(handler=_user_password, users_action=name)
    for name, helptext in (
        ("disable", "refuse an account (within [api] auth_cache_s, 5 s)"),
        ("enable", "allow it again"),
    ):
        cmd = commands.add_parser(name, help=helptext)
        _config(cmd)
        cmd.add_argument("staff_id")
        cmd.set_defaults(handler=_user_disable, disabled=name == "disable")
    listing = commands.add_parser("list", help="the accounts")
    _config(listing)
    listing.set_defaults(handler=_user_list)


def register_apikeys(subparsers: argparse._SubParsersAction[Any]) -> None:
    keys = subparsers.add_parser("apikeys", help="integrators' API keys (read-only history and devices)")
    commands = keys.add_subparsers(dest="apikeys_command", required=True, metavar="COMMAND")
    create = commands.add_parser("create", help="create a key; it is printed once")
    _config(create)
    create.add_argument("--name", required=True, help="who the key is for")
    create.add_argument(
        "--communities", required=True, help="comma-separated community ids, or * for all of them"
    )
    create.add_argument("--expires-days", type=float, help="the key stops working after this many days")
    create.set_defaults(handler=_key_create)
    listing = commands.add_parser("list", help="the keys (never their secrets)")
    _config(listing)
    listing.set_defaults(handler=_key_list)
    revoke = commands.add_parser("revoke", help="stop a key (within [api] auth_cache_s, 5 s)")
    _config(revoke)
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_key_revoke)


def _fail(exc: Exception) -> int:
    print(f"linli: {exc}", file=sys.stderr)
    return 2


def _connect(args: argparse.Namespace) -> Any:
    import psycopg

    from cloud.config import load_settings

    settings = load_settings(args.config)
    try:
        return settings, psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CloudError(f"cannot reach the database: {exc}") from exc


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CloudError("the passwords differ")
    return first


def _user_password(args: argparse.Namespace) -> int:
    from cloud.api.accounts import add_user, set_password
    from cloud.incidents.main import load_context

    try:
        settings, conn = _connect(args)
        with conn:
            password = _read_password(args)
            if args.users_action == "add":
                add_user(conn, load_context(settings).people, args.staff_id, password)
            else:
                set_password(conn, args.staff_id, password)
    except CloudError as exc:
        return _fail(exc)
    print(f"{args.staff_id}: password {'set' if args.users_action == 'add' else 'changed'}")
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    from cloud.api.accounts import set_disabled

    try:
        _, conn = _connect(args)
        with conn:
            set_disabled(conn, args.staff_id, args.disabled)
    except CloudError as exc:
        return _fail(exc)
    print(f"{args.staff_id}: {'disabled' if args.disabled else 'enabled'}")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    from cloud.api.accounts import list_users

    try:
        _, conn = _connect(args)
        with conn:
            rows = list_users(conn)
    except CloudError as exc:
        return _fail(exc)
    for r in rows:
        state = "disabled" if r.disabled else "active"
        changed = f"{r.password_changed_at:%Y-%m-%d}"
        print(f"{r.staff_id}\t{state}\tcreated {r.created_at:%Y-%m-%d}\tpassword {changed}")
    return 0


def _key_create(args: argparse.Namespace) -> int:
    from cloud.api.accounts import create_key, expiry

    communities = [c.strip() for c in args.communities.split(",") if c.strip()]
    try:
        _, conn = _connect(args)
        with conn:
            text = create_key(
                conn,
                name=args.name,
                communities=communities,
                expires_at=expiry(datetime.now(UTC), args.expires_days),
            )
    except CloudError as exc:
        return _fail(exc)
    print(text)
    print("# shown once: keep it now (send it as X-API-Key or Authorization: Bearer)", file=sys.stderr)
    return 0


def _key_list(args: argparse.Namespace) -> int:
    from cloud.api.accounts import list_keys

    try:
        _, conn = _connect(args)
        with conn:
            rows = list_keys(conn)
    except CloudError as exc:
        return _fail(exc)
    for r in rows:
        if r.revoked_at is not None:
            state = "revoked"
        else:
            state = f"expires {r.expires_at:%Y-%m-%d}" if r.expires_at is not None else "active"
        used = f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never"
        print(f"{r.key_id}\t{r.name}\t{','.join(r.communities)}\t{state}\tlast used {used}")
    return 0


def _key_revoke(args: argparse.Namespace) -> int:
    from cloud.api.accounts import revoke_key

    try:
        _, conn = _connect(args)
        with conn:
            revoke_key(conn, args.key_id)
    except CloudError as exc:
        return _fail(exc)
    print(f"{args.key_id}: revoked")
    return 0


def serve(settings: Any) -> int:
    """Serve the API with uvicorn on ``[api] http.address`` until SIGTERM or Ctrl-C."""
    import contextlib
    import logging
    import os
    import signal
    import socket

    import uvicorn

    from cloud.api.app import create_app
    from cloud.api.balance import Rebalance, Shares

    host, port = settings.api.http.host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # One listening socket per process on the same port (SO_REUSEPORT): the kernel spreads new
    # connections over them. A socket shared by forked processes is not spread: whichever process
    # wakes first accepts every connection waiting (asyncio accepts a whole backlog per wake), so
    # 32 keep-alive clients connecting at once all landed on one of two processes.
    several = settings.api.workers > 1
    sock = socket.create_server((host, port), family=family, reuse_port=several)
    bound = sock.getsockname()
    logging.getLogger("linli.cloud.api").info("api listening on http://%s:%d", host, bound[1])
    server_class = _server_class()
    # the kernel places connections by a hash: the processes even them out (cloud.api.balance)
    shares = Shares(processes=settings.api.workers) if several else None

    def run_one(sock: socket.socket, process: int) -> None:
        app: Any = create_app(settings)
        rebalance = None
        if shares is not None:
            app = rebalance = Rebalance(app, shares=shares, process=process)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = server_class(config)
        if rebalance is not None:
            rebalance.watch(server.server_state.connections)
        server.run(sockets=[sock])

    # ``[api] workers`` processes, forked before any of them opens its pool or starts a thread,
    # each with its own socket on the bound port; the first process stops the others (SIGTERM,
    # then waits) when it ends
    children: list[int] = []
    for process in range(1, settings.api.workers):
        own = socket.create_server(bound[:2], family=family, reuse_port=True)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit status is its own
            code = 0
            try:
                sock.close()
                run_one(own, process)
            finally:
                os._exit(code)
        own.close()
        children.append(pid)
    try:
        run_one(sock, 0)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return 0


def _server_class() -> type[Any]:
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that SIGTERM or Ctrl-C ends it with status 0 once it has shut
        down gracefully (uvicorn raises the signal again at the end: status -15 for a clean stop)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    return Server
