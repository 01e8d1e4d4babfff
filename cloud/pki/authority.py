"""The CA folder of a deployment and what it issues.

    <dir>/ca.crt, ca.key                  the CA (EC P-256, 10 years; the key mode 0600)
    <dir>/gateways/<id>.crt, <id>.key     a gateway's client certificate, CN = the gateway id
    <dir>/services/<name>.crt, .key       a service's certificate (the broker's server certificate,
                                          the ingest's client certificate), CN = the name
    <dir>/issued.json                     what was issued: gateways with their community, services
                                          with their role
    <dir>/broker.acl                      Mosquitto's ACL, written again after every issue

The broker runs with ``require_certificate true`` and ``use_identity_as_username true``: the
certificate's common name is the user name the ACL names. A gateway may write only its own
``linli/v1/<its community>/<its id>/up``, ``.../alarm`` and ``.../status`` (its last will too) and
read only its own ``.../down``; the ingest reads every uplink; the command sender writes every
``down`` and reads the status; nothing else is granted (not even a gateway's own ``down``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.errors import CloudError
from device_profiles.standard import TOPIC_ALARM, TOPIC_COMMANDS, TOPIC_STATUS, TOPIC_TELEMETRY, uplink_topic

ServiceRole = Literal["broker", "ingest", "commands"]
#: what a gateway publishes: its telemetry, its alarms, its status (and its last will there)
UPLINK_KINDS: Final = (TOPIC_TELEMETRY, TOPIC_ALARM, TOPIC_STATUS, TOPIC_COMMANDS)
ROLES: Final[tuple[ServiceRole, ...]] = ("broker", "ingest", "commands")

CA_DAYS: Final = 3650
#: a leaf certificate's life (the most browsers and most TLS stacks accept)
LEAF_DAYS: Final = 825
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class PkiError(CloudError):
    """A CA folder that is missing or damaged, or a name that cannot be a certificate's."""


@dataclass(frozen=True, slots=True)
class Issued:
    cert: Path
    key: Path


def _check_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise PkiError(
            f"{what} {name!r}: letters, digits, '_', '.', '-' only, at most 64, not starting with a sign"
        )
    return name


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Authority:
    """The CA in `directory` (``Authority.init`` creates it)."""

    def __init__(self, *, directory: Path, clock: dt.datetime | None = None) -> None:
        self.directory = directory
        self._now = clock
        try:
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
            self._ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        except FileNotFoundError as exc:
            raise PkiError(f"no CA in {directory}: run `linli pki init --dir {directory}` first") from exc
        except ValueError as exc:
            raise PkiError(f"the CA in {directory} cannot be read: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"the CA key in {directory} is not an EC key")
        self._ca_key: ec.EllipticCurvePrivateKey = key

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @classmethod
    def init(
        cls, directory: Path, *, name: str = "linli deployment CA", now: dt.datetime | None = None
    ) -> Authority:
        """A new CA in `directory`; refuses to replace one (every certificate it signed would die)."""
        if (directory / "ca.key").exists():
            raise PkiError(f"{directory} already holds a CA: every certificate it signed depends on it")
        at = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - dt.timedelta(minutes=5))
            .not_valid_after(at + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(directory / "ca.key", key)
        _write_cert(directory / "ca.crt", cert)
        (directory / "issued.json").write_text(json.dumps({"gateways": {}, "services": {}}, indent=1) + "\n")
        authority = cls(directory=directory, clock=now)
        authority.write_acl()
        return authority

    # --- issuing
    def _issue(
        self, path: Path, cn: str, *, usages: list[x509.ObjectIdentifier], hosts: tuple[str, ...] = ()
    ) -> Issued:
        at = self._now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - dt.timedelta(minutes=5))
            .not_valid_after(at + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        issued = Issued(cert=path.with_suffix(".crt"), key=path.with_suffix(".key"))
        _write_key(issued.key, key)
        _write_cert(issued.cert, cert)
        return issued

    def issue_gateway(self, gateway_id: str, *, community_id: str) -> Issued:
        """A gateway's client certificate (CN = `gateway_id`), and the ACL that confines it to
        its community's and its own topics."""
        _check_name("gateway id", gateway_id)
        _check_name("community id", community_id)
        issued = self._issue(
            self.directory / "gateways" / gateway_id, gateway_id, usages=[ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        record = self._issued()
        record["gateways"][gateway_id] = community_id
        self._save(record)
        self.write_acl()
        return issued

    def issue_service(self, name: str, *, role: ServiceRole, hosts: tuple[str, ...] = ()) -> Issued:
        """A service's certificate: the broker's (server, with `hosts` as its names) or a
        client's (the ingest reads every uplink; the command sender writes every ``down``)."""
        _check_name("service name", name)
        if role not in ROLES:
            raise PkiError(f"role {role!r}: one of {', '.join(ROLES)}")
        if role == "broker" and not hosts:
            raise PkiError("the broker's certificate needs the names clients reach it by (--host)")
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if role == "broker" else [ExtendedKeyUsageOID.CLIENT_AUTH]
        issued = self._issue(self.directory / "services" / name, name, usages=usages, hosts=hosts)
        record = self._issued()
        record["services"][name] = role
        self._save(record)
        self.write_acl()
        return issued

    # --- the record and the ACL
    def _issued(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.directory / "issued.json").read_text())
        except FileNotFoundError:
            return {"gateways": {}, "services": {}}
        except ValueError as exc:
            raise PkiError(f"{self.directory / 'issued.json'} is damaged: {exc}") from exc
        return {"gateways": dict(data.get("gateways", {})), "services": dict(data.get("services", {}))}

    def _save(self, record: dict[str, dict[str, str]]) -> None:
        path = self.directory / "issued.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)

    def acl_text(self) -> str:
        return acl_text(self._issued())

    def write_acl(self) -> Path:
        path = self.directory / "broker.acl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.acl_text())
        tmp.replace(path)
        return path


def acl_text(record: dict[str, dict[str, str]]) -> str:
    """Mosquitto's ACL for what was issued: nothing is granted that is not written here."""
    lines = [
        "# linli cloud broker ACL, written by `linli pki` (do not edit: issue again instead).",
        "# A user is a certificate's common name (use_identity_as_username true).",
        "",
    ]
    for name, role in sorted(record.get("services", {}).items()):
        if role == "ingest":
            lines += [f"user {name}", "topic read linli/v1/#", ""]
        elif role == "commands":
            lines += [
                f"user {name}",
                "topic write linli/v1/+/+/down",
                "topic read linli/v1/+/+/commands",
                "topic read linli/v1/+/+/status",
                "",
            ]
    for gateway, community in sorted(record.get("gateways", {}).items()):
        lines.append(f"user {gateway}")
        lines += [f"topic write {uplink_topic(community, gateway, kind)}" for kind in UPLINK_KINDS]
        lines += [f"topic read {uplink_topic(community, gateway, 'down')}", ""]
    return "\n".join(lines)
