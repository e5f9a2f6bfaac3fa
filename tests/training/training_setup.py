"""Constants shared by the training tests and their conftest (a uniquely named module, importable from both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.training import ClickConfig, ClickData, ObdConfig, SendTimeConfig

START = datetime(2011, 1, 3, tzinfo=UTC)
AS_OF = START + timedelta(days=140)
TRAINED_AT = datetime(2026, 12, 3, 17, 55, tzinfo=UTC)

#: Small, fast settings for the synthetic data (a few thousand rows per model).
#: The synthetic shop spans 140 days, sized for 14-day click label windows (the product default is 30).
FAST_CLICK = ClickConfig(data=ClickData(label_days=14), num_boost_round=40, min_data_in_leaf=20)
FAST_SEND_TIME = SendTimeConfig(eval_days=30, label_days=40, num_boost_round=40, min_data_in_leaf=20)
FAST_OBD = ObdConfig(n_boot=200, min_data_in_leaf=50)
