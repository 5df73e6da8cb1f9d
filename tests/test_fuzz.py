"""Fuzzing: schemathesis generates requests for every endpoint of the OpenAPI schema.

Valid and invalid path parameters, query parameters, headers and bodies go to a live server;
every response must be no 5xx, have a status code the schema documents for that endpoint,
the documented content type, and a body that matches the documented schema.

    .venv/bin/pytest tests/test_fuzz.py -q     # default: 5 examples per endpoint (~700 cases)
    scripts/fuzz.sh                             # full: 50 per endpoint, fails under 1,000 cases

Per endpoint schemathesis sends its explicit examples, then boundary and invalid values of
every parameter (its coverage phase), then FUZZ_EXAMPLES random valid and invalid requests.

What the fuzzer can reach is kept fast, not narrowed: valid durations are clamped before
each request (step_seconds to 0, n_steps to 3, approval_timeout to 0.2 s, an event wait to
0.2 s), so every workflow it starts ends within about a second and the live (SSE) endpoints,
which answer until their workflow ends, return too. Invalid values are sent unchanged.
The WebSocket endpoint is not in the OpenAPI schema; tests/test_live.py sends it bad frames.
"""

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from workflow_comm import names
from workflow_comm.app import create_app

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
# Fewer cases than this fails the run: it would not have fuzzed what it claims.
MIN_CASES = int(os.environ.get("FUZZ_MIN_CASES", "300"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Valid values above these are lowered to them: (parameter, lowest valid, highest valid, cap).
CAPS = [
    ("step_seconds", 0, names.STEP_SECONDS_MAX, 0),
    ("approval_timeout", 0, names.APPROVAL_TIMEOUT_MAX, 0.2),
    ("timeout", 0, names.EVENT_TIMEOUT_MAX, 0.2),
    ("n_steps", names.N_STEPS_MIN, names.N_STEPS_MAX, 3),
]
statuses: Counter[str] = Counter()


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the run: how many cases ran, by status code (the full run needs >= 1,000)."""
    yield
    total = sum(statuses.values())
    by_status = Counter(key.rsplit(" ", 1)[1] for key in statuses.elements())
    line = (
        f"fuzz: {total} cases ({EXAMPLES} examples per endpoint); "
        f"by status {dict(sorted(by_status.items()))}"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    assert total >= MIN_CASES, f"{total} cases ran; FUZZ_MIN_CASES is {MIN_CASES}"


def as_number(value: Any) -> float | None:
    """A parameter's value as a number, if it is one: schemathesis sends query and path
    values as numbers or as their text ("60.0", "1000"). None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def keep_fast(case: Any) -> None:
    """Lower valid durations so each workflow started ends within about a second."""
    for where in (case.query, case.path_parameters):
        if not where:
            continue
        for name, lowest, highest, cap in CAPS:
            number = as_number(where.get(name))
            if number is not None and lowest <= number <= highest and number > cap:
                where[name] = cap


# The schema the server serves at /openapi.json, built from the same code in this process:
# schemathesis's lazy loader (from a fixture) does not run under pytest 9.
# GET /workflows/live is excluded: a valid request is a 200 stream that never ends (it follows
# every workflow), and schemathesis reads an event stream to its end. Its parameters are tested
# in tests/test_live_shared.py.
schema = schemathesis.openapi.from_dict(create_app().openapi()).exclude(path="/workflows/live")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_response_matches_the_schema(case: Any, base_url: str, report: None) -> None:
    """No generated request, valid or not, gets a 5xx or an answer the schema does not
    describe (status code, content type, body)."""
    keep_fast(case)
    response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
    statuses[f"{case.method} {case.path} {response.status_code}"] += 1
