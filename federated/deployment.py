"""Self-signed TLS material for a loopback SuperLink: a CA and a 127.0.0.1 server certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_certificates(folder: Path, *, days: int = 30) -> Certificates:
    """Reuse the CA/server pair under ``folder`` while valid for another day; else make new ones.

    The server certificate names 127.0.0.1 and localhost: the SuperLink only listens on loopback.
    Keys are written 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    certs = Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    now = dt.datetime.now(dt.UTC)
    if all(p.is_file() for p in (certs.ca_cert, certs.server_cert, certs.server_key)):
        current = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
        if current.not_valid_after_utc > now + dt.timedelta(days=1):
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
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1"))
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
    certs.server_key.write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    certs.server_key.chmod(0o600)
    return certs
