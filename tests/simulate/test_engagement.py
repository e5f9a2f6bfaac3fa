"""simulate_engagement: each delivered send's simulated reaction is drawn once, from that send alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.simulate.engagement import EngagementModel, simulate_engagement
from engine.store import Store

SENT = datetime(2011, 11, 2, 10, 0, tzinfo=UTC)
NOW = datetime(2011, 12, 1, tzinfo=UTC)


def _sends(store: Store, first: int, last: int) -> None:
    """Delivered sends s-<k> of item i:1 to users u<k>; every third user really bought i:1 two days later."""
    for k in range(first, last):
        user = f"u{k}"
        store.execute("INSERT INTO users VALUES (?, 'GB', 'Europe/London', 'test', NULL, NULL)", [user])
        store.execute(
            """INSERT INTO decisions (decision_id, campaign_id, user_id, arm, action, item_id, policy,
                                      message_class, as_of, created_at)
               VALUES (?, 'c1', ?, 'treatment', 'send', 'i:1', 'greedy', 'marketing', ?, ?)""",
            [f"d{k}", user, SENT, SENT])
        store.execute(
            """INSERT INTO sends (send_id, decision_id, campaign_id, user_id, device_id, vendor, message_class,
                                  title, body, due_at, state, next_attempt_at, sent_at, updated_at)
               VALUES (?, ?, 'c1', ?, ?, 'apns', 'marketing', 'T', 'B', ?, 'delivered', ?, ?, ?)""",
            [f"s-{k:04d}", f"d{k}", user, f"dev{k}", SENT, SENT, SENT, NOW])
        if k % 3 == 0:
            store.execute("INSERT INTO events VALUES (?, ?, 'i:1', 'purchase', ?, NULL, 'test', false, ?)",
                          [f"p{k}", user, SENT + timedelta(days=2), NOW])


def _reactions(store: Store) -> list[tuple]:
    return store.execute("""SELECT event_id, event_type, ts, properties->>'send_id' FROM events
                            WHERE source = 'simulation' ORDER BY event_id""").fetchall()


def test_a_second_run_adds_nothing(store):
    _sends(store, 0, 600)
    first = simulate_engagement(store, seed=7, now=NOW)
    before = _reactions(store)
    assert first["delivered_considered"] == 600 and 0 < first["opens"] < 600  # most sends get no reaction
    assert first["conversions_grounded"] == 200

    again = simulate_engagement(store, seed=7, now=NOW)

    assert again == {"delivered_considered": 0, "opens": 0, "clicks": 0, "conversions_grounded": 0,
                     "conversions_incremental": 0}
    assert _reactions(store) == before


def test_only_new_sends_are_judged_and_each_send_draws_the_same_as_in_one_run(store):
    _sends(store, 0, 600)
    simulate_engagement(store, seed=7, now=NOW)
    all_at_once = _reactions(store)

    with Store(":memory:") as other:
        _sends(other, 0, 250)
        simulate_engagement(other, seed=7, now=NOW)
        _sends(other, 250, 600)  # delivered after the first run
        later = simulate_engagement(other, seed=7, now=NOW)
        assert later["delivered_considered"] == 350
        assert _reactions(other) == all_at_once


def test_the_probabilities_still_decide(store):
    _sends(store, 0, 300)
    counts = simulate_engagement(store, seed=7, now=NOW, model=EngagementModel(open_base=0.0, open_relevant=1.0,
                                                                                 open_well_timed_bonus=0.0))
    assert counts["opens"] == 100  # exactly the sends followed by a real purchase
    opened = {r[0] for r in store.execute("SELECT user_id FROM events WHERE event_type = 'push_open'").fetchall()}
    assert opened == {f"u{k}" for k in range(0, 300, 3)}
