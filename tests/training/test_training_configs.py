"""Model settings fail fast with exact messages."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.training import ClickConfig, ClickData, ObdConfig, SendTimeConfig


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClickConfig(train_snapshots=0), "click train_snapshots must be at least 1, got 0"),
        (lambda: ClickConfig(negative_keep=0.0), "click negative_keep must be in (0, 1], got 0.0"),
        (lambda: ClickData(label_days=0), "click label_days must be at least 1, got 0"),
        (lambda: ClickData(category_label=2.0), "click category_label must be in [0, 1], got 2.0"),
        (lambda: SendTimeConfig(eval_days=0), "send_time eval_days and label_days must be at least 1"),
        (lambda: SendTimeConfig(min_events=0), "send_time min_events must be at least 1"),
        (lambda: SendTimeConfig(origins=0), "send_time origins and origin_step_days must be at least 1"),
        (lambda: SendTimeConfig(hour_priors=()),
         "send_time hour_kernels, hour_half_lives and hour_priors must not be empty"),
        (lambda: ObdConfig(train_share=1.0), "click_obd train_share must be between 0 and 1, got 1.0"),
    ],
)
def test_invalid_settings(make, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value) == message
