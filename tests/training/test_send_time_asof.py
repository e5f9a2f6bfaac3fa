"""The send-time fit reads nothing at or after its cut-off, and its tuning counts hits as worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.recommend.send_time import hour_scores
from engine.store import Store
from engine.training.hour_tuning import hour_grid_hits, tune_hour_model
from engine.training.send_time import SendTimeConfig, _fit
from engine.training.synthetic import add_shoppers, insert_events

START = datetime(2011, 1, 3, tzinfo=UTC)
END = START + timedelta(days=100)
SMALL = SendTimeConfig(origins=2, origin_step_days=20, label_days=30, num_boost_round=20, min_data_in_leaf=20,
                       hour_kernels=(0.0, 0.3), hour_half_lives=(20.0, 365.0), hour_priors=(1.0, 16.0))


def _stores() -> tuple[Store, Store]:
    """A synthetic log (``full``), the same log cut at ``END`` (``cut``); ``full`` also gets off-habit later buys."""
    full, cut = Store(":memory:"), Store(":memory:")
    add_shoppers(full, np.random.default_rng(3), n_users=60, n_items=30, start=START, days=130)
    users = full.df("SELECT DISTINCT user_id FROM events ORDER BY user_id")["user_id"].head(30)
    # Every judged user also buys at 03:00 UTC, away from any planted hour, at and after END.
    late = pd.DataFrame({
        "event_id": [f"late{i}" for i in range(2 * len(users))],
        "user_id": np.repeat(users.to_numpy(), 2),
        "item_id": "syn:i000",
        "event_type": "purchase",
        "ts": [pd.Timestamp(END + timedelta(days=d, hours=3)) for _ in users for d in (0, 5)],
        "properties": '{"invoice": "L", "quantity": 1, "unit_price": 1.0}',
        "source": "test",
    })
    insert_events(full, late)
    for table in ("users", "items"):
        cut.con.register("src", full.df(f"SELECT * FROM {table}"))
        cut.execute(f"INSERT INTO {table} SELECT * FROM src")
    cut.con.register("src_events", full.df("SELECT * FROM events WHERE ts < $a", {"a": END}))
    cut.execute("INSERT INTO events SELECT * FROM src_events")
    return full, cut


@pytest.fixture(scope="module")
def stores() -> tuple[Store, Store]:
    full, cut = _stores()
    yield full, cut
    full.close()
    cut.close()


def test_hour_tuning_reads_nothing_at_or_after_its_end(stores) -> None:
    full, cut = stores
    origins = [END - timedelta(days=40), END - timedelta(days=20)]
    grid = (SMALL.hour_kernels, SMALL.hour_half_lives, SMALL.hour_priors)
    on_full, on_cut = tune_hour_model(full, origins, END, *grid), tune_hour_model(cut, origins, END, *grid)
    pd.testing.assert_frame_equal(on_full.grid, on_cut.grid)
    assert on_full.card() == on_cut.card()
    # Teeth: judged up to a later end, the 03:00 buys are misses and every combination scores lower.
    later = tune_hour_model(full, origins, END + timedelta(days=10), *grid)
    assert (later.grid["top3"].to_numpy() < on_full.grid["top3"].to_numpy()).all()


def test_fitted_model_and_its_scores_read_nothing_at_or_after_the_cut_off(stores) -> None:
    full, cut = stores
    on_full, on_cut = _fit(full, END, SMALL), _fit(cut, END, SMALL)
    assert on_full.card == on_cut.card
    users = sorted(cut.df("SELECT DISTINCT user_id FROM events")["user_id"])[:40]
    pd.testing.assert_frame_equal(hour_scores(on_full, full, users, END), hour_scores(on_cut, cut, users, END))


def _history(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "ts": pd.to_datetime([r[1] for r in rows], utc=True),
                         "local_hour": [r[2] for r in rows]})


def test_grid_hits_weigh_recent_hours_by_the_half_life_and_judge_only_later_engagements_of_known_users() -> None:
    origin, end = datetime(2011, 6, 1, tzinfo=UTC), datetime(2011, 7, 1, tzinfo=UTC)
    history = _history([
        *[("u", "2011-02-21 09:10", 9)] * 3,  # 100 days before the origin, three times at 9h
        ("u", "2011-05-31 15:00", 15),         # the day before, once at 15h
        ("u", "2011-06-10 15:20", 15),         # judged: 15h
        ("u", "2011-07-01 09:00", 9),          # at the end: not judged
        ("new", "2011-06-12 09:00", 9),        # no history before the origin: not judged
    ])
    prior = np.full(24, 1 / 24)
    got = hour_grid_hits(history, prior, origin, end, [0.0], [10.0, 1000.0], [0.1], k=1)
    # Half-life 10 days: 3 × 0.5^10 at 9h < 1 × 0.5^0.1 at 15h, so 15h is the top hour (a hit);
    # half-life 1000 days: 3 × 0.93 at 9h > 1 at 15h, so 9h is (a miss).
    assert got["top3"].tolist() == [1.0, 0.0] and got["n"].tolist() == [1, 1]
