"""The planner's vectorised copy ids: the same values as uuid.uuid5, row by row."""

from __future__ import annotations

import uuid

import pandas as pd

from engine.schedule.planner import SEND_NAMESPACE, uuid5_many


def test_uuid5_many_equals_uuid5_for_every_name():
    names = pd.Series(["decision|c|u1", "send|x", "", "ünï|çødé", "decision|" + "z" * 300])
    assert uuid5_many(SEND_NAMESPACE, names) == [str(uuid.uuid5(SEND_NAMESPACE, n)) for n in names]
    assert uuid5_many(SEND_NAMESPACE, pd.Series([], dtype=object)) == []
