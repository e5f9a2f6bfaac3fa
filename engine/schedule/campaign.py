"""Campaign files (TOML): parsed once, validated with exact messages, frozen into a Campaign."""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from engine.domain import MESSAGE_CLASSES
from engine.errors import CampaignError

__all__ = ["Campaign", "CopySettings", "Template", "VolumeSettings", "load_campaign", "parse_campaign",
           "TEMPLATE_SLOTS"]

#: Slots a message template may use; anything else is rejected when the campaign is loaded.
TEMPLATE_SLOTS = frozenset({"item_name", "price", "currency", "category", "campaign"})

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Template:
    template_id: str
    title: str
    body: str

    def render(self, slots: dict[str, Any]) -> tuple[str, str]:
        return self.title.format_map(slots), self.body.format_map(slots)


@dataclass(frozen=True)
class CopySettings:
    """``[copy]``: how one template is picked per user (see :mod:`engine.schedule.copy`).

    Attributes:
        policy: ``"thompson"`` (Beta-Bernoulli per template) or ``"uniform"``.
        reward: ``"click"`` or ``"open"``: the event that counts as a success of a past send.
        segment_by: ``""`` (one posterior per template) or ``"country"`` (one per template and country).
        prior_alpha/prior_beta: the Beta prior of every template's success rate.
        samples: Monte Carlo draws used to compute the logged choice probability.
    """

    policy: str = "thompson"
    reward: str = "click"
    segment_by: str = ""
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    samples: int = 2000


@dataclass(frozen=True)
class VolumeSettings:
    """``[volume]``: send only when a push is worth more than the fatigue it causes (:mod:`engine.schedule.volume`).

    Value of a push = click probability (the decision's score) × ``value_per_click``. Cost =
    ``send_cost`` + ``fatigue_cost`` × (pushes sent in the last ``lookback_days`` + ``ignored_weight`` ×
    those of them that were neither opened nor clicked). Value below ``send_cost`` → ``low_value``,
    below the whole cost → ``fatigue``.
    """

    value_per_click: float = 1.0
    send_cost: float = 0.0
    fatigue_cost: float = 0.01
    ignored_weight: float = 1.0
    lookback_days: int = 14


@dataclass(frozen=True)
class Campaign:
    """A validated campaign.

    Attributes:
        audience_source: only users ingested from this source (None: all users).
        active_within_days: only users with a purchase in this many days before ``as_of``.
        candidate_items: explicit item ids, or empty to let the recommender choose from the catalog.
        candidate_rule: ``"recommended"``: the user's own, co-bought and popular items, ranked.
        quiet_start/quiet_end: local wall-clock span with no sends (may wrap midnight).
        frequency_cap/frequency_days: at most this many pushes per user in a rolling window.
    """

    campaign_id: str
    name: str
    message_class: str
    templates: tuple[Template, ...]
    as_of: datetime | None = None
    audience_source: str | None = None
    active_within_days: int = 365
    min_purchases: int = 1
    countries: tuple[str, ...] = ()
    candidate_items: tuple[str, ...] = ()
    candidate_rule: str = "recommended"
    max_candidates: int = 50
    window_start: datetime | None = None        # default: as_of
    window_days: float = 7.0
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    send_time: str = "best"                     # "best" (model) | "fixed"
    fixed_hour: int = 10
    frequency_cap: int = 2
    frequency_days: int = 7
    holdout_share: float = 0.10
    epsilon: float = 0.1                        # exploration of the item policy
    copy: CopySettings = CopySettings()
    volume: VolumeSettings | None = None        # None: no value/fatigue check
    spec: dict[str, Any] = field(default_factory=dict, compare=False)

    def window(self, as_of: datetime) -> tuple[datetime, datetime]:
        start = self.window_start or as_of
        return start, start + timedelta(days=self.window_days)

    def in_quiet_hours(self, local: time) -> bool:
        if self.quiet_start == self.quiet_end:
            return False
        if self.quiet_start < self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end


def _slots_used(text: str, where: str) -> set[str]:
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as exc:
        raise CampaignError(f"{where}: malformed template: {exc}") from None


def _time(value: Any, where: str) -> time:
    m = _HHMM.match(str(value))
    if not m:
        raise CampaignError(f"{where} must be HH:MM (24-hour), got {value!r}")
    return time(int(m.group(1)), int(m.group(2)))


def _datetime(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise CampaignError(f"{where} must be an ISO 8601 timestamp, got {value!r}") from None
    if dt.tzinfo is None:
        raise CampaignError(f"{where} needs a time zone offset (e.g. 2011-11-01T00:00:00Z), got {value!r}")
    return dt.astimezone(UTC)


def _number(table: dict, key: str, where: str, kind: type, lo: float, hi: float, default: Any) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise CampaignError(f"{where}.{key} must be a {'whole number' if kind is int else 'number'}, got {value!r}")
    if not lo <= value <= hi:
        raise CampaignError(f"{where}.{key} must be between {lo} and {hi}, got {value!r}")
    return kind(value)


_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Slot values used to check at load time that every template renders.
_SAMPLE_SLOTS = {"item_name": "Red Mug", "price": 2.5, "currency": "£", "category": "mugs", "campaign": "c"}
#: The keys each table may hold; a typo fails with its name instead of being ignored.
SECTION_KEYS = {
    "audience": {"source", "active_within_days", "min_purchases", "countries"},
    "candidates": {"rule", "items", "max_candidates"},
    "schedule": {"window_start", "window_days", "quiet_hours", "send_time", "fixed_hour"},
    "limits": {"frequency_cap", "frequency_days", "holdout_share"},
    "policy": {"epsilon"},
}


def parse_campaign(spec: dict[str, Any]) -> Campaign:
    """Validate a campaign given as a dict (the parsed TOML) and return it frozen."""
    known = {"name", "id", "message_class", "as_of", "audience", "candidates", "templates", "schedule", "limits", "policy",
             "copy", "volume"}
    unknown = set(spec) - known
    if unknown:
        raise CampaignError(f"unknown campaign keys: {', '.join(sorted(unknown))}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CampaignError("campaign needs a non-empty name")
    cid = str(spec.get("id") or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    if not _ID.fullmatch(cid):
        raise CampaignError(f"id must be 1-64 characters of a-z, 0-9, '.', '_' or '-' starting with a letter or "
                            f"digit, got {cid!r}")
    mclass = spec.get("message_class", "marketing")
    if mclass not in MESSAGE_CLASSES:
        raise CampaignError(f"message_class must be one of {sorted(MESSAGE_CLASSES)}, got {mclass!r}")

    raw_templates = spec.get("templates")
    if not isinstance(raw_templates, list) or not raw_templates:
        raise CampaignError("campaign needs at least one [[templates]] entry with title and body")
    templates = []
    for i, t in enumerate(raw_templates):
        where = f"templates[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("title"), str) or not isinstance(t.get("body"), str):
            raise CampaignError(f"{where} needs a title and a body (strings)")
        bad = (_slots_used(t["title"], where) | _slots_used(t["body"], where)) - TEMPLATE_SLOTS
        if bad:
            raise CampaignError(f"{where} uses unknown slot(s) {', '.join(sorted(bad))}; "
                                f"available: {', '.join(sorted(TEMPLATE_SLOTS))}")
        for part in ("title", "body"):
            try:  # a bad format spec ({price:.2z}) must fail here, not while planning
                t[part].format_map(_SAMPLE_SLOTS)
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                raise CampaignError(f"{where}.{part} cannot be rendered: {exc}") from None
        templates.append(Template(str(t.get("id", f"t{i}")), t["title"], t["body"]))
    if len({t.template_id for t in templates}) != len(templates):
        raise CampaignError("template ids must be unique")

    aud, cand, sched, lim, pol = (_section(spec.get(n, {}), n, SECTION_KEYS[n])
                                 for n in ("audience", "candidates", "schedule", "limits", "policy"))
    items = cand.get("items", [])
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise CampaignError("candidates.items must be a list of item ids (strings)")
    rule = cand.get("rule", "recommended")
    if rule != "recommended":
        raise CampaignError(f"candidates.rule must be 'recommended' (the only rule so far), got {rule!r}")
    send_time = sched.get("send_time", "best")
    if send_time not in ("best", "fixed"):
        raise CampaignError(f"schedule.send_time must be 'best' or 'fixed', got {send_time!r}")
    quiet = sched.get("quiet_hours", ["21:00", "08:00"])
    if not isinstance(quiet, list) or len(quiet) != 2:
        raise CampaignError("schedule.quiet_hours must be [\"HH:MM\", \"HH:MM\"] (start, end; local time)")

    return Campaign(
        campaign_id=cid,
        name=name.strip(),
        message_class=mclass,
        templates=tuple(templates),
        as_of=_datetime(spec["as_of"], "as_of") if "as_of" in spec else None,
        audience_source=aud.get("source"),
        active_within_days=_number(aud, "active_within_days", "audience", int, 1, 36500, 365),
        min_purchases=_number(aud, "min_purchases", "audience", int, 0, 10**6, 1),
        countries=tuple(aud.get("countries", ())),
        candidate_items=tuple(items),
        candidate_rule=rule,
        max_candidates=_number(cand, "max_candidates", "candidates", int, 1, 1000, 50),
        window_start=_datetime(sched["window_start"], "schedule.window_start") if "window_start" in sched else None,
        window_days=_number(sched, "window_days", "schedule", float, 0.04, 60, 7.0),
        quiet_start=_time(quiet[0], "schedule.quiet_hours[0]"),
        quiet_end=_time(quiet[1], "schedule.quiet_hours[1]"),
        send_time=send_time,
        fixed_hour=_number(sched, "fixed_hour", "schedule", int, 0, 23, 10),
        frequency_cap=_number(lim, "frequency_cap", "limits", int, 1, 1000, 2),
        frequency_days=_number(lim, "frequency_days", "limits", int, 1, 365, 7),
        holdout_share=_number(lim, "holdout_share", "limits", float, 0.0, 0.9, 0.10),
        epsilon=_number(pol, "epsilon", "policy", float, 0.0, 1.0, 0.1),
        copy=_copy(spec.get("copy", {})),
        volume=_volume(spec["volume"]) if "volume" in spec else None,
        spec=spec,
    )


def _section(table: Any, where: str, known: set[str]) -> dict:
    if not isinstance(table, dict):
        raise CampaignError(f"[{where}] must be a table")
    unknown = set(table) - known
    if unknown:
        raise CampaignError(f"unknown {where} keys: {', '.join(sorted(unknown))}")
    return table


def _copy(table: Any) -> CopySettings:
    t = _section(table, "copy", {"policy", "reward", "segment_by", "prior_alpha", "prior_beta", "samples"})
    choices = {"policy": ("thompson", "uniform"), "reward": ("click", "open"), "segment_by": ("", "country")}
    d = CopySettings()
    for key, allowed in choices.items():
        if t.get(key, getattr(d, key)) not in allowed:
            raise CampaignError(f"copy.{key} must be one of {', '.join(repr(a) for a in allowed)}, got {t[key]!r}")
    return CopySettings(
        policy=t.get("policy", d.policy), reward=t.get("reward", d.reward), segment_by=t.get("segment_by", ""),
        prior_alpha=_number(t, "prior_alpha", "copy", float, 0.001, 1e6, d.prior_alpha),
        prior_beta=_number(t, "prior_beta", "copy", float, 0.001, 1e6, d.prior_beta),
        samples=_number(t, "samples", "copy", int, 100, 10**6, d.samples),
    )


def _volume(table: Any) -> VolumeSettings:
    t = _section(table, "volume", {"value_per_click", "send_cost", "fatigue_cost", "ignored_weight", "lookback_days"})
    d = VolumeSettings()
    return VolumeSettings(
        value_per_click=_number(t, "value_per_click", "volume", float, 0.0, 1e9, d.value_per_click),
        send_cost=_number(t, "send_cost", "volume", float, 0.0, 1e9, d.send_cost),
        fatigue_cost=_number(t, "fatigue_cost", "volume", float, 0.0, 1e9, d.fatigue_cost),
        ignored_weight=_number(t, "ignored_weight", "volume", float, 0.0, 1000, d.ignored_weight),
        lookback_days=_number(t, "lookback_days", "volume", int, 1, 365, d.lookback_days),
    )


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign TOML file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            spec = tomllib.load(fh)
    except FileNotFoundError:
        raise CampaignError(f"campaign file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path.name} is not valid TOML: {exc}") from None
    try:
        return parse_campaign(spec)
    except CampaignError as exc:
        raise CampaignError(f"{path.name}: {exc}") from None
