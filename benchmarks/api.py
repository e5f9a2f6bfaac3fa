"""API benchmark: 50 concurrent loopback clients trigger sends and post events for 20 s while the
service's dispatcher delivers to the loopback APNs and FCM sandboxes, all in one `pushwise serve`.

    .venv/bin/python benchmarks/api.py [--clients 50] [--seconds 20] [--users 2000]

The baseline, run side by side on the same service just before, is the same clients calling
``GET /v1/health`` (no body validation, no store write): the ratio shows what validation, auth and
DuckDB writes cost per request. Writes reports/bench-api.json with requests_per_s, p50_ms, p99_ms,
errors and events_lost (events acknowledged by the API but absent from the database afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.security import create_key, load_keyring  # noqa: E402
from engine.service.operations import register_device, set_consent  # noqa: E402
from engine.service.runner import runtime_file  # noqa: E402
from engine.store import Store  # noqa: E402


def _prepare(db: Path, users: int) -> str:
    now = datetime.now(UTC)
    keyring = load_keyring()
    rng = random.Random(7)
    with Store(db) as store:
        for n in range(users):
            vendor = "apns" if n % 2 else "fcm"
            token = f"{rng.getrandbits(256):064x}" if vendor == "apns" else f"bench{n:06d}:APA91b" + "x" * 120
            register_device(store, keyring, user_id=f"b{n}", vendor=vendor, token=token, now=now)
            set_consent(store, user_id=f"b{n}", channel="push", message_class="marketing", granted=True, now=now)
        return create_key(store, keyring, ["send", "ingest"], now, rate_per_second=100_000.0)[0]


async def _load(url: str, key: str, clients: int, seconds: float, users: int, mode: str) -> dict:
    """``clients`` concurrent keep-alive clients, each sending one request after the other for ``seconds``.

    The client is aiohttp: httpx's HTTP/1.1 pool costs ~1.7 ms of CPU per request with 50 connections
    (DISPATCH-PERF.md: 577 requests/s at best on this machine), which would measure the client.
    """
    import aiohttp

    latencies: list[float] = []
    errors = 0
    acked = 0
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def client(cid: int, http: aiohttp.ClientSession) -> None:
        nonlocal errors, acked
        rng = random.Random(cid)
        n = 0
        while time.monotonic() < stop:
            n += 1
            t0 = time.perf_counter()
            try:
                if mode == "health":
                    async with http.get(url + "/v1/health") as r:
                        await r.read()
                elif n % 2:
                    async with http.post(url + "/v1/triggers", headers=headers, json={
                            "name": "bench", "title": "Hi {item}", "body": "b",
                            "user_ids": [f"b{rng.randrange(users)}"]}) as r:
                        await r.read()
                else:
                    batch = [{"event_id": f"c{cid}-{n}-{k}", "user_id": f"b{rng.randrange(users)}",
                              "event_type": "app_open", "ts": datetime.now(UTC).isoformat()} for k in range(10)]
                    async with http.post(url + "/v1/events", headers=headers, json={"events": batch}) as r:
                        if r.status == 200:
                            stored = (await r.json())["stored"]   # read first: `acked +=` across an await loses updates
                            acked += stored
                ok = r.status < 300
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += not ok

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        elapsed = time.monotonic() - t0
    lat = np.array(latencies)
    return {"requests": len(lat), "requests_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "errors": int(errors), "events_acked": int(acked), "seconds": round(elapsed, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--baseline-seconds", type=float, default=5.0)
    p.add_argument("--users", type=int, default=2000)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pushwise-bench-api-"))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "cfg"), "PUSHWISE_PSEUDONYM_KEY": "bench"}
    env.pop("PUSHWISE_DATA_KEYS", None)
    os.environ["XDG_CONFIG_HOME"] = env["XDG_CONFIG_HOME"]
    os.environ.pop("PUSHWISE_DATA_KEYS", None)
    db = tmp / "bench.duckdb"
    key = _prepare(db, args.users)
    server = subprocess.Popen([sys.executable, "-m", "engine.cli", "--db", str(db), "serve", "--port", "0",
                               "--sandbox", "--backup-dir", ""], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not runtime_file(db).exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"service did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.2)
        url = json.loads(runtime_file(db).read_text())["url"]
        load_before = os.getloadavg()
        baseline = asyncio.run(_load(url, key, args.clients, args.baseline_seconds, args.users, "health"))
        main_run = asyncio.run(_load(url, key, args.clients, args.seconds, args.users, "mixed"))
        load_after = os.getloadavg()
        time.sleep(3)  # let the dispatcher drain what is due
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    with Store(db) as store:
        stored = store.execute("SELECT count(*) FROM events WHERE source = 'api'").fetchall()[0][0]
        states = dict(store.execute("SELECT state, count(*) FROM sends GROUP BY state").fetchall())
    report = {
        **{k: main_run[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "errors")},
        "events_lost": int(main_run["events_acked"] - stored),
        "run": main_run, "events_stored": int(stored), "sends_by_state": states,
        "baseline_health_only": baseline,
        "ratio_requests_per_s_vs_baseline": round(main_run["requests_per_s"] / baseline["requests_per_s"], 3),
        "conditions": {"clients": args.clients, "seconds": args.seconds, "users": args.users,
                       "cpus": os.cpu_count(), "loadavg_1m_before": round(load_before[0], 2),
                       "loadavg_1m_after": round(load_after[0], 2),
                       "note": "client, service and sandboxes share the machine; other developers' jobs too"},
    }
    out = REPO / "reports" / "bench-api.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in (("baseline GET /health", baseline), ("triggers + events", main_run)):
        print(f"{name:<22}{r['requests_per_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['errors']:>8}")
    print(f"ratio vs baseline {report['ratio_requests_per_s_vs_baseline']}; events acked {main_run['events_acked']}, "
          f"stored {stored}, lost {report['events_lost']}; sends {states}; load {load_before[0]:.1f}→{load_after[0]:.1f}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
