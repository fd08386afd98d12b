"""A fuzzer against the served OpenAPI document: for every operation, generated valid and
invalid requests get no 5xx, and every answer, error bodies and headers included, is the
one the document describes.

The server is a real `imagesync serve` on 127.0.0.1 with no worker: the generated URLs are
judged at request time and never fetched (the work waits in the database).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.served import clean_env, create_token, serve

# Per operation and generation mode; bounded so both databases fit in a CI run.
MAX_EXAMPLES = 40
# A schema cannot say every rule a request is judged by (a URL that cannot be fetched as
# written, an image listed twice, text with a NUL): such schema-valid requests answer the
# documented 422, which this check would count as a finding.
EXCLUDED = [checks.positive_data_acceptance]


@pytest.fixture
def served_api(tmp_path: Path, database_env: dict[str, str]) -> Iterator[tuple[Any, str]]:
    env = {
        **clean_env(),
        **database_env,
        "IMAGESYNC_STORAGE_URL": str(tmp_path / "files"),
        "IMAGESYNC_EMBEDDED_WORKER": "false",
        "IMAGESYNC_LOG_LEVEL": "warning",
        # One token sends every example: the limiter (tested on its own) would starve
        # the operations fuzzed last.
        "IMAGESYNC_RATE_LIMIT": "0",
    }
    token = create_token(tmp_path, env)
    with serve(tmp_path, env) as base:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json"), token


def test_every_answer_is_documented_and_none_is_a_server_error(
    served_api: tuple[Any, str],
) -> None:
    schema, token = served_api
    headers = {"Authorization": f"Bearer {token}"}
    found: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def answers_as_documented(case: Any) -> None:
                case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

            try:
                answers_as_documented()
            except Unsatisfiable:  # an operation without parameters has no invalid request
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, ExceptionGroup) as exc:  # every operation's, not only the first
                found.append(f"{operation.label} ({mode}):\n{exc}")
    assert not found, "\n\n".join(found)
