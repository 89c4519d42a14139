"""Property-based API fuzzing from our own OpenAPI document (schemathesis + hypothesis): whatever the input, the API
answers without a 5xx, and every 4xx it answers is an RFC 9457 problem document."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.conftest import SENDER, ok, setup_campaign

# CI replays a fixed sample (a new finding must not make a landing flaky); a session explores with fresh seeds:
# ENVOI_FUZZ_EXAMPLES=100 .venv/bin/pytest tests/integration/test_api_fuzz.py
EXAMPLES = int(os.environ.get("ENVOI_FUZZ_EXAMPLES", "12"))
DERANDOMIZE = os.environ.get("CI") == "true"

# Routes whose inputs are not JSON bodies described by the schema, or that change state for the whole platform.
SKIP = ("/metrics", "/twilio/", "/u/", "/optin/", "/o/", "/c/", "/webhooks/")


def test_api_never_answers_5xx_and_every_4xx_is_a_problem_document(make_env):
    env = make_env()
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    setup_campaign(client, ["fuzz1@example.com", "fuzz2@example.com"])
    auth = {"Authorization": client.headers["Authorization"]}
    schema = schemathesis.openapi.from_url(f"{env.api.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(SKIP) or operation.path.startswith("/admin"):
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=auth, base_url=env.api.url, timeout=30)
            where = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                failures.append(f"{where} -> {response.status_code}: {response.text[:300]}")
            elif 400 <= response.status_code < 500 and response.status_code != 405:
                ctype = response.headers.get("content-type") or [""]
                ctype = ctype[0] if isinstance(ctype, list) else ctype
                if not ctype.startswith("application/problem+json"):
                    failures.append(f"{where} -> {response.status_code} not problem+json: {response.text[:200]}")

        run()
    assert operations >= 20
    assert not failures, "\n".join(sorted(set(failures))[:30])
