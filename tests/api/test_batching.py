"""Group commit: concurrent writes share one transaction, each caller gets its own result, and one bad
item fails only its own caller while the others land."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pandas as pd
import pytest

from engine.errors import StoreError
from engine.security.crypto import Keyring
from engine.service.batching import GroupCommit
from engine.service.operations import append_events, register_device, set_consent
from engine.service.trigger import TriggerSpec, plan_triggers, trigger_send
from engine.store import Store

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
def store():
    with Store(":memory:") as s:
        s.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        yield s


def _insert(store: Store, items):
    store.con.executemany("INSERT INTO t VALUES (?)", [[n] for n in items])
    return [n * 10 for n in items]


def test_concurrent_submits_share_one_flush_and_get_their_own_results(store):
    commit = GroupCommit(store, {"t": _insert})

    async def go():
        return await asyncio.gather(*(commit.submit("t", n) for n in range(20)))

    assert asyncio.run(go()) == [n * 10 for n in range(20)]
    assert (commit.flushes, commit.items) == (1, 20)
    assert store.count("t") == 20


def test_a_failing_item_fails_alone_and_the_rest_of_its_flush_lands(store):
    store.execute("INSERT INTO t VALUES (7)")                      # 7 will break the shared transaction
    commit = GroupCommit(store, {"t": _insert})

    async def go():
        return await asyncio.gather(*(commit.submit("t", n) for n in (5, 7, 9)), return_exceptions=True)

    first, second, third = asyncio.run(go())
    assert (first, third) == (50, 90)
    assert isinstance(second, StoreError) and "Duplicate key" in str(second)
    assert sorted(r[0] for r in store.execute("SELECT n FROM t").fetchall()) == [5, 7, 9]


def test_max_items_splits_a_burst_into_several_transactions(store):
    commit = GroupCommit(store, {"t": _insert}, max_items=4)

    async def go():
        return await asyncio.gather(*(commit.submit("t", n) for n in range(10)))

    assert len(asyncio.run(go())) == 10
    assert commit.flushes == 3


def test_batched_events_count_duplicates_across_the_batches_of_one_flush():
    with Store(":memory:") as store:
        def frame(ids):
            return pd.DataFrame({"event_id": ids, "user_id": "u1", "item_id": None, "event_type": "app_open",
                                 "ts": pd.Timestamp(NOW), "properties": "{}"})
        events = pd.concat([frame(["a", "b"]).assign(batch=0), frame(["b", "c", None]).assign(batch=1),
                            frame(["a"]).assign(batch=2)], ignore_index=True)
        with store.transaction():
            out = append_events(store, events, NOW, batches=4)
        assert out[3] == (0, 0)                       # a request whose events all failed validation elsewhere
        out = out[:3]
        assert out == [(2, 0), (2, 1), (0, 1)]
        assert store.scalar("SELECT count(*) FROM events WHERE source = 'api'") == 4


def test_batched_triggers_plan_each_as_if_alone():
    with Store(":memory:") as store:
        store.execute("""INSERT INTO users (user_id, country, time_zone, source, first_seen, last_seen)
                         VALUES ('u1', 'France', 'Europe/Paris', 'api', ?, ?)""", [NOW, NOW])
        register_device(store, Keyring((("k1", bytes(32)),)), user_id="u1", vendor="fcm", token="tok:" + "x" * 40,
                        now=NOW)
        set_consent(store, user_id="u1", channel="push", message_class="marketing", granted=True, now=NOW)
        specs = [TriggerSpec(name="a", title="t", body="b", user_ids=("u1", "u2")),
                 TriggerSpec(name="b", title="t", body="b", user_ids=("u1",), message_class="transactional")]
        with store.transaction():
            batched = plan_triggers(store, specs, NOW)
        alone = [trigger_send(store, s, NOW) for s in specs]
    for got, want in zip(batched, alone, strict=True):
        assert got["trigger_id"] != want["trigger_id"]
        assert {k: v for k, v in got.items() if k != "trigger_id"} == {k: v for k, v in want.items()
                                                                         if k != "trigger_id"}
    assert batched[0] == {**batched[0], "audience": 2, "sends": 1, "skipped": {"no_consent": 1}}
    assert batched[1] == {**batched[1], "audience": 1, "sends": 0, "skipped": {"no_consent": 1}}
