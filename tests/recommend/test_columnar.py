"""The columnar path gives the planner exactly the candidates and click features of the SQL path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.features.click import CLICK_FEATURES, click_features
from engine.features.item import item_neighbors
from engine.features.user import USER_FEATURES
from engine.recommend.candidates import CatalogRule, generate_candidates
from engine.recommend.columnar import AudienceIndex
from engine.store import Store
from engine.training.synthetic import insert_events

AS_OF = datetime(2011, 6, 1, tzinfo=UTC)


def random_store(seed: int, n_users: int = 70, n_items: int = 45) -> Store:
    """Baskets of 1–6 lines with repeats, quantities and prices; some items without a category, one only in events."""
    rng = np.random.default_rng(seed)
    rows, n = [], 0
    for u in range(n_users - 5):  # the last five users never bought anything
        for b in range(int(rng.integers(1, 9))):
            ts = AS_OF - timedelta(days=float(rng.uniform(0.5, 200)))
            favourite = int(rng.integers(0, n_items))
            for _ in range(int(rng.integers(1, 7))):
                item = favourite if rng.random() < 0.3 else int(rng.integers(0, n_items + 1))
                n += 1
                props = {"invoice": f"I{u}-{b}", "quantity": int(rng.integers(1, 5)),
                         "unit_price": float(np.round(rng.uniform(0.5, 9), 2))}
                rows.append({"event_id": f"e{n}", "user_id": f"u{u:03d}", "item_id": f"i{item:03d}",
                             "event_type": "purchase", "ts": pd.Timestamp(ts), "properties": json.dumps(props),
                             "source": "test"})
    # a purchase after as_of must be invisible
    rows.append({**rows[0], "event_id": "late", "ts": pd.Timestamp(AS_OF + timedelta(hours=1))})
    store = Store(":memory:")
    insert_events(store, pd.DataFrame(rows))
    for i in range(n_items):  # item n_items exists only in events
        category = None if i % 7 == 0 else f"c{i % 4}"
        store.execute("INSERT INTO items VALUES (?, ?, ?, ?, 'GBP', ?, NULL)",
                      [f"i{i:03d}", f"I{i}", category, 1.0 + i % 5, "a" if i % 3 else "b"])
    return store


def sql_path(store, users, catalog, caps):
    neighbors = item_neighbors(store.con, AS_OF)
    cands = generate_candidates(store.con, AS_OF, users, catalog=catalog, neighbors=neighbors, **caps)
    return click_features(store.con, AS_OF, cands, neighbors=neighbors, label_is_push=True)


@pytest.mark.parametrize(("seed", "catalog", "caps"), [
    (1, None, {"n_own": 100, "n_cooc": 20, "n_popular": 20}),
    (2, CatalogRule(), {"n_own": 3, "n_cooc": 2, "n_popular": 4, "cooc_seeds": 3}),
    (3, CatalogRule(sources=("a",)), {"n_own": 5, "n_cooc": 6, "n_popular": 10, "cooc_seeds": 2}),
])
def test_candidates_and_features_equal_the_sql_paths(seed, catalog, caps):
    store = random_store(seed)
    users = [f"u{u:03d}" for u in range(70)] + ["nobody"]
    expected = sql_path(store, users, catalog, caps)
    index = AudienceIndex.build(store.con, AS_OF, users, catalog=catalog, **caps)
    # two batches, the second not starting at the first user
    codes = np.arange(len(index.users))
    parts = [index.batch(codes[:31]), index.batch(codes[31:])]
    got_users = np.concatenate([index.users[p.users[p.row_user]] for p in parts])
    got_items = np.concatenate([index.items[p.row_item] for p in parts])
    x = np.concatenate([index.matrix(p) for p in parts]).astype("float64")
    assert len(expected) > 500
    assert got_users.tolist() == expected["user_id"].tolist()
    assert got_items.tolist() == expected["item_id"].tolist()
    want = expected[list(CLICK_FEATURES)].to_numpy(dtype="float64")
    for j, name in enumerate(CLICK_FEATURES):
        np.testing.assert_allclose(x[:, j], want[:, j], rtol=2e-7, atol=0, equal_nan=True, err_msg=name)
    # the features are not trivially equal: history, categories and co-occurrence all vary
    for name in ("ui_count", "ui_cooc_score", "ui_category_share", "ui_gap_ratio", "u_monetary", "i_pop_30d"):
        assert np.unique(want[:, CLICK_FEATURES.index(name)]).size > 3, name
    store.close()


def test_any_subset_of_users_in_any_batch_gets_the_same_rows():
    store = random_store(4)
    users = [f"u{u:03d}" for u in range(70)]
    index = AudienceIndex.build(store.con, AS_OF, users)
    whole = index.batch(np.arange(len(users)))
    some = np.array([3, 17, 18, 40, 69])
    part = index.batch(some)
    mask = np.isin(whole.users[whole.row_user], some)
    np.testing.assert_array_equal(part.users[part.row_user], whole.users[whole.row_user][mask])
    np.testing.assert_array_equal(part.row_item, whole.row_item[mask])
    np.testing.assert_array_equal(index.matrix(part), index.matrix(whole, mask))
    store.close()


def test_prior_ranks_each_users_rows_as_the_full_linear_score_does():
    store = random_store(5)
    users = [f"u{u:03d}" for u in range(70)]
    index = AudienceIndex.build(store.con, AS_OF, users)
    batch = index.batch(np.arange(len(users)))
    weights = np.random.default_rng(3).normal(size=len(CLICK_FEATURES))
    full = np.nan_to_num(index.matrix(batch).astype("float64")) @ weights
    prior = index.prior(batch, weights)
    user_part = np.nan_to_num(index.matrix(batch).astype("float64"))[:, :len(USER_FEATURES)] @ weights[:len(USER_FEATURES)]
    np.testing.assert_allclose(prior + user_part, full, rtol=1e-9, atol=1e-9)
    # the user block is the same for all of a user's rows, so the order within each user is the full score's
    for u in np.unique(batch.row_user)[:20]:
        rows = batch.row_user == u
        assert np.argsort(-prior[rows], kind="stable").tolist() == np.argsort(-full[rows], kind="stable").tolist()
    store.close()


def test_a_batch_costs_its_candidates_not_the_catalog():
    # a catalog of 400,000 items, all but 45 never bought: a user's batch must not allocate arrays the
    # size of the catalog (a dense users × catalog grid made a plan over a million-item catalog 4× slower
    # than the SQL path, and its cost grew with users × catalog items)
    import tracemalloc

    store = random_store(6)
    store.execute("""INSERT INTO items SELECT 'z' || lpad(i::VARCHAR, 7, '0'), 'Z', 'cz', 1.0, 'GBP', 'a', NULL
                     FROM range(400000) t(i)""")
    users = [f"u{u:03d}" for u in range(70)]
    index = AudienceIndex.build(store.con, AS_OF, users, catalog=CatalogRule(sources=("a",)))
    assert len(index.items) > 400_000
    small = random_store(6)
    small_index = AudienceIndex.build(small.con, AS_OF, users, catalog=CatalogRule(sources=("a",)))
    codes = np.arange(len(users))
    tracemalloc.start()
    try:
        batch = index.batch(codes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = small_index.batch(codes)
    # the same candidates and pair features as without the never-bought items (none of them is a candidate)
    np.testing.assert_array_equal(index.items[batch.row_item], small_index.items[expected.row_item])
    np.testing.assert_array_equal(batch.pair, expected.pair)
    assert peak < 2_000_000, f"a batch of 70 users allocated {peak:,} bytes"
    store.close()
    small.close()
