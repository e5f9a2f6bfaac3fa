"""Operator tools: the effective configuration (redacted) and ``pushwise doctor``'s installation checks."""

from engine.ops.doctor import Check, run_checks

__all__ = ["Check", "run_checks"]
