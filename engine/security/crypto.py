"""AES-GCM encryption at rest for device tokens and credentials, under data keys kept outside the database.

A keyring holds one or more 256-bit data keys, each with a short id; the newest encrypts, every key
still listed decrypts. Keys come from ``$PUSHWISE_DATA_KEYS`` (``id:hex,id:hex``, newest last) or, failing
that, a per-install key file (one ``id hex`` line per key, newest last, owner-only permissions) created on
first use. A ciphertext reads ``pw1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``; the column it belongs
to is bound as associated data, so a value copied into another column does not decrypt.

Lookups by token use :meth:`Keyring.token_hash`, an HMAC under a key derived from the *oldest* data key,
so hashes stay stable when newer keys are added by rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import ConfigError, PushwiseError

__all__ = ["KEYS_ENV", "CryptoError", "Keyring", "default_key_file", "is_ciphertext", "load_keyring"]

KEYS_ENV = "PUSHWISE_DATA_KEYS"
KEY_FILE_ENV = "PUSHWISE_DATA_KEY_FILE"
PREFIX = "pw1:"


class CryptoError(PushwiseError):
    """A value cannot be decrypted: unknown key id, tampering, or the wrong column."""


def is_ciphertext(value: object) -> bool:
    """True for values written by :meth:`Keyring.encrypt` (anything else is legacy plaintext)."""
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class Keyring:
    """Data keys, oldest first; the last one encrypts.

    Args:
        keys: ``(key id, 32-byte key)`` pairs, oldest first.
        source: where the keys came from (``"env"`` or the key file path), for messages.
    """

    keys: tuple[tuple[str, bytes], ...]
    source: str = "memory"

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("the data keyring is empty")
        for kid, key in self.keys:
            if len(key) != 32 or not kid.isalnum():
                raise ConfigError(f"data key {kid!r} must be 32 bytes with an alphanumeric id")

    @property
    def current_id(self) -> str:
        return self.keys[-1][0]

    def fingerprints(self) -> dict[str, str]:
        """Key id → first 16 hex of SHA-256 of the key: names a key without revealing it."""
        return {kid: hashlib.sha256(b"pushwise-fp" + key).hexdigest()[:16] for kid, key in self.keys}

    def encrypt(self, plaintext: str, column: str) -> str:
        kid, key = self.keys[-1]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), column.encode("utf-8"))
        return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, value: str, column: str) -> str:
        """Decrypt one value; legacy plaintext (no ``pw1:`` prefix) is returned unchanged.

        Raises:
            CryptoError: unknown key id, or the value was altered or belongs to another column.
        """
        if not is_ciphertext(value):
            return value
        try:
            _, kid, blob = value.split(":", 2)
            raw = base64.urlsafe_b64decode(blob.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise CryptoError(f"malformed ciphertext in {column}") from None
        if len(raw) < 28:  # 12-byte nonce + 16-byte tag at least
            raise CryptoError(f"malformed ciphertext in {column}")
        key = dict(self.keys).get(kid)
        if key is None:
            raise CryptoError(f"{column} is encrypted under data key {kid!r}, which this keyring "
                              f"({self.source}) does not hold")
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], column.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise CryptoError(f"a value in {column} failed authentication (altered, or another column's)") from None

    def decrypt_all(self, values: Iterable[str | None], column: str) -> list[str | None]:
        return [None if v is None else self.decrypt(v, column) for v in values]

    def key_id_of(self, value: str) -> str | None:
        return value.split(":", 2)[1] if is_ciphertext(value) else None

    def token_hash(self, vendor: str, token: str) -> str:
        """Keyed hash of a device token, for lookups without decrypting (hex, 64 chars)."""
        hash_key = hmac.new(self.keys[0][1], b"pushwise token hash v1", hashlib.sha256).digest()
        return hmac.new(hash_key, f"{vendor}\x00{token}".encode(), hashlib.sha256).hexdigest()

    def with_new_key(self) -> Keyring:
        """This keyring plus a fresh random key, which becomes the current one."""
        used = {kid for kid, _ in self.keys}
        kid = next(f"k{n}" for n in range(1, 10_000) if f"k{n}" not in used)
        return Keyring(self.keys + ((kid, secrets.token_bytes(32)),), self.source)


def default_key_file(env: Mapping[str, str] | None = None) -> Path:
    """``$PUSHWISE_DATA_KEY_FILE``, else ``$XDG_CONFIG_HOME/pushwise/data.keys`` (``~/.config`` when unset)."""
    env = os.environ if env is None else env
    if env.get(KEY_FILE_ENV):
        return Path(env[KEY_FILE_ENV])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pushwise" / "data.keys"


def _parse(pairs: Iterable[tuple[str, str]], where: str) -> tuple[tuple[str, bytes], ...]:
    out = []
    for kid, hexkey in pairs:
        try:
            out.append((kid.strip(), bytes.fromhex(hexkey.strip())))
        except ValueError:
            raise ConfigError(f"data key {kid.strip()!r} in {where} is not hex") from None
    return tuple(out)


def load_keyring(env: Mapping[str, str] | None = None, key_file: str | Path | None = None) -> Keyring:
    """The data keyring: ``$PUSHWISE_DATA_KEYS``, else the key file (created with one key if missing).

    Raises:
        ConfigError: a key is malformed, or the key file is empty or unreadable.
    """
    env = os.environ if env is None else env
    if env.get(KEYS_ENV):
        pairs = [p.split(":", 1) if ":" in p else ("", p) for p in env[KEYS_ENV].split(",") if p.strip()]
        return Keyring(_parse(pairs, f"${KEYS_ENV}"), "env")
    path = Path(key_file) if key_file is not None else default_key_file(env)
    try:
        if not path.exists():
            write_key_file(path, Keyring((("k1", secrets.token_bytes(32)),)), exclusive=True)
        lines = [ln.split() for ln in path.read_text(encoding="ascii").splitlines() if ln.strip()]
    except OSError as exc:
        raise ConfigError(f"cannot read or create the data key file {path}: {exc.strerror}") from exc
    if not lines or any(len(ln) != 2 for ln in lines):
        raise ConfigError(f"the data key file {path} must hold one 'id hexkey' line per key")
    return Keyring(_parse(((a, b) for a, b in lines), str(path)), str(path))


def write_key_file(path: Path, keyring: Keyring, exclusive: bool = False) -> None:
    """Write ``keyring`` to ``path`` with owner-only permissions, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{kid} {key.hex()}\n" for kid, key in keyring.keys)
    if exclusive:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process made it first; use theirs
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
        return
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(tmp, path)
