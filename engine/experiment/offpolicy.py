"""Off-policy evaluation of Pushwise's own campaigns: what another copy or item policy would have got.

Every sent decision logged the probability its policy gave the choice it made (``decisions.propensity``
for the item, ``template_propensity`` for the copy), so the estimators of `engine.evaluation.ope` (the
code that judges the Open Bandit logs) apply unchanged to a campaign's own rows:

* ``choice="copy"``: the action is the template (one of the campaign's templates). Targets:
  ``uniform`` (every template alike) or ``always:<template_id>``.
* ``choice="item"``: the action is the chosen item's rank among the user's top ``k`` (epsilon-greedy
  draws a rank, then the item at that rank). Targets: ``greedy`` (always rank 0) or ``epsilon:<e>``.
  A user with fewer candidates than the policy's ``top_k`` was explored over only those, so each row
  carries its own action-set size (``n_actions``), read from the logged policy and propensity; a
  target explores the same ranks the logged policy could have drawn for that user.

The reward is the funnel's ``clicked`` or ``opened`` (`engine.analytics.funnel.send_outcomes`) over the
campaign's sent decisions, undelivered ones counting 0. Holdout and skipped decisions have no action,
except for the item choice: a ``[volume]`` skip (``low_value``, ``fatigue``) follows from the item drawn,
so those decisions stay in the item log with reward 0 (the rule would skip that item under any policy);
leaving them out would keep rank 0 and drop explored low-value ranks, over-stating every target.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from engine.analytics.filters import Filters, fetch_df
from engine.analytics.funnel import send_outcomes
from engine.errors import InputError
from engine.evaluation.ope import Estimate, WeightCheck, estimate_policy_value, shrunk_ctr_model, weight_check

__all__ = ["ITEM_DEPENDENT_SKIPS", "OwnLogEstimate", "campaign_log", "estimate_campaign_policy", "target_probabilities"]

_REWARDS = ("clicked", "opened")
#: Skip reasons decided by the drawn item itself (engine.schedule.volume): kept in the item log as reward 0.
ITEM_DEPENDENT_SKIPS = ("low_value", "fatigue")
_EPSILON_GREEDY = re.compile(r"epsilon_greedy\(epsilon=([0-9.eE+-]+),top_k=(\d+)\)")


def campaign_log(con: duckdb.DuckDBPyConnection, campaign_id: str, choice: str = "copy", reward: str = "clicked",
                 top_k: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One campaign's sent decisions in the bandit-log contract, and the action names.

    Args:
        top_k: item choice only: the ranks the item policy drew from; None reads it from ``decisions.policy``
            (a value given must agree with it).

    Returns:
        (log, actions): log = DataFrame[decision_id, action (int), reward (0/1), propensity, group,
        n_actions (the actions this row's policy could draw: ``actions[:n_actions]``)];
        ``actions[a]`` names action ``a`` (a template id, or ``rank <a>``).

    Raises:
        InputError: an unknown choice or reward, no sent decision, decisions without the logged
            propensity this choice needs, or item decisions whose policy cannot support an estimate.
    """
    if choice not in ("copy", "item"):
        raise InputError(f"choice must be 'copy' or 'item', got {choice!r}")
    if reward not in _REWARDS:
        raise InputError(f"reward must be one of {', '.join(_REWARDS)}, got {reward!r}")
    decisions = fetch_df(con, """SELECT decision_id, template_id, template_propensity, position, propensity, policy
                                 FROM decisions WHERE campaign_id = $c AND (action = 'send' OR $item
                                       AND action = 'skip' AND list_contains($item_skips, skip_reason))""",
                         {"c": campaign_id, "item": choice == "item", "item_skips": list(ITEM_DEPENDENT_SKIPS)})
    if decisions.empty:
        raise InputError(f"campaign {campaign_id!r} has no sent decisions to evaluate")
    outcomes = send_outcomes(con, Filters(campaign_id=campaign_id))[["decision_id", reward]]
    rows = decisions.merge(outcomes, on="decision_id", how="left").sort_values("decision_id", kind="stable")
    rows["reward"] = rows[reward].fillna(False).astype(float)
    if choice == "copy":
        names = _campaign_templates(con, campaign_id, rows["template_id"])
        prop, action = rows["template_propensity"], rows["template_id"].map({t: i for i, t in enumerate(names)})
    else:
        prop, action = rows["propensity"], rows["position"]
    usable = prop.notna() & action.notna() & (prop > 0)
    if not usable.all():
        raise InputError(f"{int((~usable).sum())} sent decisions of {campaign_id!r} lack the logged "
                         f"{'template_propensity' if choice == 'copy' else 'propensity and position'}")
    if choice == "copy":
        sizes = np.full(len(rows), len(names))
    else:
        sizes, top_k = _item_action_sets(rows, campaign_id, top_k)
        names = [f"rank {i}" for i in range(top_k)]
    log = pd.DataFrame({"decision_id": rows["decision_id"].to_numpy(), "action": action.astype(int).to_numpy(),
                        "reward": rows["reward"].to_numpy(), "propensity": prop.astype(float).to_numpy(),
                        "group": 0, "n_actions": sizes})
    return log, names


def _campaign_templates(con: duckdb.DuckDBPyConnection, campaign_id: str, logged: pd.Series) -> list[str]:
    """The campaign's templates in its file's order (from ``campaigns.spec``), then any other logged one.

    A template the copy policy never happened to choose is still one a target can choose: leaving it out
    would make ``uniform`` mean "uniform over the templates that were logged".
    """
    spec = fetch_df(con, "SELECT CAST(spec AS VARCHAR) AS spec FROM campaigns WHERE campaign_id = $c", {"c": campaign_id})
    declared: list[str] = []
    if not spec.empty and isinstance(spec["spec"].iloc[0], str):
        declared = [str(t["id"]) for t in json.loads(spec["spec"].iloc[0]).get("templates", []) if "id" in t]
    return declared + sorted(set(logged.dropna()) - set(declared))


def _item_action_sets(rows: pd.DataFrame, campaign_id: str, top_k: int | None) -> tuple[np.ndarray, int]:
    """Each item decision's number of ranks (min(top_k, the user's candidates)), and the policy's top_k.

    Epsilon-greedy gives rank 0 the probability 1 − ε + ε/k and every other rank ε/k, so the logged
    propensity and the logged ``epsilon_greedy(epsilon=…,top_k=…)`` name give each row's k exactly.

    Raises:
        InputError: a greedy log (nothing explored), a policy whose action sets cannot be recovered, a
            ``top_k`` that disagrees with the log, or a propensity the logged policy cannot give.
    """
    policies = rows["policy"].fillna("")
    if (policies == "greedy").any():
        raise InputError(f"campaign {campaign_id!r} logged its items with a greedy policy (every propensity 1): it "
                         "never tried another rank, so no other item policy can be estimated from its decisions")
    parsed = policies.str.extract(_EPSILON_GREEDY.pattern)
    unknown = parsed[0].isna()
    if unknown.any():
        raise InputError(f"cannot tell how many ranks each user had under {policies[unknown].iloc[0]!r}; "
                         "item estimates need decisions logged by epsilon_greedy(epsilon=…,top_k=…)")
    eps, logged_k = parsed[0].astype(float).to_numpy(), parsed[1].astype(int).to_numpy()
    if top_k is not None and (logged_k != top_k).any():
        raise InputError(f"--top-k {top_k} differs from the top_k {int(logged_k[logged_k != top_k][0])} campaign "
                         f"{campaign_id!r} logged in decisions.policy")
    if (eps == 0).any():
        raise InputError(f"campaign {campaign_id!r} logged its items with epsilon 0: it never tried another rank, so "
                         "no other item policy can be estimated from its decisions")
    position = rows["position"].to_numpy(dtype=int)
    explore = rows["propensity"].to_numpy(dtype=float) - np.where(position == 0, 1 - eps, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.rint(eps / explore)
    bad = ~((k >= 1) & (k <= logged_k) & (position < k) & np.isclose(k * explore, eps, rtol=1e-6, atol=1e-9))
    if bad.any():
        raise InputError(f"{int(bad.sum())} sent decisions of {campaign_id!r} have a propensity that "
                         f"{policies[bad].iloc[0]} cannot give (e.g. {rows['propensity'][bad].iloc[0]:g} at rank "
                         f"{position[bad][0]})")
    return k.astype(int), int(logged_k.max())


def target_probabilities(n: int, actions: list[str], choice: str, target: str,
                         sizes: np.ndarray | None = None) -> np.ndarray:
    """The n × K probabilities of the target policy in each logged context.

    Args:
        sizes: each row's action-set size (the log's ``n_actions``): row i can take only
            ``actions[:sizes[i]]``; None means all K in every row.

    Raises:
        InputError: a target this choice does not know, with the ones it does.
    """
    k = len(actions)
    size = np.full(n, k) if sizes is None else np.asarray(sizes, dtype=int)
    allowed = np.arange(k)[None, :] < size[:, None]
    probs = np.zeros((n, k))
    if choice == "copy" and target == "uniform":
        probs[:] = allowed / size[:, None]
    elif choice == "copy" and target.startswith("always:") and target[7:] in actions:
        probs[:, actions.index(target[7:])] = 1.0
    elif choice == "item" and target == "greedy":
        probs[:, 0] = 1.0
    elif choice == "item" and target.startswith("epsilon:"):
        try:
            eps = float(target[8:])
        except ValueError:
            eps = -1.0
        if not 0 <= eps <= 1:
            raise InputError(f"epsilon must be a number in [0, 1], got {target[8:]!r}")
        probs[:] = allowed * eps / size[:, None]
        probs[:, 0] += 1 - eps
    else:
        known = (["uniform"] + [f"always:{a}" for a in actions]) if choice == "copy" else ["greedy", "epsilon:<e>"]
        raise InputError(f"unknown target {target!r} for choice {choice!r}; choose from {', '.join(known)}")
    return probs


@dataclass(frozen=True)
class OwnLogEstimate:
    """The logged policy's own mean reward and every estimator's value of the target policy."""

    campaign_id: str
    choice: str
    target: str
    n: int
    logged: float
    estimates: dict[str, Estimate]
    weights: WeightCheck | None = None


def estimate_campaign_policy(con: duckdb.DuckDBPyConnection, campaign_id: str, target: str, rng: np.random.Generator,
                             choice: str = "copy", reward: str = "clicked", top_k: int | None = None,
                             n_boot: int = 500) -> OwnLogEstimate:
    """Estimate the mean reward per send ``target`` would have had on this campaign's users."""
    log, actions = campaign_log(con, campaign_id, choice, reward, top_k)
    probs = target_probabilities(len(log), actions, choice, target, log["n_actions"].to_numpy())
    estimates = estimate_policy_value(log, probs, rng, reward_model=shrunk_ctr_model(), n_boot=n_boot)
    return OwnLogEstimate(campaign_id, choice, target, len(log), float(log["reward"].mean()), estimates,
                          weight_check(log, probs))
