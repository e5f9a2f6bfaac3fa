"""Password login for the Streamlit dashboard, checked against a scrypt hash kept outside the code.

Set ``PUSHWISE_DASHBOARD_PASSWORD_HASH`` to the output of ``pushwise keys dashboard-password`` (which
reads the password from stdin). Without it the dashboard says, in its sidebar, that login is off.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from typing import Any

__all__ = ["HASH_ENV", "hash_password", "require_login", "verify_password"]

HASH_ENV = "PUSHWISE_DASHBOARD_PASSWORD_HASH"
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt hex>$<hash hex>`` of ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a wrong password or a malformed hash."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def require_login(st: Any, env: Mapping[str, str] | None = None) -> bool:
    """Gate a Streamlit page: True when the visitor may see it (logged in, or login not configured)."""
    env = os.environ if env is None else env
    stored = env.get(HASH_ENV, "")
    if not stored:
        st.sidebar.caption(f"🔓 Login is not configured: anyone who reaches this page sees it. "
                           f"Set {HASH_ENV} (see `pushwise keys dashboard-password`).")
        return True
    if st.session_state.get("pushwise_logged_in"):
        return True
    with st.form("pushwise_login"):
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted and verify_password(password, stored):
        st.session_state["pushwise_logged_in"] = True
        st.rerun()
    if submitted:
        st.error("Wrong password.")
    st.info("This dashboard shows personal data; log in to continue.")
    return False
