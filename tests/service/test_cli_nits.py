"""CLI details: `--db` after the subcommand, the default backup folder beside the database, and a manual backup
while serving kept out of the daily rotation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine.backup import list_backups, write_backup
from engine.cli import build_parser, main
from engine.config import Settings
from engine.service.commands import serve_options
from engine.store import Store
from tests.api.conftest import NOW, auth


def test_db_after_the_subcommand_works_like_the_global_option(tmp_path, monkeypatch, capsys):
    parser = build_parser()
    assert parser.parse_args(["serve", "--db", "x.duckdb"]).db == "x.duckdb"
    assert parser.parse_args(["--db", "y.duckdb", "serve"]).db == "y.duckdb"
    assert parser.parse_args(["--db", "y.duckdb", "backup", "bk", "--db", "z.duckdb"]).db == "z.duckdb"
    db = tmp_path / "here.duckdb"
    Store(db).close()
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", "k")
    monkeypatch.chdir(tmp_path)
    assert main(["erase", "u1", "--db", str(db)]) == 0
    with Store(db) as store:
        assert store.count("erasure_ledger") == 1          # the command ran on --db, not the default file
    assert not (tmp_path / "data").exists()


def test_the_default_backup_folder_is_beside_the_database_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "srv" / "p.duckdb"
    settings = Settings(db_path=str(db))
    opts = serve_options(build_parser().parse_args(["serve"]), settings)
    assert Path(opts.backup_dir) == db.parent / "backups"
    assert serve_options(build_parser().parse_args(["serve", "--backup-dir", ""]), settings).backup_dir is None
    chosen = serve_options(build_parser().parse_args(["serve", "--backup-dir", "elsewhere"]), settings)
    assert Path(chosen.backup_dir) == tmp_path / "elsewhere"


def test_a_manual_backup_while_serving_does_not_prune_the_scheduled_ones(service):
    ctx, client, keys = service
    ctx.backup_keep = 2
    scheduled = [write_backup(ctx.store, ctx.backup_dir, ctx.keyring, NOW - timedelta(days=d), keep=2).path
                 for d in (2, 1)]
    made = client.post("/v1/admin/backup", headers=auth(keys["admin"]))
    assert made.status_code == 200, made.text
    assert list_backups(ctx.backup_dir) == scheduled        # the daily rotation still holds both
    manual = Path(made.json()["path"])
    assert manual.is_dir() and manual.parent != ctx.backup_dir
