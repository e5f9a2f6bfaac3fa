"""Request and response bodies of the HTTP API, as pydantic models: the OpenAPI contract and its validation."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.domain import EVENT_TYPES
from engine.errors import InputError
from engine.service.operations import VENDORS, check_time_zone, check_token

__all__ = ["ConsentIn", "DeviceIn", "DeviceOut", "EraseIn", "EventIn", "EventsIn", "EventsOut", "KeyIn",
           "SecretIn", "TriggerIn", "TriggerOut"]

Id = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _check_zone(value: str) -> str:
    try:
        return check_time_zone(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


#: A property value: JSON scalars that DuckDB's JSON type and every reader take (no NaN, no ±Infinity,
#: integers within 64 bits). Python's JSON parser accepts NaN and Infinity, so the check is here.
Scalar = (Annotated[str, Field(max_length=10_000)] | Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
          | Annotated[float, Field(allow_inf_nan=False)] | bool | None)


class DeviceIn(_Strict):
    """Register or refresh one device token (the same token again refreshes it)."""

    user_id: str = Id
    vendor: str = Field(description="one of " + ", ".join(VENDORS))
    token: str = Field(min_length=1, max_length=4096, description="the vendor's device token (stored encrypted)")
    app_id: str = Field(default="default", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    time_zone: str = Field(default="UTC", max_length=64)

    _zone = field_validator("time_zone")(_check_zone)

    @model_validator(mode="after")
    def _token(self) -> DeviceIn:
        try:
            check_token(self.vendor, self.token)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self


class DeviceOut(BaseModel):
    device_id: str
    created: bool


class ConsentIn(_Strict):
    user_id: str = Id
    channel: Literal["push"] = "push"
    message_class: Literal["marketing", "transactional"]
    granted: bool


class EventIn(_Strict):
    """One app event in the canonical contract (see engine.domain.EVENT_TYPES)."""

    event_id: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="client id; a repeat of an id already stored is ignored")
    user_id: str = Id
    event_type: str
    ts: datetime = Field(description="ISO 8601 with an offset")
    item_id: str | None = Field(default=None, min_length=1, max_length=128)
    properties: dict[str, Scalar] = Field(default_factory=dict, max_length=50)

    @field_validator("event_type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in EVENT_TYPES:
            raise ValueError("unknown event type; expected one of " + ", ".join(sorted(EVENT_TYPES)))
        return v

    @field_validator("ts")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("timestamp needs a UTC offset, e.g. 2026-01-31T09:00:00Z")
        if not 1990 <= v.year <= 2100:
            raise ValueError("timestamp year must be between 1990 and 2100")
        return v

    def properties_json(self) -> str:
        return json.dumps(self.properties)


class EventsIn(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventsOut(BaseModel):
    stored: int
    duplicates: int


class TriggerIn(_Strict):
    """A personalized send: ``{item}`` in title and body becomes each user's item."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                      description="campaign id or event name, e.g. abandoned_cart")
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=1000)
    message_class: Literal["marketing", "transactional"] = "marketing"
    when: Literal["now", "best_time"] = "now"
    user_ids: list[str] = Field(default_factory=list, max_length=10_000)
    countries: list[str] = Field(default_factory=list, max_length=100)
    item_id: str | None = Field(default=None, min_length=1, max_length=128)
    data: dict[str, str] = Field(default_factory=dict, max_length=20)

    @model_validator(mode="after")
    def _audience(self) -> TriggerIn:
        if bool(self.user_ids) == bool(self.countries):
            raise ValueError("give exactly one of user_ids and countries")
        if any(not u or len(u) > 128 for u in self.user_ids):
            raise ValueError("user_ids must be 1 to 128 characters each")
        return self


class TriggerOut(BaseModel):
    trigger_id: str
    audience: int
    sends: int
    skipped: dict[str, int]


class EraseIn(BaseModel):
    """Any stored id, byte for byte: ingested files may name users with spaces or accents, and stripping
    " bob" would erase "bob" (the query is parametrised)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=512)


class KeyIn(_Strict):
    scopes: list[Literal["send", "ingest", "admin", "metrics"]] = Field(min_length=1, max_length=4)
    label: str = Field(default="", max_length=100)
    rate_per_second: float = Field(default=200.0, gt=0, le=100_000)


class SecretIn(BaseModel):
    """A vendor credential to store encrypted (a .p8 or PEM key, a service-account JSON, an app secret)."""

    model_config = ConfigDict(extra="forbid")   # no whitespace stripping: the value is kept byte for byte

    value: str = Field(min_length=1, max_length=65_536, description="the secret; never returned or logged")
