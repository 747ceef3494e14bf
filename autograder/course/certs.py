"""``python -m autograder cluster-certs DIR``: a CA and certificates for a small Dask cluster.

Writes into DIR (created 0700; keys 0600):
- ``ca.pem`` / ``ca-key.pem``: a new certificate authority (keep the key offline once done);
- ``scheduler.pem``, ``worker.pem``, ``client.pem`` and their ``*-key.pem``: one certificate per
  role, signed by that CA, valid for the host names given (``--host``, default the machine's);
- ``distributed.yaml``: Dask's own TLS settings pointing at them, with
  ``require-encryption: true`` and ``scheduler.allowed-failures: 1``. Point Dask at it with
  ``DASK_CONFIG=DIR`` (or copy it into ``~/.config/dask/``) on every machine of the cluster.

Dask's TLS is mutual: a peer without a certificate signed by this CA cannot connect.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

ROLES = ("scheduler", "worker", "client")
VALID_DAYS = 365


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ppo-autograder cluster"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _alt_names(hosts: list[str]):
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_certs(out: Path, hosts: list[str] | None = None) -> dict[str, Path]:
    """Create the CA, the three role certificates and ``distributed.yaml`` in ``out``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    hosts = hosts or sorted({socket.gethostname(), "localhost", "127.0.0.1"})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    until = now + datetime.timedelta(days=VALID_DAYS)

    ca_key = _key()
    ca = (x509.CertificateBuilder().subject_name(_name("ppo-autograder CA"))
          .issuer_name(_name("ppo-autograder CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write(out / "ca.pem", ca.public_bytes(pem), 0o644)
    _write(out / "ca-key.pem", _pem_key(ca_key), 0o600)
    files = {"ca": out / "ca.pem"}
    for role in ROLES:
        key = _key()
        cert = (x509.CertificateBuilder().subject_name(_name(f"ppo-autograder {role}"))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(until).add_extension(_alt_names(hosts), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        _write(out / f"{role}.pem", cert.public_bytes(pem), 0o644)
        _write(out / f"{role}-key.pem", _pem_key(key), 0o600)
        files[role] = out / f"{role}.pem"
    _write(out / "distributed.yaml", dask_config(out).encode(), 0o644)
    files["config"] = out / "distributed.yaml"
    return files


def dask_config(folder: Path) -> str:
    """Dask's YAML config for these files (absolute paths)."""
    d = Path(folder).resolve()
    roles = "\n".join(f"      {r}:\n        cert: {d / f'{r}.pem'}\n"
                      f"        key: {d / f'{r}-key.pem'}" for r in ROLES)
    return ("distributed:\n"
            "  scheduler:\n"
            "    allowed-failures: 1\n"
            "  comm:\n"
            "    require-encryption: true\n"
            "    tls:\n"
            f"      ca-file: {d / 'ca.pem'}\n"
            f"{roles}\n")


def cmd_cluster_certs(args) -> int:
    files = make_certs(args.out, args.host or None)
    print(f"wrote {', '.join(str(p) for p in files.values())}\n"
          f"on every machine of the cluster: export DASK_CONFIG={Path(args.out).resolve()}")
    return 0
