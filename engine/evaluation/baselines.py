"""Recommendation baselines the evaluation runs beside Pushwise's recommender: item-item co-occurrence and ALS.

They read a purchases frame (``user_id``, ``item_id``, ``invoice``) of the training window only and
return dense users × items score arrays; they are yardsticks, never served.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["als_scores", "cooccurrence_scores"]


def _index(purchases: pd.DataFrame) -> tuple[pd.Index, pd.Index, sp.csr_matrix]:
    users = pd.Index(np.sort(purchases["user_id"].unique()))
    items = pd.Index(np.sort(purchases["item_id"].unique()))
    baskets = purchases.drop_duplicates(["user_id", "item_id", "invoice"])
    m = sp.csr_matrix((np.ones(len(baskets)), (users.get_indexer(baskets["user_id"]), items.get_indexer(baskets["item_id"]))),
                      shape=(len(users), len(items)))
    return users, items, m


def cooccurrence_scores(purchases: pd.DataFrame, user_ids: np.ndarray) -> tuple[pd.Index, np.ndarray]:
    """Item-item co-occurrence: each user's bought items vote for the items co-bought in one invoice.

    Args:
        purchases: ``user_id``, ``item_id``, ``invoice`` of the training window.
        user_ids: the users to score (each must appear in ``purchases``).

    Returns:
        (items, scores): the item index and a users × items array of cosine-normalised votes, rows in
        the order of ``user_ids``; a user's own items are not excluded.
    """
    users, items, m = _index(purchases)
    inv = pd.Index(purchases["invoice"].unique())
    b = sp.csr_matrix((np.ones(len(purchases)), (inv.get_indexer(purchases["invoice"]),
                                                  items.get_indexer(purchases["item_id"]))),
                      shape=(len(inv), len(items)))
    b.data[:] = 1.0
    co = (b.T @ b).tocsr().astype("float64")
    norm = 1 / (np.sqrt(co.diagonal()) + 1e-9)
    co = (sp.diags(norm) @ co @ sp.diags(norm)).tolil()
    co.setdiag(0)
    m = m[users.get_indexer(pd.Index(user_ids))]
    m.data[:] = 1.0
    return items, np.asarray((m @ co.tocsr()).todense())


def als_scores(purchases: pd.DataFrame, user_ids: np.ndarray, factors: int = 64, iterations: int = 15,
               seed: int = 7) -> tuple[pd.Index, np.ndarray]:
    """The ``implicit`` library's ALS on user × item invoice counts.

    Returns:
        (items, scores): the item index and a users × items array of factor dot products, rows in the
        order of ``user_ids`` (each must appear in ``purchases``).
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    users, items, m = _index(purchases)
    # implicit warns (an error under our test settings) unless BLAS runs single-threaded while it works.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=0.05,
                                        random_state=seed, num_threads=1)
        model.fit(m.log1p() * 10, show_progress=False)
    rows = users.get_indexer(pd.Index(user_ids))
    return items, np.asarray(model.user_factors)[rows] @ np.asarray(model.item_factors).T
