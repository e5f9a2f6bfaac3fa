"""The click model's feature frame: user, item and user×item features joined for (user, item) pairs."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from engine.features.base import Db, check_as_of, stable_floats
from engine.features.item import ITEM_FEATURES, item_features, item_neighbors
from engine.features.user import USER_FEATURES, user_features
from engine.features.user_item import USER_ITEM_FEATURES, user_item_features

__all__ = ["CLICK_FEATURES", "click_features"]

#: Columns the click model is trained on, in order. ``label_is_push`` is 1 for rows that describe a
#: real push outcome and 0 for rows bootstrapped from purchase behaviour; serving sets it to 1.
CLICK_FEATURES: tuple[str, ...] = (
    *USER_FEATURES,
    *ITEM_FEATURES,
    *USER_ITEM_FEATURES,
    "ui_repeat_share",
    "label_is_push",
)


def click_features(
    db: Db,
    as_of: datetime,
    pairs: pd.DataFrame,
    neighbors: pd.DataFrame | None = None,
    label_is_push: bool = True,
) -> pd.DataFrame:
    """Feature rows for (user, item) pairs as of ``as_of``, ready for the click model.

    Args:
        db: the store or a DuckDB connection.
        as_of: timezone-aware cut-off; nothing at or after it is read.
        pairs: columns ``user_id``, ``item_id`` (other columns are kept); output keeps its row order.
        neighbors: :func:`~engine.features.item.item_neighbors` output for the same ``as_of``.
        label_is_push: value of the ``label_is_push`` feature (True when scoring pushes).

    Returns:
        ``pairs``' columns followed by :data:`CLICK_FEATURES`. Users without history get NaN user
        features (LightGBM treats them as missing); items never bought get zero popularity.
    """
    as_of = check_as_of(as_of)
    if neighbors is None:
        neighbors = item_neighbors(db, as_of)
    base = pairs.reset_index(drop=True)
    users = pd.unique(base["user_id"])
    uf = user_features(db, as_of, user_ids=list(users))
    itf = item_features(db, as_of).drop(columns=["category"])
    uif = user_item_features(db, as_of, base[["user_id", "item_id"]], neighbors=neighbors)
    out = base.merge(uf, on="user_id", how="left").merge(itf, on="item_id", how="left")
    # user_item_features keeps the input order, so its columns line up with ``base`` row for row.
    for col in USER_ITEM_FEATURES:
        out[col] = uif[col].to_numpy()
    counts = ["i_pop_7d", "i_pop_30d", "i_pop_90d", "i_pop_total", "i_buyers", "i_buyers_30d", "i_buyers_7d",
              "i_buyers_90d", "i_repeat_rate"]
    out[counts] = out[counts].fillna(0)
    out["i_trend"] = out["i_trend"].fillna(1.0)
    lines = out["u_lines"].to_numpy(dtype="float64")
    out["ui_repeat_share"] = np.where(lines > 0, out["ui_count"] / np.where(lines > 0, lines, 1.0), 0.0)
    out["label_is_push"] = 1.0 if label_is_push else 0.0
    # identical features run to run, whatever order DuckDB's threads summed them in (base.stable_floats)
    out[list(CLICK_FEATURES)] = stable_floats(out[list(CLICK_FEATURES)].to_numpy(dtype="float64"))
    return out
