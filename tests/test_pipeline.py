"""The order of checks, on the pure pipeline (no HTTP server, no event loop): a request that
fails several checks is refused by the earliest one (docs/contract.md, "Answers and order of
checks")."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from multidict import CIMultiDict

from exporter import protocol
from exporter.dedupe import CallUpdate, event_key, material_key
from exporter.pipeline import Admitted, Inbound, Pipeline, Refused
from exporter.signature import Verdict

from .helpers import SECRET_A, SECRET_B, SECRET_OLD, TRUNK_B_ID, call_initiated, hangup, make_config

NOW = time.time()


def inbound(
    payload: dict[str, Any] | bytes,
    *,
    trunk: str | None = "alpha",
    secret: str | None = SECRET_A,
    method: str = "POST",
    **headers: str,
) -> Inbound:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h: CIMultiDict[str] = CIMultiDict(
        protocol.signed_headers(raw, (secret or "x").encode()) if secret else {"Content-Type": protocol.JSON}
    )
    h.update(headers)
    path = f"/webhook/{trunk}" if trunk else "/webhook"
    return Inbound(method, path, trunk, h, raw)


def outcome(pipeline: Pipeline, req: Inbound, now: float = NOW) -> tuple[str, str | None]:
    with pytest.raises(Refused) as info:
        pipeline.decide(req, now)
    return info.value.outcome, info.value.trunk.name if info.value.trunk else None


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline(make_config())


def test_admitted_event_carries_its_dedupe_keys(pipeline: Pipeline) -> None:
    payload = call_initiated(call_uuid="c1")
    req = inbound(payload)
    adm = pipeline.decide(req, NOW)
    assert isinstance(adm, Admitted)
    assert (adm.trunk.name, adm.event_name, adm.verdict, adm.event_header_disagrees) == (
        "alpha",
        "call_initiated",
        Verdict.OK,
        False,
    )
    assert adm.keys == (event_key("alpha", "call_initiated", "req-c1"), material_key("alpha", req.raw))


def test_unknown_trunk_comes_before_the_signature_and_the_body(pipeline: Pipeline) -> None:
    assert outcome(pipeline, inbound(b"not json", trunk="nosuch", secret=None)) == ("unknown_trunk", None)


def test_on_webhook_the_body_must_parse_to_find_the_trunk(pipeline: Pipeline) -> None:
    assert outcome(pipeline, inbound(b"{bad", trunk=None, secret=None)) == ("malformed", None)
    assert outcome(pipeline, inbound(call_initiated(trunk_id="other"), trunk=None)) == ("unknown_trunk", None)
    adm = pipeline.decide(inbound(call_initiated(trunk_id=TRUNK_B_ID), trunk=None, secret=SECRET_B), NOW)
    assert adm.trunk.name == "bravo"


def test_trunk_method_comes_before_the_signature(pipeline: Pipeline) -> None:
    assert outcome(pipeline, inbound(b"", method="GET", secret=None)) == ("method_not_allowed", "alpha")


def test_signature_comes_before_parsing(pipeline: Pipeline) -> None:
    assert outcome(pipeline, inbound(b"{bad", secret=None)) == ("missing_signature", "alpha")
    assert outcome(pipeline, inbound(b"{bad", secret=SECRET_B)) == ("invalid_signature", "alpha")
    assert outcome(pipeline, inbound(b"{bad")) == ("malformed", "alpha")


def test_parse_comes_before_trunk_mismatch_and_mismatch_before_the_replay_window(pipeline: Pipeline) -> None:
    stale_and_foreign = call_initiated(trunk_id=TRUNK_B_ID, ts=NOW - 7200)
    assert outcome(pipeline, inbound(stale_and_foreign)) == ("trunk_mismatch", "alpha")
    assert outcome(pipeline, inbound(call_initiated(ts=NOW - 7200))) == ("stale", "alpha")
    del stale_and_foreign["CallUUID"]
    assert outcome(pipeline, inbound(stale_and_foreign)) == ("malformed", "alpha")


def test_report_mode_carries_the_failed_verdict_to_a_later_refusal() -> None:
    pipeline = Pipeline(make_config(signature={"mode": "report"}))
    with pytest.raises(Refused) as info:
        pipeline.decide(inbound(b"{bad", secret=SECRET_B), NOW)
    assert (info.value.outcome, info.value.verdict) == ("malformed", Verdict.INVALID)
    adm = pipeline.decide(inbound(call_initiated(), secret=None), NOW)
    assert adm.verdict is Verdict.MISSING
    adm = pipeline.decide(inbound(call_initiated(), secret=SECRET_OLD), NOW)
    assert adm.verdict is Verdict.OK_PREVIOUS


def test_before_the_body_source_then_method_then_size() -> None:
    pipeline = Pipeline(make_config(webhook={"allowed_sources": ["10.0.0.0/8"], "max_body_bytes": 100}))
    with pytest.raises(Refused) as info:
        pipeline.check_before_body("PUT", 10_000, "192.0.2.1", ())
    assert info.value.outcome == "forbidden_source"
    with pytest.raises(Refused) as info:
        pipeline.check_before_body("PUT", 10_000, "10.1.2.3", ())
    assert info.value.outcome == "method_not_allowed"
    with pytest.raises(Refused) as info:
        pipeline.check_before_body("POST", 101, "10.1.2.3", ())
    assert info.value.outcome == "too_large"
    pipeline.check_before_body("POST", 100, "10.1.2.3", ())
    pipeline.check_before_body("GET", None, "::ffff:10.0.0.1", ())


def test_header_event_disagreement_is_reported_not_refused(pipeline: Pipeline) -> None:
    adm = pipeline.decide(inbound(call_initiated(), **{protocol.EVENT_HEADER: "Hangup"}), NOW)
    assert (adm.event_name, adm.event_header_disagrees) == ("call_initiated", True)


def test_admitted_event_carries_its_active_call_change(pipeline: Pipeline) -> None:
    """Applied only once the event is known not to be a duplicate (by the adaptor)."""
    started = pipeline.decide(inbound(call_initiated(call_uuid="c1")), NOW)
    rejected = pipeline.decide(inbound(call_initiated(call_uuid="c2", allowed=False)), NOW)
    ended = pipeline.decide(inbound(hangup(call_uuid="c1")), NOW)
    other = pipeline.decide(inbound({**call_initiated(call_uuid="c3"), "Event": "Transfer"}), NOW)
    assert started.call == CallUpdate(True, "alpha", "c1", NOW)
    assert ended.call == CallUpdate(False, "alpha", "c1", NOW)
    assert isinstance(ended.call, CallUpdate) and ended.call.started is False
    assert (rejected.call, other.call, other.event_name) == (None, None, "other:Transfer")
