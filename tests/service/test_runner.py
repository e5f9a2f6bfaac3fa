"""`pushwise serve` wiring: scheduled jobs share the event loop with the API; the runtime file is the CLI's alone."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import stat
from datetime import UTC, datetime

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine.clock import FixedClock
from engine.errors import ConfigError
from engine.service import runner
from engine.service.client import running_service
from engine.service.runner import ServeOptions, runtime_file

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def test_every_scheduled_job_runs_on_the_event_loop(service, tmp_path):
    # APScheduler's asyncio executor runs plain functions on a worker thread: the snapshot, backup and
    # retention jobs then used the store's one connection while a request did ("connection is busy")
    ctx, _, _ = service
    opts = ServeOptions(retention_days=30.0)   # the backup folder is the context's

    async def main() -> set[str]:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        runner._add_jobs(scheduler, ctx, opts, dispatcher=None, clock=FixedClock(NOW), dispatch_seconds=1.0)
        jobs = {job.id: job.func for job in scheduler.get_jobs()}
        assert all(inspect.iscoroutinefunction(f) for f in jobs.values()), jobs
        for f in jobs.values():
            await f()
        return set(jobs)

    assert asyncio.run(main()) == {"snapshot", "backup", "retention"}
    assert len(list(ctx.backup_dir.iterdir())) == 1
    assert (tmp_path / "svc.snapshot.duckdb").is_file()


def test_the_runtime_file_replaces_whatever_was_at_its_path(tmp_path):
    # a file left readable by others, or a link planted there, must not receive the admin key
    db = tmp_path / "pw.duckdb"
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("untouched")
    runtime_file(db).symlink_to(elsewhere)
    runner._write_runtime(runtime_file(db), "http://127.0.0.1:1", "pwk_a_b", None)
    assert elsewhere.read_text() == "untouched"
    assert not runtime_file(db).is_symlink()
    assert stat.S_IMODE(runtime_file(db).stat().st_mode) == 0o600
    runtime_file(db).unlink()
    runtime_file(db).write_text("old")
    runtime_file(db).chmod(0o644)
    runner._write_runtime(runtime_file(db), "http://127.0.0.1:1", "pwk_a_b", None)
    assert stat.S_IMODE(runtime_file(db).stat().st_mode) == 0o600
    assert json.loads(runtime_file(db).read_text())["admin_key"] == "pwk_a_b"


def test_the_cli_trusts_only_a_runtime_file_that_no_one_else_could_have_written(tmp_path):
    # the CLI sends vendor secrets and tokens to the URL in that file: a forged one would collect them
    db = tmp_path / "pw.duckdb"
    fd = os.open(runtime_file(db), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"url": "http://127.0.0.1:1", "admin_key": "pwk_a_b", "cafile": None}).encode())
    os.close(fd)
    running_service(db).close()
    runtime_file(db).chmod(0o666)
    with pytest.raises(ConfigError, match="writable by other users"):
        running_service(db)


@pytest.mark.network
def test_a_port_in_use_is_one_clear_error_and_no_runtime_file(tmp_path):
    # uvicorn exits the serving task; the runner used to write the runtime file (pointing the CLI, with
    # this service's admin key, at whoever holds the port) and end in a traceback
    import socket
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWISE_")}
    env.update(PUSHWISE_DATA_KEYS="k1:" + "44" * 32, PUSHWISE_PSEUDONYM_KEY="t", XDG_CONFIG_HOME=str(tmp_path))
    db = tmp_path / "pw.duckdb"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "engine.cli", "--db", str(db), "serve", "--port", str(port),
                              "--backup-dir", ""], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert f"the API could not listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not runtime_file(db).exists()
