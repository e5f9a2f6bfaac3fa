"""Property-based run of schemathesis against the served OpenAPI spec: no generated input gets a 5xx.

Each operation gets a bounded number of generated cases (schema-valid and schema-violating bodies,
headers and paths), sent authenticated with an admin key and once without credentials.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.generation import GenerationMode

from tests.api.conftest import auth

EXAMPLES = 5


@pytest.mark.network
@pytest.mark.slow
def test_no_generated_input_gets_a_server_error(service):
    ctx, client, keys = service
    schema = schemathesis.openapi.from_url(str(client.base_url.join("/openapi.json")))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: list[tuple[str, str, int]] = []
    for op, mode in ((op, mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def run(case) -> None:
            for headers in (auth(keys["admin"]), {}):
                response = case.call(headers=headers)
                seen.append((case.method, case.path, response.status_code))
                assert response.status_code < 500, (case.method, case.path, response.status_code,
                                                     response.text[:300])

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE   # nothing to violate (e.g. GET /v1/health)
    assert {m.upper() for m, _, _ in seen} >= {"GET", "POST", "PUT", "DELETE"}
    assert any(code == 422 for _, _, code in seen)   # the generator did reach the validators
