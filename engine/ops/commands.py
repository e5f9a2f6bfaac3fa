"""``pushwise config show`` and ``pushwise doctor``."""

from __future__ import annotations

import argparse
import json

from engine.config import Settings
from engine.ops.doctor import run_checks, worst

__all__ = ["EXIT_CODES", "cmd_config_show", "cmd_doctor", "register"]

#: ``pushwise doctor`` exit code per worst status: warnings alone still exit 0.
EXIT_CODES: dict[str, int] = {"ok": 0, "warn": 0, "fail": 1}


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in d.items():
        if isinstance(value, dict):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print the effective settings (defaults, file, ``PUSHWISE_*`` overrides) with secrets as ``***``."""
    redacted = settings.redacted()
    if args.json:
        print(json.dumps(redacted, indent=2))
    else:
        for key, value in _flatten(redacted):
            print(f"{key} = {json.dumps(value)}")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Run every check; exit 1 when any fails, else 0."""
    checks = run_checks(settings, timeout=args.timeout, network=not args.offline)
    status = worst(checks)
    if args.json:
        print(json.dumps({"status": status, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"[{c.status:^4}] {c.area:<14} {c.name:<14} {c.detail}")
        print(f"doctor: {status}")
    return EXIT_CODES[status]


def register(add) -> None:
    """Add ``config show`` and ``doctor`` to the ``pushwise`` command line."""
    sp = add("config", None, "inspect the configuration")
    sub = sp.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print the effective configuration with secrets redacted",
                          description="Defaults, then the TOML file, then PUSHWISE_* environment overrides; "
                                      "every secret is printed as ***.")
    show.set_defaults(func=cmd_config_show, skip_validate=True)
    show.add_argument("--json", action="store_true", help="print machine-readable JSON")

    dr = add("doctor", cmd_doctor, "check the installation, database, models and vendors (exit 1 on failure)")
    dr.set_defaults(skip_validate=True)
    dr.add_argument("--timeout", type=float, default=5.0, help="seconds per vendor connection (default 5)")
    dr.add_argument("--offline", action="store_true", help="skip the vendor network checks")
