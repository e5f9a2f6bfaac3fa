"""Dispatch benchmark: sends end to end (outbox claim → HTTP/2 → receipts in DuckDB) against loopback
APNs and FCM sandboxes running in their own process, with aioapns sending the same notifications to the
same APNs sandbox side by side as the baseline.

    .venv/bin/python benchmarks/dispatch.py --sends 100000

Writes reports/bench-dispatch.json with sends_per_s, aioapns_sends_per_s, ratio, peak_rss_mb and the
steps measured alone (the sandbox with a bare client; each transport without the store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from engine.clock import SystemClock  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.dispatch import Dispatcher, RetryPolicy  # noqa: E402
from engine.domain import PushMessage  # noqa: E402
from engine.push.fcm import FcmChannel  # noqa: E402
from engine.push.lean_apns import LeanApnsChannel  # noqa: E402
from engine.push.sandbox import new_apns_token, new_fcm_token  # noqa: E402
from engine.store import Store  # noqa: E402


def start_sandbox_process(workdir: Path) -> tuple[subprocess.Popen, Path]:
    """Run the sandboxes in a child process; returns it and the engine config it wrote."""
    code = ("import sys; from pathlib import Path; from engine.push.sandbox import serve_forever; "
            "serve_forever(Path(sys.argv[1]), echo=lambda s: None)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=REPO)
    config = workdir / "sandbox.toml"
    for _ in range(600):
        if config.exists() and config.stat().st_size:
            return proc, config
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sandbox process did not start")


def messages(n: int, vendor: str, rng: random.Random) -> list[PushMessage]:
    make = new_apns_token if vendor == "apns" else new_fcm_token
    return [PushMessage(send_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), vendor=vendor,
                        token=make(rng), title="Back in stock", body="The teapot you viewed is back",
                        data={"item": "i-42"}) for _ in range(n)]


async def bare_apns(settings, msgs: list[PushMessage]) -> float:
    """Sends/s of the lean APNs channel alone (no store): the sandbox plus transport ceiling."""
    channel = LeanApnsChannel(settings.vendors.apns, SystemClock())
    await channel.send(msgs[:200])
    t = time.perf_counter()
    await channel.send(msgs)
    rate = len(msgs) / (time.perf_counter() - t)
    await channel.aclose()
    return rate


async def aioapns_rate(settings, msgs: list[PushMessage], concurrency: int) -> float:
    """Sends/s of aioapns to the same APNs sandbox (its own pool, the same notifications)."""
    import ssl

    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsProductionClientProtocol

    cfg = settings.vendors.apns
    host, port = cfg.base_url.removeprefix("https://").split(":")
    APNsProductionClientProtocol.APNS_SERVER, APNsProductionClientProtocol.APNS_PORT = host, int(port)
    client = APNs(key=Path(cfg.key_file).read_text(), key_id=cfg.key_id, team_id=cfg.team_id, topic=cfg.topic,
                  ssl_context=ssl.create_default_context(cafile=cfg.ca_file), max_connections=2)
    slots = asyncio.Semaphore(concurrency)

    async def one(m: PushMessage) -> bool:
        async with slots:
            r = await client.send_notification(NotificationRequest(
                device_token=m.token, message={"item": "i-42", "aps": {"alert": {"title": m.title, "body": m.body}}},
                notification_id=m.send_id, push_type=PushType.ALERT, priority=5))
            return bool(r.is_successful)

    await asyncio.gather(*(one(m) for m in msgs[:200]))
    t = time.perf_counter()
    ok = await asyncio.gather(*(one(m) for m in msgs[200:]))
    rate = len(ok) / (time.perf_counter() - t)
    client.pool.close()
    await asyncio.sleep(0.05)
    if not all(ok):
        raise RuntimeError(f"aioapns: {len(ok) - sum(ok)} notifications refused")
    return rate


def seed(store: Store, msgs: list[PushMessage]) -> None:
    now = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    f = pd.DataFrame({"sid": [m.send_id for m in msgs], "vendor": [m.vendor for m in msgs],
                      "tok": [m.token for m in msgs], "i": range(len(msgs))}).assign(t0=now)
    con = store.con
    con.register("pw_new", f)
    con.execute("INSERT INTO users SELECT 'u' || i, 'UK', 'Europe/London', 't', NULL, NULL FROM pw_new")
    con.execute("INSERT INTO consents SELECT 'u' || i, 'push', 'marketing', true, t0, false FROM pw_new")
    con.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                "SELECT 'd' || i, 'u' || i, vendor, 'app', tok, true, t0 - INTERVAL 30 DAY FROM pw_new")
    con.execute("""INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                      title, body, data, due_at, state, next_attempt_at, updated_at)
                   SELECT sid, 'dec' || i, 'bench', 'u' || i, 'd' || i, vendor, 'marketing', 'Back in stock',
                          'The teapot you viewed is back', '{"item": "i-42"}', t0, 'pending', t0, t0 FROM pw_new""")
    con.unregister("pw_new")


async def end_to_end(store: Store, settings, batch_size: int) -> tuple[float, dict]:
    clock = SystemClock()
    channels = {"apns": LeanApnsChannel(settings.vendors.apns, clock),
                "fcm": FcmChannel(settings.vendors.fcm, clock)}
    dispatcher = Dispatcher(store, channels, clock, RetryPolicy(base_seconds=0.1, cap_seconds=1), batch_size)
    t = time.perf_counter()
    while True:
        report = await dispatcher.tick()
        if report.claimed == 0:
            nxt = dispatcher.next_due()
            if nxt is None:
                break
            await asyncio.sleep(0.01)
    seconds = time.perf_counter() - t
    for channel in channels.values():
        await channel.aclose()
    states = dict(store.execute("SELECT state, count(*) FROM sends GROUP BY 1").fetchall())
    return seconds, states


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=100_000)
    parser.add_argument("--fcm-share", type=float, default=0.1, help="share of the sends that go to FCM")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--aioapns-sends", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc, config = start_sandbox_process(workdir / "sandbox")
        try:
            settings = load_settings(config, env={})
            probe = messages(args.aioapns_sends, "apns", rng)
            alone = asyncio.run(bare_apns(settings, probe))
            baseline = asyncio.run(aioapns_rate(settings, messages(args.aioapns_sends, "apns", rng), 200))
            n_fcm = int(args.sends * args.fcm_share)
            msgs = messages(args.sends - n_fcm, "apns", rng) + messages(n_fcm, "fcm", rng)
            rng.shuffle(msgs)
            with Store(workdir / "bench.duckdb") as store:
                seed(store, msgs)
                seconds, states = asyncio.run(end_to_end(store, settings, args.batch_size))
            after = asyncio.run(aioapns_rate(settings, messages(args.aioapns_sends, "apns", rng), 200))
        finally:
            proc.terminate()
            proc.wait(10)
    rate = args.sends / seconds
    aio = (baseline + after) / 2
    report = {
        "sends": args.sends, "fcm_share": args.fcm_share, "batch_size": args.batch_size,
        "seconds": round(seconds, 2), "sends_per_s": round(rate), "states": states,
        "aioapns_sends_per_s": round(aio), "aioapns_before_after": [round(baseline), round(after)],
        "ratio": round(rate / aio, 2), "lean_apns_transport_only_sends_per_s": round(alone),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_at_end": os.getloadavg(), "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    out = REPO / "reports" / "bench-dispatch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
