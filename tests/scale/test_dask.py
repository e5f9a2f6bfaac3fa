"""Scale-out: the store as partitioned Parquet, click training with lightgbm.dask and batch scoring on a LocalCluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from engine.cli import main
from engine.clock import FixedClock
from engine.features.click import CLICK_FEATURES
from engine.scale import export_store, parquet_connection, predict_on_cluster, train_click_dask
from engine.scale.run import cluster_item_chooser
from engine.schedule.campaign import parse_campaign
from engine.schedule.policies import ModelItemChooser, model_item_chooser
from engine.store import Store
from engine.training.artifacts import load_model
from engine.training.click import ClickConfig
from engine.training.synthetic import add_shoppers

START = datetime(2011, 1, 3, tzinfo=UTC)
AS_OF = START + timedelta(days=140)
FAST = ClickConfig(num_boost_round=30, min_data_in_leaf=20)


@pytest.fixture(scope="module")
def shop():
    store = Store(":memory:")
    add_shoppers(store, np.random.default_rng(3), n_users=100, n_items=40, start=START)
    yield store
    store.close()


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as c:
        yield c


def test_export_round_trips_every_event_partitioned_by_type_and_month(shop, tmp_path):
    out = export_store(shop, tmp_path / "export")
    months = sorted(p.name for p in (out / "events" / "event_type=purchase").iterdir())
    assert months[0] == "ym=2011-01" and len(months) == 5
    con = parquet_connection(out)
    try:
        q = "SELECT count(*), count(DISTINCT user_id), min(ts), max(ts), sum(hash(event_id)) FROM events"
        assert con.execute(q).fetchone() == shop.con.execute(q).fetchone()
        assert con.execute("SELECT count(*) FROM users").fetchone() == shop.con.execute(
            "SELECT count(*) FROM users").fetchone()
    finally:
        con.close()


@pytest.fixture(scope="module")
def trained(shop, client, tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    result = train_click_dask(shop, AS_OF, root / "models", FixedClock(AS_OF), client, root / "export", FAST)
    return root / "models", result


@pytest.mark.slow
def test_click_model_trains_on_the_cluster_and_scores_like_local(trained, client):
    models, result = trained
    model = load_model(models, "click", result.version)
    assert model.card["trainer"] == "lightgbm.dask" and result.metrics["n_workers"] == 2
    assert result.metrics["auc"] > 0.75                  # planted favourites are learnable
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f: rng.random(1000) for f in CLICK_FEATURES})
    local = model.predict(frame)
    remote = predict_on_cluster(client, model, frame, partitions=5)
    np.testing.assert_allclose(remote, local)


def test_planning_with_cluster_scoring_picks_what_local_scoring_picks(shop, trained, client):
    models, _ = trained
    campaign = parse_campaign({"name": "D", "templates": [{"title": "{item_name}", "body": "b"}]})
    users = shop.df("SELECT DISTINCT user_id FROM events ORDER BY 1 LIMIT 40")["user_id"].tolist()
    local = model_item_chooser(models)(shop, users, campaign, AS_OF, np.random.default_rng(5))
    remote = cluster_item_chooser(models, client)(shop, users, campaign, AS_OF, np.random.default_rng(5))
    assert len(local) == 40
    pd.testing.assert_frame_equal(remote, local)


def test_two_stage_planning_on_the_cluster_picks_and_measures_what_local_does(shop, trained, client):
    models, _ = trained
    campaign = parse_campaign({"name": "D", "templates": [{"title": "{item_name}", "body": "b"}]})
    users = shop.df("SELECT DISTINCT user_id FROM events ORDER BY 1")["user_id"].tolist()
    options = {"shortlist_k": 4, "min_recall": 0.0, "calibration_users": 5, "batch_users": 30}
    local = ModelItemChooser(models, **options)
    remote = cluster_item_chooser(models, client, **options)
    picks = local(shop, users, campaign, AS_OF, np.random.default_rng(5))
    pd.testing.assert_frame_equal(remote(shop, users, campaign, AS_OF, np.random.default_rng(5)), picks)
    assert remote.recall == local.recall and local.recall.users == 5
    assert picks["policy"].str.endswith("|shortlist(k=4)").sum() == len(users) - 10


@pytest.mark.slow
def test_cli_train_dask_uses_the_scheduler_address(shop, tmp_path, monkeypatch, capsys):
    db = tmp_path / "pw.duckdb"
    shop.con.execute(f"ATTACH '{db}' AS target")
    try:
        shop.con.execute("COPY FROM DATABASE memory TO target")
    finally:
        shop.con.execute("DETACH target")
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(db))
    monkeypatch.setenv("PUSHWISE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PUSHWISE_DATA_DIR", str(tmp_path))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0",
                      protocol="tcp", host="127.0.0.1") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert main(["train", "--dask", cluster.scheduler_address, "--json", "--as-of", AS_OF.isoformat()]) == 0
    text = capsys.readouterr().out       # LightGBM's network set-up prints [LightGBM] lines before the JSON
    out = json.loads(text[text.index("\n{") + 1:])
    assert set(out) == {"click"} and out["click"]["metric"] == "auc" and out["click"]["value"] > 0.75
    assert load_model(tmp_path / "models", "click").card["trainer"] == "lightgbm.dask"
    assert (tmp_path / "export" / "events" / "event_type=purchase").is_dir()
