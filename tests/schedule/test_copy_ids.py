"""The planner's vectorised ids and holdout: the same values as uuid.uuid5 and the per-user hash, row by row."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pandas as pd

from engine.schedule.planner import SEND_NAMESPACE, assign_holdout, uuid5_many


def test_uuid5_many_equals_uuid5_for_every_name():
    names = pd.Series(["decision|c|u1", "send|x", "", "ünï|çødé", "decision|" + "z" * 300])
    assert uuid5_many(SEND_NAMESPACE, names) == [str(uuid.uuid5(SEND_NAMESPACE, n)) for n in names]
    assert uuid5_many(SEND_NAMESPACE, pd.Series([], dtype=object)) == []


def test_vectorised_holdout_assigns_exactly_what_the_per_user_hash_does():
    users = pd.Series([f"u{i}" for i in range(5_000)], dtype="str")

    def unit(u: str) -> float:  # the rule campaigns were assigned by: blake2b-64 of "campaign|user" / 2**64
        return int.from_bytes(hashlib.blake2b(f"camp|{u}".encode(), digest_size=8).digest(), "big") / 2**64

    units = np.array([unit(u) for u in users])
    for share in (0.1, 0.5, units[17], units[4_321]):   # cut-offs equal to a user's own value too
        assert (assign_holdout("camp", users, share) == (units < share)).all()
    assert assign_holdout("camp", users.tolist(), 0.1).sum() == (units < 0.1).sum()
