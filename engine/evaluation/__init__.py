"""Offline evaluation: every model beside its baselines on the shipped data, and off-policy estimators."""

from engine.evaluation.ope import ESTIMATORS, Estimate, check_log, estimate_policy_value, shrunk_ctr_model

__all__ = ["ESTIMATORS", "Estimate", "check_log", "estimate_policy_value", "shrunk_ctr_model"]
