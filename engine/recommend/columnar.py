"""Candidates and click features for a whole audience, computed once and gathered by integer position.

:func:`~engine.recommend.candidates.generate_candidates` and :func:`~engine.features.click.click_features`
answer for any (user, item) pairs in SQL and pandas, joining on string ids: right for training and
evaluation, slow for a plan over a million users × dozens of items (decision 014). This module gives
the planner the same candidates and the same feature values another way:

- the inputs are read once per plan: user features for the audience, item features and neighbours
  for the catalog, and one row per (user, item) the audience ever bought (:data:`history_ctes`, the
  SQL :func:`~engine.features.user_item.user_item_features` uses too);
- users and items become integer codes (positions in their sorted ids, so code order is id order);
- a batch of users is a users × catalog grid: each (user, item) cell is the integer ``user × items +
  item``; history and candidate cells are ascending arrays, found through a table over the whole
  grid when it is small (one gather) and by binary search when it is not, so a batch over a large
  catalog costs its users' history and candidates, not the size of the catalog; each feature column
  is a gather.

The feature matrix is float32: every click feature is rounded to float32 precision anyway
(:func:`~engine.features.base.stable_floats`), so nothing is lost. ``tests/recommend/test_columnar.py``
checks candidates and features against the SQL path on random stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from engine.features.base import PURCHASE_TYPES, Db, check_as_of, fetch_df, registered
from engine.features.click import CLICK_FEATURES
from engine.features.item import ITEM_FEATURES, item_features, item_neighbors
from engine.features.user import USER_FEATURES, user_features
from engine.features.user_item import HALF_LIFE_DAYS, history_ctes
from engine.recommend.candidates import CatalogRule, popular_items

__all__ = ["PAIR_FEATURES", "AudienceIndex", "CandidateBatch"]

#: Cells (users × catalog items) of a batch's grid up to which its cells are found through a table over
#: the whole grid (about 16 MB); also the most candidate cells of a batch.
GRID_CELLS = 2_000_000
#: Fewer users per batch than this with a table over the whole grid (a catalog over GRID_CELLS / 256 =
#: 7,812 items): batches are sized by their candidates instead, and cells found by binary search.
MIN_TABLE_USERS = 256

_COLUMN = {name: i for i, name in enumerate(CLICK_FEATURES)}
# user and item features are contiguous blocks of CLICK_FEATURES: each is one slice assignment
_USER_BLOCK = slice(_COLUMN[USER_FEATURES[0]], _COLUMN[USER_FEATURES[-1]] + 1)
_ITEM_BLOCK = slice(_COLUMN[ITEM_FEATURES[0]], _COLUMN[ITEM_FEATURES[-1]] + 1)
_PAIR_BLOCK = slice(_ITEM_BLOCK.stop, len(CLICK_FEATURES))
#: The click features of a (user, item) pair beyond the user's and the item's own: the last columns.
PAIR_FEATURES: tuple[str, ...] = CLICK_FEATURES[_PAIR_BLOCK]
_PAIR = {name: i for i, name in enumerate(PAIR_FEATURES)}
if CLICK_FEATURES[_USER_BLOCK] != USER_FEATURES or CLICK_FEATURES[_ITEM_BLOCK] != ITEM_FEATURES:
    raise ImportError("CLICK_FEATURES must list the user features, then the item features, then the pair features")


@dataclass(frozen=True)
class CandidateBatch:
    """The candidates of a batch of users and their (user, item) feature columns, grouped by user.

    The user and item feature columns are gathered only on demand (:meth:`AudienceIndex.matrix`):
    a first stage that ranks candidates within a user needs the item's part of its score once per
    item, not once per row.

    Attributes:
        users: user codes (positions in :attr:`AudienceIndex.users`) of the batch, ascending.
        row_user: per row, the position of its user in ``users`` (non-decreasing).
        row_item: per row, the item code (position in :attr:`AudienceIndex.items`), ascending within a user.
        pair: rows × :data:`PAIR_FEATURES`, float32, column-major.
    """

    users: np.ndarray
    row_user: np.ndarray
    row_item: np.ndarray
    pair: np.ndarray


class _Csr:
    """Rows of a table grouped by an integer key 0..n-1: ``ptr[k]:ptr[k+1]`` are key ``k``'s rows."""

    def __init__(self, key: np.ndarray, n: int) -> None:
        self.ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(key, minlength=n), out=self.ptr[1:])

    def rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers of ``keys``' rows in order, position in ``keys`` of each) for grouped rows."""
        start, stop = self.ptr[keys], self.ptr[keys + 1]
        counts = stop - start
        owner = np.repeat(np.arange(len(keys)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return start[owner] + offsets, owner


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct ``keys``, ascending (a sort: several times faster than ``np.unique``'s hashing on cells)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


class _Cells:
    """Ascending, unique cells of a grid of ``size`` cells, and where any cell stands among them.

    A table over the whole grid when it has at most :data:`GRID_CELLS` cells (one gather per lookup),
    else a binary search (memory of the cells only).
    """

    def __init__(self, cells: np.ndarray, size: int) -> None:
        self.cells = cells
        self._table: np.ndarray | None = None
        if size <= GRID_CELLS:
            self._table = np.full(size, -1, dtype=np.int64)
            self._table[cells] = np.arange(len(cells))

    @classmethod
    def union(cls, parts: Sequence[np.ndarray], size: int) -> _Cells:
        """The distinct cells of ``parts``."""
        if size <= GRID_CELLS:
            grid = np.zeros(size, dtype=bool)
            for part in parts:
                grid[part] = True
            return cls(np.flatnonzero(grid), size)
        return cls(_sorted_unique(np.concatenate(parts)), size)

    def find(self, cells: np.ndarray) -> np.ndarray:
        """The position of each of ``cells`` among these cells; -1 where it is not one of them."""
        if self._table is not None:
            return self._table[cells]
        at = np.searchsorted(self.cells, cells)
        inside = at < len(self.cells)
        found = np.zeros(len(cells), dtype=bool)
        found[inside] = self.cells[at[inside]] == cells[inside]
        return np.where(found, at, -1)


def _rank_in_group(group: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """0-based rank of each row within its group, ordered by ``keys`` (first key first, ascending)."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((*reversed(keys), group))
    g = group[order]
    opens = np.r_[True, g[1:] != g[:-1]]
    first = np.maximum.accumulate(np.where(opens, np.arange(len(g)), 0))
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - first
    return rank


class AudienceIndex:
    """Everything a plan's candidates and click features read, for one audience at one as-of time.

    Build it with :meth:`build`; then :meth:`batch` gives the candidates and feature rows of any
    set of the audience's users, the same rows (in the same order) and values as
    ``click_features(db, as_of, generate_candidates(db, as_of, users, ...))``.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, user_x: np.ndarray, item_x: np.ndarray,
                 item_category: np.ndarray, history: dict[str, np.ndarray], neighbors: pd.DataFrame,
                 allowed: np.ndarray, popular: np.ndarray, caps: dict[str, int]) -> None:
        self.users, self.items = users, items
        self.user_x, self.item_x, self.item_category = user_x, item_x, item_category
        # transposed: a feature's values over users (items) are contiguous, so a gather reads one array
        self.user_x32 = np.ascontiguousarray(user_x.T, dtype=np.float32)
        self.item_x32 = np.ascontiguousarray(item_x.T, dtype=np.float32)
        self.n_items, self.n_categories = len(items), int(item_category.max(initial=-1)) + 1
        self.h = history
        self.by_user = _Csr(history["u"], len(users))
        self.user_total = np.bincount(history["u"], weights=history["ui_count"], minlength=len(users))
        self.user_total_baskets = np.bincount(history["u"], weights=history["ui_baskets"], minlength=len(users))
        self.allowed, self.popular, self.caps = allowed, popular, caps
        codes = pd.Index(items)
        item, neighbor = codes.get_indexer(neighbors["item_id"]), codes.get_indexer(neighbors["neighbor_id"])
        similarity = neighbors["similarity"].to_numpy(dtype="float64")
        # each item's neighbours by (similarity desc, neighbour id): the first cooc_seeds seed co-occurrence candidates
        order = np.lexsort((neighbor, -similarity, item))
        item, neighbor, similarity = item[order], neighbor[order], similarity[order]
        keep = _rank_in_group(item, -similarity, neighbor) < caps["cooc_seeds"]
        self.seed_nb = (_Csr(item[keep], len(items)), neighbor[keep], similarity[keep])
        # for the co-occurrence features: which items list a bought item among their neighbours, and how similar
        by_neighbor = np.argsort(neighbor, kind="stable")
        self.reverse_nb = (_Csr(neighbor[by_neighbor], len(items)), item[by_neighbor], similarity[by_neighbor])

    @classmethod
    def build(cls, db: Db, as_of: datetime, user_ids: Sequence[str], *, catalog: CatalogRule | None = None,
              neighbors: pd.DataFrame | None = None, n_own: int = 100, n_cooc: int = 20, n_popular: int = 20,
              popular_days: int = 30, cooc_seeds: int = 20) -> AudienceIndex:
        """Read the audience's features and history once (arguments as in ``generate_candidates``)."""
        as_of = check_as_of(as_of)
        if neighbors is None:
            neighbors = item_neighbors(db, as_of)
        users = np.array(sorted(set(user_ids)), dtype=object)
        itf = item_features(db, as_of)
        items = itf["item_id"].to_numpy(dtype=object)
        category = pd.factorize(itf["category"], use_na_sentinel=True)[0].astype(np.int64)
        uf = user_features(db, as_of, user_ids=list(users))
        user_x = np.full((len(users), len(USER_FEATURES)), np.nan)
        user_x[pd.Index(users).get_indexer(uf["user_id"])] = uf[list(USER_FEATURES)].to_numpy(dtype="float64")
        history = _history(db, as_of, users, items)
        allowed = np.ones(len(items), dtype=bool)
        if catalog is not None:
            where, params = catalog.where()
            ok = fetch_df(db, f"SELECT it.item_id FROM items it WHERE {where}", params)["item_id"]
            # object arrays: pandas' string-array isin loops in Python (seconds over a million items)
            allowed = pd.Index(items, dtype=object).isin(ok.to_numpy(dtype=object))
        popular = pd.Index(items).get_indexer(popular_items(db, as_of, catalog, n_popular, popular_days))
        popular = popular[popular >= 0]
        caps = {"n_own": n_own, "n_cooc": n_cooc, "cooc_seeds": cooc_seeds}
        return cls(users, items, user_x, itf[list(ITEM_FEATURES)].to_numpy(dtype="float64"), category, history,
                   neighbors, allowed, popular, caps)

    def batch_size(self) -> int:
        """Users per batch: a whole users × catalog grid of :data:`GRID_CELLS` cells, or for a catalog too
        large for :data:`MIN_TABLE_USERS` users, that many candidate cells."""
        users = GRID_CELLS // max(1, self.n_items)
        if users >= MIN_TABLE_USERS:
            return users
        most = len(self.popular) + self.caps["n_own"] + self.caps["n_cooc"]  # candidates a user can get
        return max(1, GRID_CELLS // max(1, most))

    def batch(self, user_codes: np.ndarray) -> CandidateBatch:
        """Candidates and feature rows of the users at ``user_codes`` (ascending positions in :attr:`users`)."""
        users = np.asarray(user_codes, dtype=np.int64)
        n_users, n_items = len(users), self.n_items
        rows, owner = self.by_user.rows(users)
        h_item = self.h["i"][rows]
        size = n_users * n_items
        # the history's cells: ascending and unique (history rows are sorted by user, then item)
        bought = _Cells(owner * n_items + h_item, size)
        # own items: most baskets, then most recent, then item id
        ok = self.allowed[h_item]
        rank = _rank_in_group(owner[ok], -self.h["ui_baskets"][rows[ok]], -self.h["last_us"][rows[ok]], h_item[ok])
        popular = (np.arange(n_users, dtype=np.int64)[:, None] * n_items + self.popular[None, :]).reshape(-1)
        chosen = _Cells.union([bought.cells[ok][rank < self.caps["n_own"]],
                               self._cooc_cells(rows, owner, h_item, bought), popular], size)
        flat = chosen.cells
        return CandidateBatch(users, flat // n_items, flat % n_items,
                              self._pair_features(users, chosen, rows, owner, h_item, bought))

    def matrix(self, batch: CandidateBatch, rows: np.ndarray | None = None) -> np.ndarray:
        """The full click-feature matrix (rows × :data:`~engine.features.click.CLICK_FEATURES`, float32)
        of the batch's rows, or of the rows selected by ``rows`` (an index or boolean mask)."""
        row_user, row_item, pair = batch.row_user, batch.row_item, batch.pair
        if rows is not None:
            row_user, row_item, pair = row_user[rows], row_item[rows], pair[rows]
        user = batch.users[row_user]
        x = np.empty((len(row_user), len(CLICK_FEATURES)), dtype=np.float32, order="F")
        for j in range(self.user_x32.shape[0]):
            x[:, _USER_BLOCK.start + j] = self.user_x32[j][user]
        for j in range(self.item_x32.shape[0]):
            x[:, _ITEM_BLOCK.start + j] = self.item_x32[j][row_item]
        x[:, _PAIR_BLOCK] = pair
        return x

    def prior(self, batch: CandidateBatch, weights: np.ndarray) -> np.ndarray:
        """``x @ weights`` over the batch's rows without the user block (the same for all of a user's
        rows, so it cannot change their order), missing values counted as 0; float64.

        Args:
            weights: one weight per :data:`~engine.features.click.CLICK_FEATURES` column.
        """
        weights = np.asarray(weights, dtype="float64")
        item_term = np.nan_to_num(self.item_x32.T.astype("float64")) @ weights[_ITEM_BLOCK]
        out = item_term[batch.row_item]
        for j, w in enumerate(weights[_PAIR_BLOCK]):
            if w != 0.0:
                col = batch.pair[:, j]
                out += w * np.where(np.isnan(col), 0.0, col)
        return out

    def _cooc_cells(self, rows: np.ndarray, owner: np.ndarray, h_item: np.ndarray, bought: _Cells) -> np.ndarray:
        """Cells of the co-occurrence candidates: items near the user's most recent ones that they never bought
        (``bought``: the cells of the batch's history ``rows``)."""
        n_items = self.n_items
        seed = _rank_in_group(owner, -self.h["last_us"][rows], -self.h["ui_count"][rows], h_item) < self.caps["cooc_seeds"]
        csr, neighbor, similarity = self.seed_nb
        nb_rows, which = csr.rows(h_item[seed])
        cells = owner[seed][which] * n_items + neighbor[nb_rows]
        keep = (bought.find(cells) < 0) & self.allowed[neighbor[nb_rows]]
        cells, weights = cells[keep], similarity[nb_rows][keep]
        if len(cells) == 0:
            return cells
        distinct, inverse = np.unique(cells, return_inverse=True)
        total = np.bincount(inverse, weights=weights)
        rank = _rank_in_group(distinct // n_items, -total, distinct % n_items)
        return distinct[rank < self.caps["n_cooc"]]

    def _pair_features(self, users: np.ndarray, chosen: _Cells, rows: np.ndarray, owner: np.ndarray,
                       h_item: np.ndarray, bought: _Cells) -> np.ndarray:
        """:data:`PAIR_FEATURES` of the ``chosen`` cells (``bought``: the cells of the history ``rows``);
        most are 0 (items the user never bought), so values are written only where they are not."""
        flat = chosen.cells
        n_items, row_user, row_item = self.n_items, flat // self.n_items, flat % self.n_items
        # column-major: each feature is one contiguous column (LightGBM and numpy read either order)
        x = np.zeros((len(flat), len(PAIR_FEATURES)), dtype=np.float32, order="F")
        user = users[row_user]
        # items the user bought: the history row's values
        h = bought.find(flat)
        at = np.flatnonzero(h >= 0)
        h = rows[h[at]]
        for name in ("ui_count", "ui_baskets", "ui_baskets_30d", "ui_quantity", "ui_decayed", "ui_gap_ratio"):
            x[at, _PAIR[name]] = self.h[name][h]
        x[:, _PAIR["ui_days_since"]] = np.nan
        x[at, _PAIR["ui_days_since"]] = self.h["ui_days_since"][h]
        x[at, _PAIR["ui_share"]] = self.h["ui_baskets"][h] / self.user_total_baskets[user[at]]
        lines = self.user_x[user[at], USER_FEATURES.index("u_lines")]
        x[at, _PAIR["ui_repeat_share"]] = np.where(lines > 0, self.h["ui_count"][h] / np.where(lines > 0, lines, 1.0), 0.0)
        # category affinity: the user's purchases of items in each category
        n_cat = max(1, self.n_categories)
        h_cat = self.item_category[h_item]
        has_cat = h_cat >= 0
        user_cat = owner[has_cat] * n_cat + h_cat[has_cat]
        bought_cats = _Cells.union([user_cat], len(users) * n_cat)
        per_cat = np.bincount(bought_cats.find(user_cat), weights=self.h["ui_count"][rows[has_cat]],
                              minlength=len(bought_cats.cells))
        cat = self.item_category[row_item]
        found = np.where(cat >= 0, bought_cats.find(row_user * n_cat + np.maximum(cat, 0)), -1)
        count = np.where(found >= 0, per_cat[np.maximum(found, 0)] if len(per_cat) else 0.0, 0.0)
        at = np.flatnonzero(count)
        x[at, _PAIR["ui_category_count"]] = count[at]
        x[at, _PAIR["ui_category_share"]] = count[at] / self.user_total[user[at]]
        # co-occurrence: Σ and max similarity between the item and the bought items among its neighbours
        csr, item, similarity = self.reverse_nb
        nb_rows, which = csr.rows(h_item)
        target = chosen.find(owner[which] * n_items + item[nb_rows])  # the candidate row each pair adds to
        mine = target >= 0
        target, weight = target[mine], similarity[nb_rows][mine]
        sums = np.bincount(target, weights=weight, minlength=len(flat))
        peak = np.zeros(len(flat))
        np.maximum.at(peak, target, weight)
        x[:, _PAIR["ui_cooc_score"]] = sums
        x[:, _PAIR["ui_cooc_max"]] = peak
        x[:, _PAIR["label_is_push"]] = 1.0
        return x


def _history(db: Db, as_of: datetime, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
    """One row per (audience user, item) bought before ``as_of``, as arrays sorted by user code then item code."""
    codes = pd.DataFrame({"user_id": users, "u": np.arange(len(users), dtype=np.int64)})
    item_codes = pd.DataFrame({"item_id": items, "i": np.arange(len(items), dtype=np.int64)})
    with registered(db, codes, "pw_user_codes") as uc, registered(db, item_codes, "pw_item_codes") as ic:
        sql = f"""
            WITH {history_ctes(f"SELECT user_id FROM {uc}")}
            SELECT uc.u, ic.i, ui_count, ui_days_since, ui_baskets, ui_baskets_30d, ui_quantity, ui_decayed,
                   ui_gap_ratio, epoch_us(last_ts) AS last_us
            FROM ui JOIN {uc} uc USING (user_id) JOIN {ic} ic USING (item_id)
            ORDER BY uc.u, ic.i
        """
        params = {"as_of": as_of, "types": list(PURCHASE_TYPES), "half_life": HALF_LIFE_DAYS}
        found = fetch_df(db, sql, params)
    ints = {"u", "i", "ui_count", "ui_baskets", "ui_baskets_30d", "last_us"}
    return {k: found[k].to_numpy(dtype=np.int64 if k in ints else np.float64) for k in found.columns}
