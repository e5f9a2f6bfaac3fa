"""The planner's models come from the database being planned, not from whatever was trained last in the folder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from engine.clock import FixedClock
from engine.schedule.campaign import parse_campaign
from engine.schedule.policies import ModelItemChooser
from engine.store import Store
from engine.training import ClickConfig, train_click
from engine.training.synthetic import add_shoppers

START = datetime(2011, 1, 3, tzinfo=UTC)
AS_OF = START + timedelta(days=100)
CAMPAIGN = parse_campaign({"name": "P", "id": "p", "as_of": AS_OF.isoformat(),
                           "templates": [{"title": "{item_name}", "body": "b"}]})


def _shop(seed: int) -> Store:
    store = Store(":memory:")
    add_shoppers(store, np.random.default_rng(seed), n_users=40, n_items=30, days=100)
    store.execute("INSERT INTO items SELECT DISTINCT item_id, item_id, 'c', 1.0, 'GBP', 't', NULL FROM events "
                  "WHERE item_id NOT IN (SELECT item_id FROM items)")
    return store


@pytest.fixture(scope="module")
def two_databases(tmp_path_factory):
    models = tmp_path_factory.mktemp("serving") / "models"
    mine, test_db = _shop(21), _shop(22)
    config = ClickConfig(num_boost_round=10, min_data_in_leaf=20)
    ours = train_click(mine, AS_OF, models, FixedClock(datetime(2026, 1, 1, tzinfo=UTC)), config)
    theirs = train_click(test_db, AS_OF, models, FixedClock(datetime(2026, 2, 1, tzinfo=UTC)), config)
    yield models, mine, test_db, ours.version, theirs.version
    mine.close()
    test_db.close()


def test_each_database_is_planned_with_its_own_model(two_databases):
    models, mine, test_db, ours, theirs = two_databases
    assert theirs > ours  # the folder's newest belongs to the other database
    for store, version in ((mine, ours), (test_db, theirs)):
        chooser = ModelItemChooser(models, top_k=5)
        users = store.df("SELECT DISTINCT user_id FROM events ORDER BY 1")["user_id"].tolist()
        picks = chooser(store, users, CAMPAIGN, AS_OF, np.random.default_rng(5))
        assert len(picks) and (picks["model_version"] == f"click/{version}").all()
        assert (chooser.choice.version, chooser.choice.source) == (version, "trained")
