"""Candidate generation: own items, co-occurrence, popularity; restricted by a campaign's catalog rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from engine.errors import InputError
from engine.recommend import CANDIDATE_COLUMNS, CatalogRule, generate_candidates
from engine.training.synthetic import insert_events

AS_OF = datetime(2011, 2, 1, tzinfo=UTC)


def as_sets(frame):
    out = {}
    for row in frame.itertuples():
        flags = {name for name in ("own", "cooc", "popular") if getattr(row, f"from_{name}")}
        out[(row.user_id, row.item_id)] = flags
    return out


def test_sources_and_flags(small_store) -> None:
    cands = generate_candidates(small_store, AS_OF, n_popular=1)
    assert list(cands.columns) == list(CANDIDATE_COLUMNS)
    got = as_sets(cands)
    assert got[("u1", "a")] == {"own", "popular"}  # a is the most bought item overall
    assert got[("u1", "b")] == {"own"}
    assert got[("u1", "c")] == {"cooc"}  # a and c were bought together by u2
    assert got[("u2", "d")] == {"cooc"}  # c and d together by u3
    assert ("u1", "e") not in got  # never bought, never co-bought


def test_new_users_get_popular_items_only(small_store) -> None:
    cands = generate_candidates(small_store, AS_OF, ["stranger"], n_popular=2)
    assert as_sets(cands) == {("stranger", "a"): {"popular"}, ("stranger", "c"): {"popular"}}


def test_only_the_past_is_used(small_store) -> None:
    early = generate_candidates(small_store, datetime(2011, 1, 15, tzinfo=UTC))
    assert set(early["user_id"]) == {"u1"}  # u2 and u3 have not bought anything yet


@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        (CatalogRule(item_ids=("c", "d")), {"c", "d"}),
        (CatalogRule(categories=("mug",)), {"a", "b"}),
        (CatalogRule(min_price=2.0, max_price=6.0), {"b", "c"}),
        (CatalogRule(sources=("other",)), set()),
    ],
)
def test_catalog_rules_restrict_every_source(small_store, rule: CatalogRule, allowed: set[str]) -> None:
    cands = generate_candidates(small_store, AS_OF, ["u1", "u2", "u3", "stranger"], catalog=rule)
    assert set(cands["item_id"]) <= allowed
    if allowed:
        assert set(cands["user_id"]) == {"u1", "u2", "u3", "stranger"}


def test_caps_per_source(small_store) -> None:
    cands = generate_candidates(small_store, AS_OF, n_own=1, n_cooc=0, n_popular=0)
    assert as_sets(cands)[("u1", "a")] == {"own"}
    assert cands.groupby("user_id").size().max() == 1


def _line(i: int, item: str, day: int, invoice: str) -> dict:
    return {"event_id": f"u4-{i}", "user_id": "u4", "item_id": item, "event_type": "purchase",
            "ts": pd.Timestamp(datetime(2011, 1, 1, 12, tzinfo=UTC) + timedelta(days=day)),
            "properties": json.dumps({"invoice": invoice, "quantity": 1}), "source": "test"}


def test_own_items_are_capped_by_baskets_not_lines(small_store) -> None:
    """u4 bought x as three lines of one basket, then y in two baskets: y is the one kept under a cap of one."""
    insert_events(small_store, pd.DataFrame([
        _line(0, "x", 2, "I20"), _line(1, "x", 2, "I20"), _line(2, "x", 2, "I20"),
        _line(3, "y", 3, "I21"), _line(4, "y", 4, "I22"),
    ]))
    cands = generate_candidates(small_store, AS_OF, ["u4"], n_own=1, n_cooc=0, n_popular=0)
    assert cands["item_id"].tolist() == ["y"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"item_ids": ()}, "CatalogRule.item_ids must be a non-empty list of strings"),
        ({"categories": "mug"}, "CatalogRule.categories must be a non-empty list of strings"),
        ({"min_price": 5.0, "max_price": 1.0}, "CatalogRule.min_price (5.0) is above max_price (1.0)"),
    ],
)
def test_invalid_catalog_rules(kwargs, message: str) -> None:
    with pytest.raises(InputError) as info:
        CatalogRule(**kwargs)
    assert str(info.value) == message
