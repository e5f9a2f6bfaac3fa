"""Subcommands of the service: serve, keys, secrets, devices, backup, restore, erase.

Commands that write go to the database file directly when no process holds it, and through the running
service's API (loopback, short-lived admin key) when ``pushwise serve`` owns it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.config import Settings
from engine.errors import InputError, StoreBusyError

__all__ = ["register", "serve_options"]


def _direct_or_service(settings: Settings, direct: Callable[[Any], Any], via_api: Callable[[Any], Any]) -> Any:
    from engine.service.client import running_service
    from engine.store import Store

    try:
        store = Store(settings.db_path)
    except StoreBusyError:
        client = running_service(settings.db_path, ca=settings.service_ca or None)
        try:
            return via_api(client)
        finally:
            client.close()
    with store:
        return direct(store)


def _out(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if getattr(args, "json", False) else text)


def serve_options(args: argparse.Namespace, settings: Settings):
    """The :class:`~engine.service.runner.ServeOptions` of ``pushwise serve``.

    Daily backups go to ``backups/`` beside the database unless ``--backup-dir`` says otherwise ('' disables).
    """
    from engine.service.runner import ServeOptions

    if args.backup_dir is None:
        backup_dir: str | None = str(Path(settings.db_path).resolve().parent / "backups")
    else:
        backup_dir = str(Path(args.backup_dir).resolve()) if args.backup_dir else None
    return ServeOptions(host=args.host, port=args.port, certfile=args.cert, keyfile=args.key,
                        allow_remote_http=args.allow_remote_http, backup_dir=backup_dir,
                        backup_keep=args.backup_keep, retention_days=args.retention_days,
                        sandbox=args.sandbox, metrics_open_on_loopback=args.metrics_open_on_loopback)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from engine.service.runner import serve

    serve(settings, serve_options(args, settings))
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from engine.clock import SystemClock
    from engine.security import create_key, load_keyring

    def direct(store):
        try:
            full, key = create_key(store, load_keyring(), args.scope, SystemClock().now(), label=args.label,
                                   rate_per_second=args.rate)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return {"key": full, "key_id": key.key_id, "scopes": list(key.scopes)}

    made = _direct_or_service(settings, direct, lambda c: c.call(
        "POST", "/v1/admin/keys", {"scopes": args.scope, "label": args.label, "rate_per_second": args.rate}))
    _out(args, made, f"key {made['key_id']} ({', '.join(made['scopes'])}); shown once, store it now:\n{made['key']}")
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine.security.apikeys import list_keys

    keys = _direct_or_service(settings, list_keys, lambda c: c.call("GET", "/v1/admin/keys"))
    lines = [f"{k['key_id']}  {','.join(k['scopes']):<14} {k['label'] or '-':<16} "
             f"{'revoked ' + k['revoked_at'][:19] if k['revoked_at'] else 'live'}  created {k['created_at'][:19]}"
             for k in keys]
    _out(args, keys, "\n".join(lines) or "no API keys")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from engine.clock import SystemClock
    from engine.security.apikeys import revoke_key

    def direct(store):
        if not revoke_key(store, args.key_id, SystemClock().now()):
            raise InputError(f"no live API key {args.key_id!r} (see `pushwise keys list`)")
        return {"key_id": args.key_id, "revoked": True}

    done = _direct_or_service(settings, direct, lambda c: c.call("DELETE", "/v1/admin/keys/" + quote(args.key_id, safe="")))
    _out(args, done, f"key {done['key_id']} revoked")
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.security.crypto import default_key_file, load_keyring, write_key_file
    from engine.service.operations import rotate_data_key

    keyring = load_keyring()
    if keyring.source != "env":
        keyring = keyring.with_new_key()
        write_key_file(default_key_file(), keyring)   # old keys stay listed: older backups still restore
    done = _direct_or_service(settings, lambda s: {"current_key": keyring.current_id,
                                                   "reencrypted": rotate_data_key(s, keyring)},
                              lambda c: c.call("POST", "/v1/admin/rotate-data-key"))
    note = "" if keyring.source != "env" else " (keys come from PUSHWISE_DATA_KEYS: append a new key there first)"
    _out(args, done, f"data key now {done['current_key']}; re-encrypted {done['reencrypted']}{note}")
    return 0


def _secret_value(args: argparse.Namespace) -> str:
    import os

    if args.file:
        try:
            raw = Path(args.file).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {args.file}: {exc.strerror}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{args.file} is not UTF-8 text (a .p8, PEM or JSON file is)") from None
    if args.value_from_env not in os.environ:
        raise InputError(f"environment variable {args.value_from_env} is not set")
    return os.environ[args.value_from_env]


def cmd_secrets_put(args: argparse.Namespace, settings: Settings) -> int:
    from engine.clock import SystemClock
    from engine.security import load_keyring
    from engine.security.vendor_secrets import put_secret

    value = _secret_value(args)
    out = _direct_or_service(
        settings,
        lambda s: {"vendor": args.vendor, "name": args.name,
                   "created": put_secret(s, load_keyring(), args.vendor, args.name, value, SystemClock().now())},
        lambda c: c.call("PUT", f"/v1/admin/secrets/{args.vendor}/{args.name}", {"value": value}))
    _out(args, out, f"secret {args.vendor}/{args.name} {'stored' if out['created'] else 'replaced'} (encrypted); "
                    f"refer to it as \"secret:{args.vendor}/{args.name}\" in [vendors.{args.vendor}]")
    return 0


def cmd_secrets_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine.security.vendor_secrets import list_secrets

    out = _direct_or_service(
        settings,
        lambda s: [{"vendor": i.vendor, "name": i.name, "key_id": i.key_id, "updated_at": i.updated_at.isoformat()}
                   for i in list_secrets(s)],
        lambda c: c.call("GET", "/v1/admin/secrets"))
    _out(args, out, "\n".join(f"secret:{i['vendor']}/{i['name']}  (data key {i['key_id']}, {i['updated_at']})"
                              for i in out) or "no stored secrets")
    return 0


def cmd_secrets_remove(args: argparse.Namespace, settings: Settings) -> int:
    from engine.security.vendor_secrets import remove_secret

    def via_api(client) -> bool:
        try:
            client.call("DELETE", f"/v1/admin/secrets/{args.vendor}/{args.name}")
        except InputError as exc:
            if "answered 404" in str(exc):
                return False
            raise
        return True

    if not _direct_or_service(settings, lambda s: remove_secret(s, args.vendor, args.name), via_api):
        raise InputError(f"no stored secret {args.vendor}/{args.name}")
    print(f"secret {args.vendor}/{args.name} removed")
    return 0


def cmd_dashboard_password(args: argparse.Namespace, settings: Settings) -> int:
    from engine.security.dashboard_login import HASH_ENV, hash_password

    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        raise InputError("the dashboard password must be at least 12 characters")
    print(f"{HASH_ENV}='{hash_password(password)}'")
    return 0


def cmd_devices_register(args: argparse.Namespace, settings: Settings) -> int:
    from engine.clock import SystemClock
    from engine.security import load_keyring
    from engine.service.operations import register_device

    token = sys.stdin.readline().strip() if args.token == "-" else args.token
    body = {"user_id": args.user, "vendor": args.vendor, "token": token, "app_id": args.app_id,
            "time_zone": args.time_zone}
    out = _direct_or_service(
        settings,
        lambda s: register_device(s, load_keyring(), user_id=args.user, vendor=args.vendor, token=token,
                                  now=SystemClock().now(), app_id=args.app_id, time_zone=args.time_zone,
                                  webpush_hosts=settings.vendors.webpush.endpoint_hosts()).__dict__,
        lambda c: c.call("POST", "/v1/devices", body))
    _out(args, out, f"device {out['device_id']} {'registered' if out['created'] else 'refreshed'}")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from engine.backup import list_backups, verify_backup, write_backup
    from engine.clock import SystemClock
    from engine.security import load_keyring

    folder = Path(args.dir).resolve()
    keyring = load_keyring()

    def via_api(client) -> dict:
        # the service writes into its own folder only; this process (same host) moves it into DIR
        made = client.call("POST", "/v1/admin/backup")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(made["path"]).name
        shutil.copytree(made["path"], target)
        verify_backup(target, keyring)
        if args.keep > 0:
            for old in list_backups(folder)[:-args.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return {"path": str(target), "tables": made["tables"]}

    out = _direct_or_service(
        settings,
        lambda s: (lambda m: {"path": str(m.path), "tables": m.row_counts})(
            write_backup(s, folder, keyring, SystemClock().now(), keep=args.keep)),
        via_api)
    _out(args, out, f"backup written to {out['path']} ({sum(out['tables'].values()):,} rows, "
                    f"{len(out['tables'])} tables, checksummed)")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from engine.backup import newest_backup, restore_backup
    from engine.security import load_keyring

    folder, keyring = Path(args.dir), load_keyring()
    if not (folder / "manifest.json").exists():
        folder = newest_backup(folder, keyring) or folder   # a backup root: the newest by signed created_at
    try:
        done = restore_backup(settings.db_path, folder, keyring, force=args.force)
    except StoreBusyError:
        raise StoreBusyError(f"{settings.db_path} is in use; stop `pushwise serve` before restoring") from None
    m = done.manifest
    _out(args, {"tables": m.row_counts, "re_erased": done.re_erased},
         f"restored {folder.name} into {settings.db_path}: every checksum verified, "
         f"{sum(m.row_counts.values()):,} rows in {len(m.row_counts)} tables; re-erased {done.re_erased} "
         f"user{'' if done.re_erased == 1 else 's'} recorded in the erasure ledger")
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from engine.analytics.pseudonym import load_pseudonym_key, pseudonymise
    from engine.clock import SystemClock
    from engine.security import audit
    from engine.service.operations import erase_user

    def direct(store):
        key, now = load_pseudonym_key(), SystemClock().now()
        counts = erase_user(store, args.user, key=key, now=now)
        audit(store, now, None, "erase", "u:" + pseudonymise(args.user, key), 0, str(sum(counts.values())))
        return {"deleted": counts}

    if not args.user:
        raise InputError("USER must not be empty")
    out = _direct_or_service(settings, direct, lambda c: c.call("POST", "/v1/admin/erase", {"user_id": args.user}))
    if not any(out["deleted"].values()):
        # kept in the ledger all the same: a backup may still hold the user, and a restore erases them again
        _out(args, out, "no data held for this user id (check for a typo); the erasure is recorded, so a "
                        "restore of an older backup erases the user again")
        return 0
    _out(args, out, "erased: " + ", ".join(f"{k}={v:,}" for k, v in out["deleted"].items())
         + "; backups taken before now still hold this user until they rotate out, and `pushwise restore` "
           "erases the user again from any of them")
    return 0


def _positive_rate(text: str) -> float:
    """A finite number above zero (the API's own rule for a key's rate), for argparse."""
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not math.isfinite(rate) or rate <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of requests per second above 0, got {text!r}")
    return rate


def _usage(args: argparse.Namespace) -> int:
    print(f"pushwise {args.command}: give an action (see `pushwise {args.command} --help`)", file=sys.stderr)
    return 2


def register(add) -> None:
    sp = add("serve", cmd_serve, "run the API and the scheduler (dispatch, backups, retention) in one process")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument("--cert", help="TLS certificate (PEM); with --key the API serves HTTPS")
    sp.add_argument("--key", help="TLS private key (PEM)")
    sp.add_argument("--allow-remote-http", action="store_true", help="plain HTTP on a non-loopback address")
    sp.add_argument("--backup-dir", default=None,
                    help="daily backups go here (default: backups/ beside the database; '' to disable)")
    sp.add_argument("--backup-keep", type=int, default=7, help="daily backups kept")
    sp.add_argument("--retention-days", type=float, default=0.0, help="purge raw events older than this (0: keep)")
    sp.add_argument("--sandbox", action="store_true", help="dispatch to loopback vendor sandboxes")
    sp.add_argument("--metrics-open-on-loopback", action="store_true",
                    help="serve /metrics without a key to loopback clients (else a 'metrics' or 'admin' key)")

    sp = add("keys", lambda a, s: _usage(a), "API keys and the data-encryption key")
    sub = sp.add_subparsers(dest="keys_command", metavar="ACTION")
    kc = sub.add_parser("create", help="create an API key (printed once)")
    kc.add_argument("--scope", action="append", required=True, choices=["send", "ingest", "admin", "metrics"])
    kc.add_argument("--label", default="")
    kc.add_argument("--rate", type=_positive_rate, default=200.0, help="requests per second allowed to this key")
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(func=cmd_keys_create)
    kl = sub.add_parser("list", help="list API keys (id, scopes, label, live or revoked; never a secret)")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=cmd_keys_list)
    kv = sub.add_parser("revoke", help="revoke an API key at once")
    kv.add_argument("key_id", metavar="KEY_ID", help="the id `keys create` and `keys list` show")
    kv.add_argument("--json", action="store_true")
    kv.set_defaults(func=cmd_keys_revoke)
    kr = sub.add_parser("rotate-data-key", help="add a new data key and re-encrypt every secret under it")
    kr.add_argument("--json", action="store_true")
    kr.set_defaults(func=cmd_keys_rotate)
    kd = sub.add_parser("dashboard-password", help="hash a dashboard password read from stdin (prints the env line)")
    kd.set_defaults(func=cmd_dashboard_password)

    sp = add("secrets", lambda a, s: _usage(a), "vendor credentials stored encrypted (refer to them as secret:V/N)")
    sub = sp.add_subparsers(dest="secrets_command", metavar="ACTION")
    sput = sub.add_parser("put", help="store or replace a vendor credential, encrypted under the data key")
    sput.add_argument("vendor", metavar="VENDOR")
    sput.add_argument("name", metavar="NAME", help="e.g. p8; config then says key_file = \"secret:apns/p8\"")
    src = sput.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="read the secret from this file (a .p8, PEM or JSON file)")
    src.add_argument("--value-from-env", metavar="VAR", help="read the secret from this environment variable")
    sput.add_argument("--json", action="store_true")
    sput.set_defaults(func=cmd_secrets_put)
    sl = sub.add_parser("list", help="list stored secrets by vendor and name (never their values)")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=cmd_secrets_list)
    srm = sub.add_parser("remove", help="delete a stored secret")
    srm.add_argument("vendor", metavar="VENDOR")
    srm.add_argument("name", metavar="NAME")
    srm.set_defaults(func=cmd_secrets_remove)

    sp = add("devices", lambda a, s: _usage(a), "device tokens")
    sub = sp.add_subparsers(dest="devices_command", metavar="ACTION")
    dr = sub.add_parser("register", help="register or refresh a device token (stored encrypted)")
    dr.add_argument("--user", required=True)
    dr.add_argument("--vendor", required=True)
    dr.add_argument("--token", required=True, help="the token, or '-' to read it from stdin (keeps it out of ps)")
    dr.add_argument("--app-id", default="default")
    dr.add_argument("--time-zone", default="UTC")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_devices_register)

    sp = add("backup", cmd_backup, "write a checksummed Parquet backup of every table (works while serving)")
    sp.add_argument("dir", metavar="DIR")
    sp.add_argument("--keep", type=int, default=0, help="keep only the newest N backups in DIR (0: all)")

    sp = add("restore", cmd_restore, "verify a backup and replace the database with it (service stopped)")
    sp.add_argument("dir", metavar="DIR", help="a backup folder, or a folder of backups (the newest is used)")
    sp.add_argument("--force", action="store_true",
                    help="replace a database of another install, or restore an unencrypted version 1 backup")

    sp = add("erase", cmd_erase, "erase a user's events, devices, decisions, sends and consent")
    sp.add_argument("user", metavar="USER")
