"""Off-policy evaluation of Pushwise's own campaigns: what another copy or item policy would have got.

Every sent decision logged the probability its policy gave the choice it made (``decisions.propensity``
for the item, ``template_propensity`` for the copy), so the estimators of `engine.evaluation.ope` (the
code that judges the Open Bandit logs) apply unchanged to a campaign's own rows:

* ``choice="copy"``: the action is the template (one of the campaign's templates). Targets:
  ``uniform`` (every template alike) or ``always:<template_id>``.
* ``choice="item"``: the action is the chosen item's rank among the user's top ``k`` (epsilon-greedy
  draws a rank, then the item at that rank). Targets: ``greedy`` (always rank 0) or ``epsilon:<e>``.

The reward is the funnel's ``clicked`` or ``opened`` (`engine.analytics.funnel.send_outcomes`) over the
campaign's sent decisions, undelivered ones counting 0. Holdout and skipped decisions have no action.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from engine.analytics.filters import Filters, fetch_df
from engine.analytics.funnel import send_outcomes
from engine.errors import InputError
from engine.evaluation.ope import Estimate, estimate_policy_value, shrunk_ctr_model

__all__ = ["OwnLogEstimate", "campaign_log", "estimate_campaign_policy", "target_probabilities"]

_REWARDS = ("clicked", "opened")


def campaign_log(con: duckdb.DuckDBPyConnection, campaign_id: str, choice: str = "copy", reward: str = "clicked",
                 top_k: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """One campaign's sent decisions in the bandit-log contract, and the action names.

    Returns:
        (log, actions): log = DataFrame[decision_id, action (int), reward (0/1), propensity, group];
        ``actions[a]`` names action ``a`` (a template id, or ``rank <a>``).

    Raises:
        InputError: an unknown choice or reward, no sent decision, or decisions without the logged
            propensity this choice needs.
    """
    if choice not in ("copy", "item"):
        raise InputError(f"choice must be 'copy' or 'item', got {choice!r}")
    if reward not in _REWARDS:
        raise InputError(f"reward must be one of {', '.join(_REWARDS)}, got {reward!r}")
    decisions = fetch_df(con, """SELECT decision_id, template_id, template_propensity, position, propensity
                                 FROM decisions WHERE campaign_id = $c AND action = 'send'""", {"c": campaign_id})
    if decisions.empty:
        raise InputError(f"campaign {campaign_id!r} has no sent decisions to evaluate")
    outcomes = send_outcomes(con, Filters(campaign_id=campaign_id))[["decision_id", reward]]
    rows = decisions.merge(outcomes, on="decision_id", how="left").sort_values("decision_id", kind="stable")
    rows["reward"] = rows[reward].fillna(False).astype(float)
    if choice == "copy":
        names = sorted(rows["template_id"].dropna().unique().tolist())
        prop, action = rows["template_propensity"], rows["template_id"].map({t: i for i, t in enumerate(names)})
    else:
        names = [f"rank {i}" for i in range(top_k)]
        prop, action = rows["propensity"], rows["position"]
    usable = prop.notna() & action.notna() & (prop > 0)
    if not usable.all():
        raise InputError(f"{int((~usable).sum())} sent decisions of {campaign_id!r} lack the logged "
                         f"{'template_propensity' if choice == 'copy' else 'propensity and position'}")
    if choice == "item" and int(action.max()) >= top_k:
        raise InputError(f"a logged rank is {int(action.max())}: pass top_k above it (the policy's top_k)")
    log = pd.DataFrame({"decision_id": rows["decision_id"].to_numpy(), "action": action.astype(int).to_numpy(),
                        "reward": rows["reward"].to_numpy(), "propensity": prop.astype(float).to_numpy(),
                        "group": 0})
    return log, names


def target_probabilities(n: int, actions: list[str], choice: str, target: str) -> np.ndarray:
    """The n × K probabilities of the target policy (the same in every logged context).

    Raises:
        InputError: a target this choice does not know, with the ones it does.
    """
    k = len(actions)
    probs = np.zeros(k)
    if choice == "copy" and target == "uniform":
        probs[:] = 1 / k
    elif choice == "copy" and target.startswith("always:") and target[7:] in actions:
        probs[actions.index(target[7:])] = 1.0
    elif choice == "item" and target == "greedy":
        probs[0] = 1.0
    elif choice == "item" and target.startswith("epsilon:"):
        try:
            eps = float(target[8:])
        except ValueError:
            eps = -1.0
        if not 0 <= eps <= 1:
            raise InputError(f"epsilon must be a number in [0, 1], got {target[8:]!r}")
        probs[:] = eps / k
        probs[0] += 1 - eps
    else:
        known = (["uniform"] + [f"always:{a}" for a in actions]) if choice == "copy" else ["greedy", "epsilon:<e>"]
        raise InputError(f"unknown target {target!r} for choice {choice!r}; choose from {', '.join(known)}")
    return np.tile(probs, (n, 1))


@dataclass(frozen=True)
class OwnLogEstimate:
    """The logged policy's own mean reward and every estimator's value of the target policy."""

    campaign_id: str
    choice: str
    target: str
    n: int
    logged: float
    estimates: dict[str, Estimate]


def estimate_campaign_policy(con: duckdb.DuckDBPyConnection, campaign_id: str, target: str, rng: np.random.Generator,
                             choice: str = "copy", reward: str = "clicked", top_k: int = 10,
                             n_boot: int = 500) -> OwnLogEstimate:
    """Estimate the mean reward per send ``target`` would have had on this campaign's users."""
    log, actions = campaign_log(con, campaign_id, choice, reward, top_k)
    probs = target_probabilities(len(log), actions, choice, target)
    estimates = estimate_policy_value(log, probs, rng, reward_model=shrunk_ctr_model(), n_boot=n_boot)
    return OwnLogEstimate(campaign_id, choice, target, len(log), float(log["reward"].mean()), estimates)
