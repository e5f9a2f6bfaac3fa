"""Dispatch benchmark: sends end to end (outbox claim → HTTP/2 → receipts in DuckDB) against loopback
APNs and FCM sandboxes running in their own process, with aioapns sending the same notifications to the
same APNs sandbox side by side as the baseline.

    .venv/bin/python benchmarks/dispatch.py --sends 100000

Order of the run: the sandbox alone with bare clients (the lean APNs transport without the store, from
one and from two processes: the sandbox's ceiling), then aioapns, end to end, aioapns again (the
baseline is the mean of the two runs around ours). Every phase records wall seconds, the CPU seconds
of this process (all threads) and of the sandbox process, and the load average, because the machine
may be shared: CPU µs per send does not depend on the neighbours, rates do.

Writes reports/bench-dispatch.json with sends_per_s, aioapns_sends_per_s, ratio, peak_rss_mb and the
per-phase figures.
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


def sandbox_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(name: str, sends: int, sandbox_pid: int, run) -> dict:
    """Run ``run()`` (returns its own rate, or None to use wall time) and record rate, CPU and load."""
    load, cpu, box, t = os.getloadavg()[0], time.process_time(), sandbox_cpu(sandbox_pid), time.perf_counter()
    rate = run()
    wall = time.perf_counter() - t
    cpu, box = time.process_time() - cpu, sandbox_cpu(sandbox_pid) - box
    out = {"phase": name, "sends": sends, "seconds": round(wall, 2),
           "sends_per_s": round(rate if rate is not None else sends / wall),
           "client_cpu_s": round(cpu, 2), "client_cpu_us_per_send": round(cpu / sends * 1e6),
           "client_cpu_share": round(cpu / wall, 2),
           "sandbox_cpu_s": round(box, 2), "sandbox_cpu_us_per_send": round(box / sends * 1e6),
           "sandbox_cpu_share": round(box / wall, 2),
           "loadavg_1m_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(out), flush=True)
    return out


def sandbox_verdict(e2e: dict) -> dict:
    """Whether the sandbox limited the end-to-end phase.

    The sandboxes answer on one event-loop thread, so they can use at most one core: a CPU share near
    1.0 during the phase means the sandbox, not the dispatcher, set the rate. ``capacity`` is what one
    core answers at the CPU cost per send measured in the same phase; ``headroom`` is capacity over
    the measured rate (≤ ~1.1: the sandbox was the limit). On a 2-core machine the dispatcher and the
    sandbox each get at most one core, so this is the honest check, not the bare-client ceiling
    (which shares the same two cores with its own client processes).
    """
    us = max(e2e["sandbox_cpu_us_per_send"], 1)
    capacity = round(1e6 / us)
    return {"cpu_us_per_send": e2e["sandbox_cpu_us_per_send"], "cpu_share": e2e["sandbox_cpu_share"],
            "capacity_one_core_sends_per_s": capacity, "headroom": round(capacity / e2e["sends_per_s"], 2),
            "client_cpu_us_per_send": e2e["client_cpu_us_per_send"], "client_cpu_share": e2e["client_cpu_share"],
            "saturated": e2e["sandbox_cpu_share"] >= 0.9}


def bare_processes(config: Path, sends: int, processes: int) -> float:
    """Sends/s of ``processes`` bare lean APNs clients at once (no store): the sandbox's ceiling.

    The children start, build their messages and say "ready"; all are then told "go" together, so
    the figure is the sum of their rates over the same interval, not start-up time.
    """
    cmd = [sys.executable, __file__, "--bare-client", str(sends), "--config", str(config)]
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(processes)]
    for p in procs:
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            raise RuntimeError("bare client did not start")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return sum(float(p.communicate(timeout=600)[0]) for p in procs)


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


async def end_to_end(store: Store, settings, batch_size: int, depth: int = 2) -> tuple[float, dict]:
    """Seconds to drain the seeded outbox with the pipelined dispatcher, and the final state counts."""
    clock = SystemClock()
    channels = {"apns": LeanApnsChannel(settings.vendors.apns, clock),
                "fcm": FcmChannel(settings.vendors.fcm, clock)}
    dispatcher = Dispatcher(store, channels, clock, RetryPolicy(base_seconds=0.1, cap_seconds=1), batch_size)
    run = await dispatcher.run(depth=depth)
    for channel in channels.values():
        await channel.aclose()
    states = dict(store.execute("SELECT state, count(*) FROM sends GROUP BY 1").fetchall())
    return run.seconds, states


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=100_000)
    parser.add_argument("--fcm-share", type=float, default=0.1, help="share of the sends that go to FCM")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--depth", type=int, default=2, help="batches on the wire at once")
    parser.add_argument("--aioapns-sends", type=int, default=20_000)
    parser.add_argument("--aioapns-concurrency", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bare-client", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.bare_client:   # a child of bare_processes
        settings = load_settings(args.config, env={})
        msgs = messages(args.bare_client, "apns", rng)
        print("ready", flush=True)
        sys.stdin.readline()
        print(round(asyncio.run(bare_apns(settings, msgs))))
        return 0
    phases: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc, config = start_sandbox_process(workdir / "sandbox")
        try:
            settings = load_settings(config, env={})
            n_aio = args.aioapns_sends
            probe = messages(n_aio, "apns", rng)
            phases.append(measured("lean_apns_alone_1_process", n_aio, proc.pid,
                                   lambda: asyncio.run(bare_apns(settings, probe))))
            phases.append(measured("lean_apns_alone_2_processes", 2 * n_aio, proc.pid,
                                   lambda: bare_processes(config, n_aio, 2)))

            def aioapns_phase(name: str) -> dict:
                msgs = messages(n_aio, "apns", rng)
                return measured(name, n_aio - 200, proc.pid,
                                lambda: asyncio.run(aioapns_rate(settings, msgs, args.aioapns_concurrency)))

            phases.append(aioapns_phase("aioapns_before"))
            n_fcm = int(args.sends * args.fcm_share)
            msgs = messages(args.sends - n_fcm, "apns", rng) + messages(n_fcm, "fcm", rng)
            rng.shuffle(msgs)
            with Store(workdir / "bench.duckdb") as store:
                seed(store, msgs)
                del msgs
                result: dict = {}

                def e2e() -> float:
                    seconds, result["states"] = asyncio.run(end_to_end(store, settings, args.batch_size, args.depth))
                    return args.sends / seconds

                phases.append(measured("end_to_end", args.sends, proc.pid, e2e))
            phases.append(aioapns_phase("aioapns_after"))
        finally:
            proc.terminate()
            proc.wait(10)
    by = {p["phase"]: p for p in phases}
    e2e_rate = by["end_to_end"]["sends_per_s"]
    aio = (by["aioapns_before"]["sends_per_s"] + by["aioapns_after"]["sends_per_s"]) / 2
    aio_cpu = (by["aioapns_before"]["client_cpu_us_per_send"] + by["aioapns_after"]["client_cpu_us_per_send"]) / 2
    report = {
        "sends": args.sends, "fcm_share": args.fcm_share, "batch_size": args.batch_size, "depth": args.depth,
        "seconds": by["end_to_end"]["seconds"], "sends_per_s": e2e_rate, "states": result["states"],
        "aioapns_sends_per_s": round(aio),
        "aioapns_before_after": [by["aioapns_before"]["sends_per_s"], by["aioapns_after"]["sends_per_s"]],
        "ratio": round(e2e_rate / aio, 2),
        "client_cpu_us_per_send": {"end_to_end": by["end_to_end"]["client_cpu_us_per_send"],
                                   "aioapns": round(aio_cpu),
                                   "lean_apns_alone": by["lean_apns_alone_1_process"]["client_cpu_us_per_send"]},
        "cpu_ratio_aioapns_over_end_to_end": round(aio_cpu / by["end_to_end"]["client_cpu_us_per_send"], 2),
        "sandbox_ceiling_sends_per_s": by["lean_apns_alone_2_processes"]["sends_per_s"],
        "sandbox": sandbox_verdict(by["end_to_end"]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        "phases": phases,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "phases"}, indent=2))
    out = REPO / "reports" / "bench-dispatch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
