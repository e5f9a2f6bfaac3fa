"""Vendor credentials for the sandboxes: an APNs ``.p8`` key with team/key ids, an FCM service account.

Files already in the directory are reused, so a standalone sandbox keeps working with an engine
configured against it earlier; the service account's ``token_uri`` is rewritten on every start
because the sandbox's port may change.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["ApnsCredentials", "ensure_apns_credentials", "ensure_app_credentials", "ensure_service_account"]

SANDBOX_TOPIC = "com.pushwise.demo"
SANDBOX_PROJECT = "pushwise-sandbox"


@dataclass(frozen=True)
class ApnsCredentials:
    """An APNs signing key and its ids (``key_file`` is ``AuthKey_<key_id>.p8``)."""

    team_id: str
    key_id: str
    key_file: Path
    topic: str

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.public_key()


def _write_secret(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def _pkcs8(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_apns_credentials(directory: Path, topic: str = SANDBOX_TOPIC) -> ApnsCredentials:
    """Create (or reuse) ``apns.json`` and ``AuthKey_<key_id>.p8`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = directory / "apns.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        key_file = directory / f"AuthKey_{info['key_id']}.p8"
        if key_file.is_file():
            return ApnsCredentials(info["team_id"], info["key_id"], key_file, info["topic"])
    alphabet = string.ascii_uppercase + string.digits
    team_id = "".join(secrets.choice(alphabet) for _ in range(10))
    key_id = "".join(secrets.choice(alphabet) for _ in range(10))
    key_file = directory / f"AuthKey_{key_id}.p8"
    _write_secret(key_file, _pkcs8(ec.generate_private_key(ec.SECP256R1())))
    meta.write_text(json.dumps({"team_id": team_id, "key_id": key_id, "topic": topic}, indent=2))
    return ApnsCredentials(team_id, key_id, key_file, topic)


def ensure_service_account(
    directory: Path, token_uri: str, project_id: str = SANDBOX_PROJECT
) -> tuple[Path, dict[str, Any]]:
    """Create (or reuse) ``service-account.json`` under ``directory`` with ``token_uri`` set.

    Returns:
        The file path and its parsed content (the shape Google's console downloads).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "service-account.json"
    info: dict[str, Any] | None = None
    if path.is_file():
        info = json.loads(path.read_text())
    if not info or not info.get("private_key"):
        email = f"pushwise-sandbox@{project_id}.iam.gserviceaccount.com"
        info = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=2048)).decode(),
            "client_email": email,
            "client_id": str(secrets.randbelow(10**21)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
            "universe_domain": "googleapis.com",
        }
    info["token_uri"] = token_uri
    _write_secret(path, json.dumps(info, indent=2).encode())
    return path, info


#: The credential fields each app-credential vendor's sandbox issues (ids readable, secrets random).
_APP_FIELDS: dict[str, tuple[str, ...]] = {
    "huawei": ("app_id", "client_secret"),
    "honor": ("app_id", "client_id", "client_secret"),
    "xiaomi": ("app_secret", "package_name"),
}


def ensure_app_credentials(directory: Path, vendor: str) -> dict[str, str]:
    """Create (or reuse) ``<vendor>.json`` under ``directory``: app ids and secrets for ``vendor``.

    Returns:
        ``{field: value}`` for the fields of ``[vendors.<vendor>]`` that hold credentials.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{vendor}.json"
    if path.is_file():
        info: dict[str, str] = json.loads(path.read_text())
        if all(info.get(f) for f in _APP_FIELDS[vendor]):
            return info
    info = {}
    for name in _APP_FIELDS[vendor]:
        if name == "package_name":
            info[name] = SANDBOX_TOPIC
        elif "secret" in name:
            info[name] = secrets.token_urlsafe(24)
        else:
            info[name] = str(100_000_000 + secrets.randbelow(900_000_000))
    _write_secret(path, json.dumps(info, indent=2).encode())
    return info
