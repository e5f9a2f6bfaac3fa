"""Pseudonymous user ids for display: a keyed hash, so ids cannot be reversed or matched without the key.

The key comes from ``$PUSHWISE_PSEUDONYM_KEY`` or, failing that, a per-install key file created on
first use with owner-only permissions. Keeping the key out of the database means a copied database
or snapshot does not carry the means to link pseudonyms across installs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.errors import ConfigError

__all__ = ["KEY_ENV", "default_key_file", "load_pseudonym_key", "pseudonymise", "pseudonymise_all"]

KEY_ENV = "PUSHWISE_PSEUDONYM_KEY"
#: Hex characters kept: 48 bits, ample to tell users of one install apart on a dashboard.
DEFAULT_LENGTH = 12


def default_key_file(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/pushwise/pseudonym.key`` (``~/.config/...`` when unset)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pushwise" / "pseudonym.key"


def load_pseudonym_key(env: Mapping[str, str] | None = None, key_file: str | Path | None = None) -> bytes:
    """The pseudonymisation key: ``$PUSHWISE_PSEUDONYM_KEY``, else the key file (created if missing).

    Args:
        env: environment to read; ``os.environ`` by default.
        key_file: where the per-install key lives; :func:`default_key_file` by default.

    Raises:
        ConfigError: the key file exists but is empty, or cannot be read or created.
    """
    env = os.environ if env is None else env
    if env.get(KEY_ENV):
        return env[KEY_ENV].encode("utf-8")
    path = Path(key_file) if key_file is not None else default_key_file(env)
    try:
        if not path.exists():
            _create_key_file(path)
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read or create the pseudonym key file {path}: {exc.strerror}") from exc
    if not key:
        raise ConfigError(f"the pseudonym key file {path} is empty; delete it to have a new key made")
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first; use theirs
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32) + "\n")


def pseudonymise(user_id: str, key: bytes, length: int = DEFAULT_LENGTH) -> str:
    """First ``length`` hex characters of HMAC-SHA256(key, user_id)."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


def pseudonymise_all(user_ids: Iterable[str | None], key: bytes, length: int = DEFAULT_LENGTH) -> list[str | None]:
    """:func:`pseudonymise` over many ids; missing ids stay ``None``."""
    return [None if u is None else pseudonymise(str(u), key, length) for u in user_ids]
