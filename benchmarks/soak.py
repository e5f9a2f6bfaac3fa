"""Soak: sends across every registered vendor while the sandboxes inject faults and the dispatcher process
is killed with SIGKILL and restarted at random moments; checks nothing is lost and nothing doubled.

    .venv/bin/python benchmarks/soak.py --sends 100000 --kills 10

Faults per push request: 5% 5xx, 2% 429 (Retry-After: 1), 1% connection resets; 1% of the tokens are
unregistered. Writes reports/bench-soak.json with sends, terminal (count per state), lost,
duplicates_outside_inflight, retries, seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from engine.dispatch.runner import write_vendor_config  # noqa: E402
from engine.push.registry import CHANNELS  # noqa: E402
from engine.push.sandbox import start_sandboxes  # noqa: E402
from engine.push.sandbox.server import Response  # noqa: E402
from engine.store import Store  # noqa: E402

TERMINAL = ("delivered", "invalid_token", "failed", "cancelled")
_MINT = {"apns": "engine.push.sandbox.tokens:new_apns_token", "fcm": "engine.push.sandbox.tokens:new_fcm_token",
         "huawei": "engine.push.sandbox.huawei:new_huawei_token", "honor": "engine.push.sandbox.honor:new_honor_token",
         "xiaomi": "engine.push.sandbox.xiaomi:new_xiaomi_token", "oppo": "engine.push.sandbox.oppo:new_oppo_token",
         "vivo": "engine.push.sandbox.vivo:new_vivo_token", "meizu": "engine.push.sandbox.meizu:new_meizu_token"}


def minter(boxes, vendor: str):
    """A function rng → valid token for ``vendor``'s sandbox."""
    if vendor == "webpush":
        return boxes.webpush.new_token
    module, _, name = _MINT[vendor].partition(":")
    return getattr(importlib.import_module(module), name)


def chaos(server, handler, rng: random.Random, counts: Counter, vendor: str, reset_share: float = 0.01) -> None:
    """Wrap a sandbox server's handler: 5% 5xx, 2% 429, ``reset_share`` connection resets on push requests."""
    def handle(request):
        if handler._target(request) == "send":
            x = rng.random()
            if x < 0.05:
                counts[f"{vendor}:5xx"] += 1
                return handler._error(503, "ServiceUnavailable", "send")
            if x < 0.07:
                counts[f"{vendor}:429"] += 1
                response = handler._error(429, "TooManyRequests", "send")
                return replace(response, headers=(*response.headers, ("retry-after", "1")))
            if x < 0.07 + reset_share:
                counts[f"{vendor}:reset"] += 1
                return Response(action="reset")
        return handler(request)
    server.handler = handle


def servers(boxes) -> dict:
    out = {"apns": (boxes._apns_server, boxes.apns), "fcm": (boxes._fcm_server, boxes.fcm)}
    out.update({name: (server, handler) for name, (handler, server) in boxes._extra.items()})
    return out


def seed(store: Store, rows: pd.DataFrame) -> None:
    now = datetime.now(UTC) - timedelta(seconds=1)
    f = rows.assign(t0=now, i=range(len(rows)))
    con = store.con
    con.register("pw_new", f)
    con.execute("INSERT INTO users SELECT 'u' || i, 'UK', 'Europe/London', 't', NULL, NULL FROM pw_new")
    con.execute("INSERT INTO consents SELECT 'u' || i, 'push', 'marketing', true, t0, false FROM pw_new")
    con.execute("INSERT INTO devices (device_id, user_id, vendor, app_id, token, active, registered_at) "
                "SELECT 'd' || i, 'u' || i, vendor, 'app', tok, true, t0 - INTERVAL 30 DAY FROM pw_new")
    con.execute("""INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                      title, body, data, due_at, state, next_attempt_at, updated_at)
                   SELECT sid, 'dec' || i, 'soak', 'u' || i, 'd' || i, vendor, 'marketing', 'Hi', 'There', '{}',
                          t0, 'pending', t0, t0 FROM pw_new""")
    con.unregister("pw_new")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--vendors", default=",".join(CHANNELS))
    parser.add_argument("--reset-share", type=float, default=0.01, help="share of push requests answered by a reset")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    vendors = args.vendors.split(",")
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp, start_sandboxes(Path(tmp) / "sandbox") as boxes:
        settings = boxes.vendor_settings()
        for name in list(vars(settings)):
            if name not in vendors:
                getattr(settings, name).enabled = False
        config = write_vendor_config(settings, Path(tmp) / "vendors.toml")
        mints = {v: minter(boxes, v) for v in vendors}
        picks = [vendors[i % len(vendors)] for i in range(args.sends)]
        rows = pd.DataFrame({"vendor": picks, "tok": [mints[v](rng) for v in picks],
                             "sid": [f"{i:08d}-0000-4000-8000-{rng.getrandbits(48):012x}" for i in range(args.sends)]})
        dead = rows.sample(frac=0.01, random_state=args.seed)
        for vendor, tok in zip(dead["vendor"], dead["tok"], strict=True):
            boxes.unregister(vendor, tok, datetime.now(UTC) - timedelta(days=1))
        db = Path(tmp) / "soak.duckdb"
        with Store(db) as store:
            seed(store, rows)
        for name, (server, handler) in servers(boxes).items():
            if name in vendors:
                chaos(server, handler, random.Random(f"{args.seed}-{name}"), counts, name, args.reset_share)

        def requests() -> int:
            return sum(v.get("requests", 0) for v in boxes.stats().values())

        cmd = [sys.executable, "-m", "engine.dispatch.runner", "--db", str(db), "--config", str(config),
               "--batch-size", "200", "--base-seconds", "0.2", "--cap-seconds", "2", "--max-attempts", "8"]
        in_flight: set[str] = set()
        started = time.perf_counter()
        kills = 0
        for _ in range(args.kills):
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            target = requests() + rng.randint(50, max(60, args.sends // (args.kills + 2) // 10))
            while requests() < target and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.2))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            with Store(db) as store:
                in_flight |= {r[0] for r in store.execute("SELECT send_id FROM sends WHERE state = 'in_flight'")
                              .fetchall()}
        final = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        by_token = Counter(a.token for v in vendors for a in boxes.vendor(v).accepted())
        with Store(db) as store:
            states = store.df("SELECT send_id, state, attempts FROM sends")
            transport_lost = {r[0] for r in store.execute(
                "SELECT DISTINCT send_id FROM send_attempts WHERE reason LIKE 'transport:%'").fetchall()}
            failed_reasons = dict(store.execute(
                "SELECT vendor || ': ' || coalesce(last_error, ''), count(*) FROM sends WHERE state = 'failed' "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 8").fetchall())
    token_of = dict(zip(rows["sid"], rows["tok"], strict=True))
    states["accepted"] = [by_token.get(token_of[s], 0) for s in states["send_id"]]
    delivered = states["state"] == "delivered"
    lost = int((~states["state"].isin(TERMINAL)).sum() + (delivered & (states["accepted"] == 0)).sum())
    dup = states[(states["accepted"] > 1) & ~states["send_id"].isin(in_flight)]
    # A connection reset also destroys answers to requests the vendor already processed on that
    # connection: those sends were in flight at the reset and are resent with the same idempotency key.
    unexplained = dup[~dup["send_id"].isin(transport_lost)]
    report = {
        "sends": args.sends, "vendors": vendors, "reset_share": args.reset_share, "kills": kills, "final_exit": final.returncode,
        "terminal": {str(k): int(v) for k, v in states["state"].value_counts().items()},
        "lost": lost, "duplicates_outside_inflight": len(dup),
        "duplicates_outside_inflight_by_vendor": {str(k): int(v) for k, v in
                                                 rows.set_index("sid").loc[dup["send_id"], "vendor"].value_counts().items()},
        "duplicates_outside_inflight_after_connection_loss": len(dup) - len(unexplained),
        "duplicates_unexplained": len(unexplained),
        "resent_while_in_flight_at_kill": int(((states["accepted"] > 1) & states["send_id"].isin(in_flight)).sum()),
        "in_flight_at_kills": len(in_flight),
        "retries": int(states["attempts"].sum() - len(states)), "failed_reasons": failed_reasons,
        "faults_injected": dict(counts), "unregistered_tokens": len(dead),
        "seconds": round(seconds, 1), "loadavg_at_end": os.getloadavg(), "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if final.returncode:
        print(final.stderr[-3000:], file=sys.stderr)
    (REPO / "reports").mkdir(exist_ok=True)
    (REPO / "reports" / "bench-soak.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
