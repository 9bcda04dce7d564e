"""Self-signed TLS material for a SuperLink: a CA and a server certificate for the configured hosts.

The file names are the ones ``infra/`` mounts (the ``flower-tls`` secret and the compose
``flower-certs`` volume): ``ca.crt``, ``server.pem``, ``server.key``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recops.config_federated import hosts_of
from recops.errors import ConfigError

CA_CERT = "ca.crt"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


@dataclass(frozen=True)
class Certificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _san_entries(hosts: Sequence[str]) -> list[object]:
    from cryptography import x509

    out: list[object] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def certificate_hosts(path: Path) -> list[str]:
    """The DNS names and IP addresses a PEM certificate is valid for (its SANs)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def ensure_certificates(folder: Path, hosts: str | Sequence[str] = "localhost,127.0.0.1", *,
                        days: int = 30) -> Certificates:
    """Reuse the CA/server pair under ``folder`` while it names exactly ``hosts`` and is valid
    for another day; else make new ones.

    ``hosts`` (``federated.certificate_hosts``: comma-separated, or a list) are the names
    SuperNodes and `flwr run` reach the SuperLink by; each becomes a subject alternative name
    (an IP address as such). Keys are written 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names = hosts_of(hosts) if isinstance(hosts, str) else [h.strip() for h in hosts]
    if not names:
        raise ConfigError("federated.certificate_hosts is empty: name the SuperLink's hosts")
    folder.mkdir(parents=True, exist_ok=True)
    certs = Certificates(folder / CA_CERT, folder / SERVER_CERT, folder / SERVER_KEY)
    now = dt.datetime.now(dt.UTC)
    if all(p.is_file() for p in (certs.ca_cert, certs.server_cert, certs.server_key)):
        current = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
        if (current.not_valid_after_utc > now + dt.timedelta(days=1)
                and sorted(certificate_hosts(certs.server_cert)) == sorted(names)):
            return certs

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recops"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("recops local CA"))
          .issuer_name(name("recops local CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(_san_entries(names))  # type: ignore[arg-type]
    cert = (x509.CertificateBuilder().subject_name(name(names[0]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    certs.ca_cert.write_bytes(ca.public_bytes(pem))
    certs.server_cert.write_bytes(cert.public_bytes(pem))
    # Created 0600, never readable by others even for a moment.
    fd = os.open(certs.server_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    certs.server_key.chmod(0o600)
    return certs
