"""A throw-away PKI made with the `openssl` command: a CA, a server and a client certificate.

Used by tests and benchmarks to run Mosquitto with TLS and mutual TLS on loopback.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simulators.errors import ServiceError
from simulators.services.process import run


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise ServiceError("openssl not found; run scripts/setup", service="openssl")
    done = run([exe, *args], timeout=60)
    if done.returncode != 0:
        raise ServiceError(f"openssl {args[0]} failed: {done.stderr.strip()}", service="openssl")


def _key_and_csr(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    key, csr = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={cn}",
    )
    return key, csr


def _sign(directory: Path, name: str, csr: Path, extensions: str) -> Path:
    ext, cert = directory / f"{name}.ext", directory / f"{name}.crt"
    ext.write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(directory / "ca.crt"),
        "-CAkey",
        str(directory / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3",
        "-sha256",
        "-out",
        str(cert),
        "-extfile",
        str(ext),
    )
    return cert


def make_test_pki(
    directory: Path,
    *,
    server_names: Sequence[str] = ("localhost",),
    server_ips: Sequence[str] = ("127.0.0.1",),
    client_cn: str = "linli-test-client",
) -> TlsFiles:
    """Create (or reuse) a CA, a server certificate for loopback and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    if all(
        p.exists()
        for p in (files.ca_cert, files.server_cert, files.server_key, files.client_cert, files.client_key)
    ):
        return files
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(directory / "ca.key"),
        "-out",
        str(files.ca_cert),
        "-days",
        "3",
        "-subj",
        "/CN=linli test CA",
    )
    sans = [f"DNS:{n}" for n in server_names] + [f"IP:{ip}" for ip in server_ips]
    _, server_csr = _key_and_csr(directory, "server", server_names[0])
    _sign(directory, "server", server_csr, f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\n")
    _, client_csr = _key_and_csr(directory, "client", client_cn)
    _sign(directory, "client", client_csr, "extendedKeyUsage=clientAuth\n")
    return files
