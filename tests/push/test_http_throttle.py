"""An HTTP 429/503 is a throttle for every vendor, even when the body carries a generic business code.

Found by the soak benchmark: Honor's sandbox answered an injected 429 with its generic parameter code,
and the parser let the body code win, so 55 sends failed as rejected payloads instead of being retried.
"""

from __future__ import annotations

import importlib
import json
import random
from datetime import UTC, datetime

import pytest

from engine.domain import Outcome
from tests.push.conftest import make_message

# vendor → a body with the vendor's generic "bad parameter" business code
GENERIC_BODIES = {
    "huawei": {"code": "80100001", "msg": "Some request parameters are invalid"},
    "honor": {"code": 80100001, "message": "bad param"},
    "xiaomi": {"code": 10016, "result": "error", "reason": "bad param"},
    "oppo": {"code": 40, "message": "bad param"},
    "vivo": {"result": 10055, "desc": "bad param"},
    "meizu": {"code": "110004", "message": "bad param"},
}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("vendor", sorted(GENERIC_BODIES))
def test_http_throttle_wins_over_a_generic_body_code(vendor, status):
    module = importlib.import_module(f"engine.push.{vendor}")
    batch = [make_message(vendor, random.Random(1))]
    receipts = module.parse_response(status, {"retry-after": "3"}, json.dumps(GENERIC_BODIES[vendor]).encode(),
                                     batch, datetime(2026, 1, 5, 12, tzinfo=UTC))
    assert [r.outcome for r in receipts] in ([Outcome.RATE_LIMITED], [Outcome.TRANSIENT]), receipts
    assert receipts[0].retry_after == 3
