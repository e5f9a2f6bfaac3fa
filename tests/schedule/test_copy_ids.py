"""The planner's vectorised ids and holdout: the same values as uuid.uuid5 and the per-user hash, row by row."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pandas as pd

from engine.schedule.planner import SEND_NAMESPACE, assign_holdout, uuid5_sql


def test_the_sql_uuid5_equals_uuid5_for_every_name(store):
    names = ["decision|c|u1", "send|x", "", "ünï|çødé", "decision|" + "z" * 300, "emoji 🚀|\t|'"]
    names += [f"decision|bench|u{i:07d}" for i in range(2_000)]   # every version/variant digit turns up
    store.con.register("pw_names", pd.DataFrame({"name": names}))
    got = store.df(f"SELECT {uuid5_sql(SEND_NAMESPACE, 'name')} AS id FROM pw_names")["id"].tolist()
    assert got == [str(uuid.uuid5(SEND_NAMESPACE, n)) for n in names]
    other = uuid.UUID("00000000-0000-0000-0000-0000000000ff")
    assert store.scalar("SELECT " + uuid5_sql(other, "'x'")) == str(uuid.uuid5(other, "x"))


def test_vectorised_holdout_assigns_exactly_what_the_per_user_hash_does():
    users = pd.Series([f"u{i}" for i in range(5_000)], dtype="str")

    def unit(u: str) -> float:  # the rule campaigns were assigned by: blake2b-64 of "campaign|user" / 2**64
        return int.from_bytes(hashlib.blake2b(f"camp|{u}".encode(), digest_size=8).digest(), "big") / 2**64

    units = np.array([unit(u) for u in users])
    for share in (0.1, 0.5, units[17], units[4_321]):   # cut-offs equal to a user's own value too
        assert (assign_holdout("camp", users, share) == (units < share)).all()
    assert assign_holdout("camp", users.tolist(), 0.1).sum() == (units < 0.1).sum()
