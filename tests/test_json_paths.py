"""The JSON cases of test_events and the whole bad-input matrix, run once with the orjson fast
path of events.parse_json_body and once with it switched off (events.USE_ORJSON = False, what an
install without the `fast` extra does): both must give the same answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter import events

# Re-collected here, so the autouse fixture below runs each of them on both paths.
from .test_bad_input import test_bad_input as test_bad_input_matrix  # noqa: F401
from .test_events import (  # noqa: F401
    test_malformed_reason_never_quotes_payload,
    test_parse_json_body_deep_nesting_is_malformed,
    test_parse_json_body_depth_at_cap_and_brackets_in_strings_are_fine,
    test_parse_json_body_keeps_nested_duplicates_apart_from_siblings,
    test_parse_json_body_malformed,
    test_parse_json_body_object,
)

PATHS = [
    pytest.param(
        True,
        id="orjson",
        marks=pytest.mark.skipif(events._orjson is None, reason="orjson (the `fast` extra) not installed"),
    ),
    pytest.param(False, id="stdlib"),
]


@pytest.fixture(autouse=True, params=PATHS)
def json_path(request: pytest.FixtureRequest) -> Iterator[bool]:
    saved = events.USE_ORJSON
    events.USE_ORJSON = request.param
    try:
        yield request.param
    finally:
        events.USE_ORJSON = saved


def test_path_switch_is_honoured(json_path: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag really selects the path: with it on, a flat unique object never reaches the
    stdlib decoder; with it off, every body does."""
    calls: list[bytes] = []
    stdlib = events._parse_json_stdlib

    def spy(raw: bytes) -> dict[str, object]:
        calls.append(raw)
        return stdlib(raw)

    monkeypatch.setattr(events, "_parse_json_stdlib", spy)
    raw = b'{"Event": "Hangup", "CallUUID": "c-1", "Duration": 60, "MOS": 4.2, "Allowed": true, "X": null}'
    assert events.parse_json_body(raw) == {
        "Event": "Hangup",
        "CallUUID": "c-1",
        "Duration": 60,
        "MOS": 4.2,
        "Allowed": True,
        "X": None,
    }
    assert calls == ([] if json_path else [raw])
