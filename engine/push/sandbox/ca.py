"""A throwaway certificate authority for the sandboxes, and the TLS contexts built from it.

The CA and a server certificate for ``127.0.0.1``/``localhost`` are issued with ``trustme`` and
written to a directory so that other processes (the engine, google-auth, curl) can trust
``ca.pem``. Files already there are reused, so a standalone sandbox keeps its CA across restarts.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["CaFiles", "client_context", "ensure_ca", "server_context"]


@dataclass(frozen=True)
class CaFiles:
    """Where the sandbox CA lives.

    Attributes:
        ca_file: the CA certificate (PEM) clients must trust.
        cert_file: the server certificate chain (PEM), valid for 127.0.0.1, ::1 and localhost.
        key_file: the server private key (PEM, mode 0600).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_ca(directory: Path) -> CaFiles:
    """Create (or reuse) the CA and server certificate under ``directory``.

    Args:
        directory: created if missing; receives ``ca.pem``, ``server.pem``, ``server.key``.

    Returns:
        The file locations.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = CaFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if files.ca_file.is_file() and files.cert_file.is_file() and files.key_file.is_file():
        return files
    ca = trustme.CA(organization_name="Pushwise sandbox CA")
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")
    ca.cert_pem.write_to_path(str(files.ca_file))
    leaf.private_key_pem.write_to_path(str(files.key_file))
    os.chmod(files.key_file, 0o600)
    files.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return files


def server_context(files: CaFiles, alpn: Sequence[str] = ("h2", "http/1.1")) -> ssl.SSLContext:
    """A TLS 1.2+ server context offering ``alpn`` (server preference order)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_context(files: CaFiles, alpn: Sequence[str] = ("h2",)) -> ssl.SSLContext:
    """A verifying client context that trusts only the sandbox CA (for raw h2 clients and tests)."""
    ctx = ssl.create_default_context(cafile=str(files.ca_file))
    ctx.set_alpn_protocols(list(alpn))
    return ctx
