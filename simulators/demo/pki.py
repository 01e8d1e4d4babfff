"""The demo's CA under ``root/pki`` (made on the first run, kept): the cloud broker admits only its
certificates and confines each gateway to its own topics, as linli ships it (``linli pki``,
docs/edge-deploy.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.services import MosquittoBroker, TlsFiles


@dataclass(frozen=True, slots=True)
class DemoPki:
    """The demo CA's files, as the broker and the clients' configurations name them."""

    folder: Path

    @property
    def acl(self) -> Path:
        return self.folder / "broker.acl"

    @property
    def broker(self) -> TlsFiles:
        server = self.folder / "services"
        return TlsFiles(
            ca_cert=self.folder / "ca.crt",
            server_cert=server / "broker.crt",
            server_key=server / "broker.key",
            client_cert=server / "linli-ingest.crt",
            client_key=server / "linli-ingest.key",
        )

    def cloud_broker(self, workdir: Path, *, port: int | None = None) -> MosquittoBroker:
        """The cloud broker as linli ships it: mutual TLS with this CA only, each gateway confined to
        its own topics by the ACL (not started)."""
        return MosquittoBroker(
            workdir=workdir,
            port=port,
            tls=self.broker,
            require_client_cert=True,
            extra_config=[f"acl_file {self.acl}"],
        )

    def gateway_overrides(self, gateway_id: str) -> dict[str, Any]:
        """An edge configuration's overrides: the gateway's certificate on its cloud link."""
        return {"cloud": {"tls": self.client("gateways", gateway_id)}}

    def ingest_overrides(self) -> dict[str, Any]:
        """A cloud configuration's overrides: the ingest's certificate on its broker link, and the
        command sender's on its own."""
        return {
            "mqtt": {"tls": self.client("services", "linli-ingest")},
            "commands": {"tls": self.client("services", "linli-commands")},
        }

    def client(self, kind: str, name: str) -> dict[str, str]:
        """A ``[... .tls]`` section: the CA and `name`'s certificate and key."""
        return {
            "ca_cert": str(self.folder / "ca.crt"),
            "client_cert": str(self.folder / kind / f"{name}.crt"),
            "client_key": str(self.folder / kind / f"{name}.key"),
        }


def demo_pki(folder: Path, *, community_id: str, gateway_ids: list[str]) -> DemoPki:
    """The CA in `folder` with the broker's, the ingest's and each gateway's certificate (issued
    once; a gateway added later is issued at the next start)."""
    from cloud.pki.authority import Authority, PkiError

    try:
        ca = Authority(directory=folder)
    except PkiError:
        ca = Authority.init(folder, name="linli demo CA")
    if not (folder / "services" / "broker.crt").exists():
        ca.issue_service("broker", role="broker", hosts=("127.0.0.1",))
    if not (folder / "services" / "linli-ingest.crt").exists():
        ca.issue_service("linli-ingest", role="ingest")
    if not (folder / "services" / "linli-commands.crt").exists():
        ca.issue_service("linli-commands", role="commands")
    for gw in gateway_ids:
        if not (folder / "gateways" / f"{gw}.crt").exists():
            ca.issue_gateway(gw, community_id=community_id)
    return DemoPki(folder)
