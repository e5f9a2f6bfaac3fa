"""Password login for the Streamlit dashboard, checked against a scrypt hash kept outside the code.

Set ``PUSHWISE_DASHBOARD_PASSWORD_HASH`` to the output of ``pushwise keys dashboard-password`` (which
reads the password from stdin). Without it the dashboard says, in its sidebar, that login is off, and
answers only visitors on this machine (Streamlit listens on every interface by default).

Guessing is throttled: after ``PUSHWISE_DASHBOARD_MAX_FAILURES`` (5) wrong passwords from one client, that
client is locked out for 30 s, doubling with each further failure up to 15 min; every client together gets
four times that allowance before all are locked (Streamlit's client address can be spoofed behind proxies,
so a per-client limit alone would not bound guessing). A login lasts ``PUSHWISE_DASHBOARD_SESSION_MINUTES``
(480) and must then be repeated. Counters live in the dashboard process (``st.cache_resource``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HASH_ENV", "MAX_FAILURES_ENV", "SESSION_MINUTES_ENV", "LoginThrottle", "hash_password",
           "require_login", "verify_password"]

HASH_ENV = "PUSHWISE_DASHBOARD_PASSWORD_HASH"
MAX_FAILURES_ENV = "PUSHWISE_DASHBOARD_MAX_FAILURES"
SESSION_MINUTES_ENV = "PUSHWISE_DASHBOARD_SESSION_MINUTES"
EVERYONE = "*"   # the bucket every failure also counts against
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


class LoginThrottle:
    """Failed logins per client and in total; a lockout that doubles with each failure past the limit.

    Args:
        max_failures: wrong passwords one client may give before it is locked out; all clients together
            get four times as many before everyone is.
        base_seconds: the first lockout; each further failure doubles it, up to ``max_seconds``.
        clock: seconds, monotonic (injected by tests).
    """

    def __init__(self, max_failures: int = 5, base_seconds: float = 30.0, max_seconds: float = 900.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000) -> None:
        self.max_failures, self.base_seconds, self.max_seconds = max_failures, base_seconds, max_seconds
        self._clock, self._max_clients = clock, max_clients
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()   # key → (failures, locked until)
        self._lock = threading.Lock()

    def _limit(self, key: str) -> int:
        return self.max_failures * (4 if key == EVERYONE else 1)

    def locked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0.0: now)."""
        now = self._clock()
        with self._lock:
            return max([0.0] + [self._state.get(k, (0, 0.0))[1] - now for k in (client, EVERYONE)])

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            for key in (client, EVERYONE):
                failures = self._state.pop(key, (0, 0.0))[0] + 1
                over = failures - self._limit(key) + 1   # the limit-th failure starts the first lockout
                until = now + min(self.max_seconds, self.base_seconds * 2 ** (over - 1)) if over > 0 else 0.0
                self._state[key] = (failures, until)
            while len(self._state) > self._max_clients:
                self._state.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures (the shared count stays: it bounds guessing from everywhere)."""
        with self._lock:
            self._state.pop(client, None)


def _throttle(st: Any, max_failures: int) -> LoginThrottle:
    @st.cache_resource(show_spinner=False)
    def pushwise_login_throttle(max_failures: int) -> LoginThrottle:
        return LoginThrottle(max_failures)

    return pushwise_login_throttle(max_failures)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


def require_login(st: Any, env: Mapping[str, str] | None = None, throttle: LoginThrottle | None = None,
                  now: Callable[[], float] = time.time) -> bool:
    """Gate a Streamlit page: True when the visitor may see it (logged in, or login not configured).

    Args:
        st: the ``streamlit`` module.
        env: where the hash and limits are read (``os.environ`` by default).
        throttle: failure counters; by default one per dashboard process, shared by its sessions.
        now: wall clock in seconds, for the session expiry.
    """
    env = os.environ if env is None else env
    stored = env.get(HASH_ENV, "")
    address = st.context.ip_address     # None from localhost, so from a reverse proxy on the same host too
    if not stored:
        if isinstance(address, str) and address and not _loopback(address):
            # Streamlit listens on every interface by default: without a password, stay on this machine
            st.error(f"This dashboard shows personal data and login is not configured, so it answers only on "
                     f"this machine. Set {HASH_ENV} (see `pushwise keys dashboard-password`).")
            return False
        st.sidebar.caption(f"🔓 Login is not configured: anyone who reaches this page on this machine sees it. "
                           f"Set {HASH_ENV} (see `pushwise keys dashboard-password`).")
        return True
    minutes = _positive(env, SESSION_MINUTES_ENV, 480.0)
    logged_at = st.session_state.get("pushwise_logged_in_at")
    if logged_at is not None and now() - logged_at < minutes * 60:
        return True
    if logged_at is not None:
        del st.session_state["pushwise_logged_in_at"]
        st.warning(f"Your session expired after {minutes:g} minutes; log in again.")
    throttle = throttle or _throttle(st, int(_positive(env, MAX_FAILURES_ENV, 5)))
    client = address if isinstance(address, str) and address else "local"
    with st.form("pushwise_login"):
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    wait = throttle.locked_for(client)
    if submitted and wait > 0:
        st.error(f"Too many failed logins; try again in {wait:.0f} s.")
    elif submitted and verify_password(password, stored):
        throttle.succeeded(client)
        st.session_state["pushwise_logged_in_at"] = now()
        st.rerun()
    elif submitted:
        throttle.failed(client)
        st.error("Wrong password.")
    st.info("This dashboard shows personal data; log in to continue.")
    return False
