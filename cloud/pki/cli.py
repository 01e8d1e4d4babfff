"""``linli pki init|issue-gateway|issue-service|acl``: the deployment's certificates and the cloud
broker's ACL (docs/edge-deploy.md walks an installer through them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    pki = subparsers.add_parser("pki", help="certificates of gateways and services, and the broker's ACL")
    commands = pki.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")

    def folder(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", type=Path, required=True, help="the CA folder (keep ca.key offline)")

    init = commands.add_parser("init", help="create the CA in --dir")
    folder(init)
    init.add_argument("--name", default="linli deployment CA", help="the CA's common name")
    init.set_defaults(handler=_init)

    gw = commands.add_parser(
        "issue-gateway", help="a gateway's client certificate (CN = its id), confined to its topics"
    )
    folder(gw)
    gw.add_argument("gateway_id", help="the gateway id (edge.toml's gateway_id)")
    gw.add_argument("--community", required=True, help="the gateway's community id")
    gw.set_defaults(handler=_gateway)

    svc = commands.add_parser(
        "issue-service", help="the broker's server certificate, or a service's client one"
    )
    folder(svc)
    svc.add_argument("name", help="the certificate's common name (the broker's user name for a client)")
    svc.add_argument("--role", choices=("broker", "ingest", "commands"), required=True)
    svc.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name or IP clients use to reach the broker (repeat)",
    )
    svc.set_defaults(handler=_service)

    acl = commands.add_parser("acl", help="print the broker's ACL for what was issued")
    folder(acl)
    acl.set_defaults(handler=_acl)


def _fail(exc: Exception) -> int:
    print(f"linli pki: {exc}", file=sys.stderr)
    return 2


def _init(args: argparse.Namespace) -> int:
    from cloud.pki.authority import Authority, PkiError

    try:
        authority = Authority.init(args.dir, name=args.name)
    except PkiError as exc:
        return _fail(exc)
    print(
        f"CA created: {authority.ca_cert} (its key {args.dir / 'ca.key'} signs everything: keep it offline)"
    )
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from cloud.pki.authority import Authority, PkiError

    try:
        issued = Authority(directory=args.dir).issue_gateway(args.gateway_id, community_id=args.community)
    except PkiError as exc:
        return _fail(exc)
    print(f"{issued.cert}\n{issued.key}\n(copy both and ca.crt to the gateway; broker.acl was written again)")
    return 0


def _service(args: argparse.Namespace) -> int:
    from cloud.pki.authority import Authority, PkiError

    try:
        issued = Authority(directory=args.dir).issue_service(
            args.name, role=args.role, hosts=tuple(args.host)
        )
    except PkiError as exc:
        return _fail(exc)
    print(f"{issued.cert}\n{issued.key}")
    return 0


def _acl(args: argparse.Namespace) -> int:
    from cloud.pki.authority import Authority, PkiError

    try:
        print(Authority(directory=args.dir).acl_text(), end="")
    except PkiError as exc:
        return _fail(exc)
    return 0
