"""LightGBM models trained on time-based splits, saved as ``models/<name>/<version>/`` with a card.

    artifacts.py   save_model / load_model / record_run: model.txt + card.json, model_runs rows
    metrics.py     AUC, log loss, bootstrap intervals, Recall@k / NDCG@k, hour hit rates (pure)
    click_data.py  click rows: purchase-behaviour snapshots and real push outcomes
    click.py       train_click      — P(user acts on an item), judged against popularity / repeat
    click_obd.py   train_click_obd  — Open Bandit CTR, with bootstrap intervals
    send_time.py   train_send_time  — weekday booster × hour-of-day posterior per user
    hour_tuning.py tune_hour_model  — the posterior's kernel / half-life / prior, chosen on earlier windows
    train_all.py   train_all        — all three, as the demo runs them
"""

from engine.recommend.send_time import best_send_hours
from engine.training.artifacts import TrainedModel, load_model, record_run, save_model
from engine.training.base import TrainResult
from engine.training.click import ClickConfig, train_click
from engine.training.click_data import ClickData, push_rows
from engine.training.click_obd import ObdConfig, obd_impressions, train_click_obd
from engine.training.send_time import SendTimeConfig, train_send_time
from engine.training.train_all import train_all

__all__ = [
    "ClickConfig",
    "ClickData",
    "ObdConfig",
    "SendTimeConfig",
    "TrainResult",
    "TrainedModel",
    "best_send_hours",
    "load_model",
    "obd_impressions",
    "push_rows",
    "record_run",
    "save_model",
    "train_all",
    "train_click",
    "train_click_obd",
    "train_send_time",
]
