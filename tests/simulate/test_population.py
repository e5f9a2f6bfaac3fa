"""seed_population: each user's simulated device and consent are drawn once, from that user alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.simulate.population import PopulationShares, seed_population

NOW = datetime(2011, 12, 1, tzinfo=UTC)


def _users(store, ids) -> None:
    for u in ids:
        store.execute("INSERT INTO users VALUES (?, 'GB', 'Europe/London', 'online_retail', NULL, NULL)", [u])


def _state(store) -> dict[str, tuple]:
    """user → (device vendor or None, marketing consent) — the plan-relevant part of the population."""
    rows = store.execute(
        """SELECT u.user_id, d.vendor, c.granted FROM users u
           LEFT JOIN devices d USING (user_id)
           LEFT JOIN consents c ON c.user_id = u.user_id AND c.message_class = 'marketing'
           ORDER BY u.user_id""").fetchall()
    return {u: (v, g) for u, v, g in rows}


@pytest.fixture
def users():
    return [f"online_retail:{k}" for k in range(10_000, 10_400)]


def test_a_second_run_changes_nothing(store, users):
    _users(store, users)
    first = seed_population(store, NOW, seed=7)
    before = _state(store)
    tokens = store.execute("SELECT device_id, token_hash FROM devices ORDER BY 1").fetchall()
    without_app = [u for u, (vendor, _) in before.items() if vendor is None]
    assert first["users"] == 400 and 0 < len(without_app) < 60  # the 5% without the app

    again = seed_population(store, NOW, seed=7)

    assert again == {"users": 0, "devices": 0, "opted_out": 0, "uninstalled": 0}
    assert _state(store) == before  # the users without the app still have none; consent not redrawn
    assert store.execute("SELECT device_id, token_hash FROM devices ORDER BY 1").fetchall() == tokens


def test_a_user_gets_the_same_draw_whether_seeded_alone_or_with_others(store, users):
    from engine.store import Store

    _users(store, users)
    seed_population(store, NOW, seed=7)
    together = _state(store)

    with Store(":memory:") as other:
        _users(other, users[:150])
        seed_population(other, NOW, seed=7)
        _users(other, users[150:])  # users ingested later are seeded by the next run, and only they
        second = seed_population(other, NOW, seed=7)
        assert second["users"] == 250
        assert _state(other) == together


def test_the_seed_and_the_shares_still_decide(store, users):
    _users(store, users)
    seed_population(store, NOW, seed=7, shares=PopulationShares(without_app=1.0, marketing_opt_out=0.0))
    assert store.scalar("SELECT count(*) FROM devices") == 0
    assert store.scalar("SELECT count(*) FROM consents WHERE message_class = 'marketing' AND granted") == 400
    # every user is now seeded (consent recorded), so a run with other shares adds nobody a device
    assert seed_population(store, NOW, seed=7)["users"] == 0
    assert store.scalar("SELECT count(*) FROM devices") == 0
