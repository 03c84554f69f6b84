"""Tests for ``vobiz-exporter simulate``: the pure plan, the signing, and real HTTP runs.

The HTTP tests run the real ``run()`` (with its own event loop) against a small aiohttp
receiver of our own in a background thread on 127.0.0.1, which verifies every signature with
``exporter.signature.verify`` and records what it got.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from exporter import simulate
from exporter.config import Config, load_config, parse_config
from exporter.signature import Verdict, url_nonce_message, verify
from exporter.simulate import (
    CALL_INITIATED,
    HANGUP,
    PlannedCall,
    active_timeline,
    build_request,
    plan_calls,
    run_window,
)

START = 1_760_000_000.0

DOCUMENTED_CODES = {
    0,
    1000,
    1010,
    1020,
    2000,
    2010,
    2020,
    2030,
    2040,
    2050,
    2060,
    2070,
    3000,
    3010,
    3020,
    3030,
    3040,
    3050,
    3070,
    3080,
    3090,
    3100,
    3110,
    3120,
    3130,
    3140,
    4000,
    4010,
    4020,
    4030,
    5000,
    5010,
    5020,
    5030,
    6000,
    6010,
    6020,
    7011,
    7012,
    7013,
    7014,
    7022,
    7023,
    7024,
    7032,
    7033,
    7034,
    8011,
    8012,
    8013,
    8014,
    9000,
    9100,
    9110,
}
# docs/contract.md: rejection texts are matched case-insensitively by these keywords.
REASON_KEYWORDS = {
    "insufficient_balance": ("insufficient balance",),
    "cli_validation_failed": ("cli",),
    "aadhaar_pending": ("aadhaar",),
    "kyc_required": ("kyc",),
    "rate_limited": ("rate limit", "concurrent", "cps"),
    "no_routes": ("no route",),
}
CALL_INITIATED_FIELDS = {
    "Event",
    "CallUUID",
    "RequestID",
    "Timestamp",
    "From",
    "To",
    "Direction",
    "Status",
    "auth_id",
    "TrunkID",
    "Domain",
    "SourceIP",
    "SIPCallID",
    "Allowed",
    "Reason",
}
HANGUP_FIELDS = (CALL_INITIATED_FIELDS - {"Allowed"}) | {
    "AccountId",
    "BridgeUUID",
    "StartTime",
    "EndTime",
    "Duration",
    "Billsec",
    "RingTime",
    "Cost",
    "Currency",
    "MOS",
    "Jitter",
    "HangupCauseName",
    "HangupCauseCode",
    "HangupSource",
}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
INDIAN_E164 = re.compile(r"^\+91\d{10}$")


def make_config(trunks: list[dict[str, Any]], signature: dict[str, Any] | None = None) -> Config:
    raw: dict[str, Any] = {"trunks": trunks}
    if signature:
        raw["signature"] = signature
    return parse_config(raw, env={})


TWO_TRUNKS: list[dict[str, Any]] = [
    {
        "name": "mumbai-primary",
        "id": "trunk-mum-1",
        "secret": "secret-mumbai",
        "max_concurrent_calls": 30,
        "hourly_budget": {"amount": 500, "currency": "INR"},
    },
    {"name": "delhi", "secret": "secret-delhi"},
]


@pytest.fixture
def config() -> Config:
    return make_config(TWO_TRUNKS)


def category(code: int) -> str:
    for low, high, name in (
        (1000, 1999, "canceled"),
        (2000, 2999, "destination"),
        (3000, 3059, "rejection"),
        (3060, 3999, "carrier"),
        (4000, 4999, "normal"),
        (5000, 5999, "system"),
        (6000, 6999, "timeout"),
    ):
        if low <= code <= high:
            return name
    return "other"


def of_trunk(plan: list[PlannedCall], name: str) -> list[PlannedCall]:
    return [c for c in plan if c.trunk == name]


def hangups(calls: list[PlannedCall]) -> list[dict[str, Any]]:
    return [c.hangup for c in calls if c.hangup is not None]


def answered(calls: list[PlannedCall]) -> list[dict[str, Any]]:
    return [h for h in hangups(calls) if h["Billsec"] > 0]


def max_active(plan: list[PlannedCall], trunk: str) -> int:
    return max((n for _, n in active_timeline(plan, trunk)), default=0)


def min_active_between(plan: list[PlannedCall], trunk: str, lo: float, hi: float) -> int:
    """The lowest number of active calls at any instant in [lo, hi]."""
    steps = active_timeline(plan, trunk)
    at_lo = [n for t, n in steps if t <= lo][-1] if any(t <= lo for t, _ in steps) else 0
    return min([at_lo] + [n for t, n in steps if lo < t <= hi])


def assert_normal_trunk(plan: list[PlannedCall], name: str, limit: int | None) -> None:
    """docs/contract.md 'normal', exactly: healthy traffic that must not page."""
    calls = of_trunk(plan, name)
    rejected = [c for c in calls if not c.call_initiated["Allowed"]]
    assert len(rejected) <= 0.02 * len(calls)
    assert {c.rejection for c in rejected} <= {"no_routes"}
    assert all(c.call_initiated["Reason"] == "No routes available" for c in rejected)
    codes = {h["HangupCauseCode"] for h in hangups(calls)}
    assert codes.isdisjoint({1010, 1020, 5030})
    ans = answered(calls)
    assert ans
    assert sum(h["MOS"] >= 4.0 for h in ans) >= 0.9 * len(ans)
    jitters = [h["Jitter"] for h in hangups(calls) if "Jitter" in h]
    assert jitters and all(j < 30 for j in jitters)
    asr = len(ans) / len(hangups(calls))
    assert 0.55 <= asr <= 0.65, asr
    if limit is not None:
        assert max_active(plan, name) <= limit // 2


# --- plan: scenarios ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_normal_scenario_constraints(config: Config, seed: int) -> None:
    plan = plan_calls(config, "normal", 5, 60, None, None, seed, start=START)
    assert_normal_trunk(plan, "mumbai-primary", 30)
    assert_normal_trunk(plan, "delhi", None)
    # --rate 5 in total, spread evenly: ~150 arrivals per trunk over 85% of the run.
    for name in ("mumbai-primary", "delhi"):
        assert 90 <= len(of_trunk(plan, name)) <= 170


def test_normal_rejections_on_a_long_run_are_rare_and_no_routes_only(config: Config) -> None:
    plan = plan_calls(config, "normal", 40, 300, None, None, 7, start=START)
    for name in ("mumbai-primary", "delhi"):
        calls = of_trunk(plan, name)
        rejected = [c for c in calls if c.rejection]
        assert 0 < len(rejected) <= 0.02 * len(calls)
        assert {c.rejection for c in rejected} == {"no_routes"}
    assert_normal_trunk(plan, "mumbai-primary", 30)


def test_normal_answered_calls_are_realistic(config: Config) -> None:
    plan = plan_calls(config, "normal", 5, 60, None, None, 11, start=START)
    ans = answered(plan)
    assert all(2 <= h["RingTime"] <= 25 for h in ans)
    assert all(h["Duration"] == h["RingTime"] + h["Billsec"] for h in hangups(plan))
    jitter = [h["Jitter"] for h in ans if "Jitter" in h]
    assert len(jitter) >= 0.8 * len(ans)  # sometimes omitted, mostly present
    assert sum(3 <= j <= 20 for j in jitter) >= 0.9 * len(jitter)
    mos = [h["MOS"] for h in ans]
    assert sum(4.0 <= m <= 4.5 for m in mos) >= 0.9 * len(mos)
    talk = sorted(h["Billsec"] for h in ans)
    median = talk[len(talk) // 2]
    assert 30 <= median <= 180  # minutes-long calls, not seconds
    codes = Counter(h["HangupCauseCode"] for h in hangups(plan))
    assert {4000, 3000, 3010} <= set(codes)
    assert set(codes) <= DOCUMENTED_CODES
    for h in hangups(plan):
        if h["Billsec"] == 0:
            assert h["HangupCauseCode"] != 4000
            assert h["MOS"] == 0
            assert h.get("Jitter", 0) == 0
            assert h["Cost"] == 0
            assert h["BridgeUUID"] == ""
        else:
            assert h["HangupCauseCode"] in (4000, 1010, 6020)
            assert h["BridgeUUID"]


def test_rejection_spike(config: Config) -> None:
    plan = plan_calls(config, "rejection-spike", 5, 60, None, None, 5, start=START)
    hot = of_trunk(plan, "mumbai-primary")
    rejected = [c for c in hot if not c.call_initiated["Allowed"]]
    assert len(rejected) >= 0.30 * len(hot)
    reasons = Counter(c.rejection for c in rejected)
    assert {"insufficient_balance", "kyc_required"} <= set(reasons)
    assert len(reasons) >= 4
    for c in rejected:
        text = c.call_initiated["Reason"].lower()
        assert any(k in text for k in REASON_KEYWORDS[c.rejection]), text
        others = [r for r in REASON_KEYWORDS if r != c.rejection]
        assert not any(k in text for r in others for k in REASON_KEYWORDS[r]), text
        assert c.hangup is None and c.end is None
    balance = [c.call_initiated["Reason"] for c in rejected if c.rejection == "insufficient_balance"]
    assert all(re.fullmatch(r"Insufficient balance: \d+\.\d\d INR", r) for r in balance)
    assert len(set(balance)) > 1  # amounts vary
    assert_normal_trunk(plan, "delhi", None)


def test_poor_quality(config: Config) -> None:
    plan = plan_calls(config, "poor-quality", 5, 60, None, None, 5, start=START)
    ans = answered(of_trunk(plan, "mumbai-primary"))
    assert len(ans) >= 20
    assert sum(h["MOS"] < 3.1 for h in ans) >= 0.75 * len(ans)
    jit = [h["Jitter"] for h in ans if "Jitter" in h]
    assert sum(j > 50 for j in jit) >= 0.75 * len(jit)
    assert all(1.0 <= h["MOS"] <= 5.0 for h in ans)
    assert max_active(plan, "mumbai-primary") <= 30
    assert_normal_trunk(plan, "delhi", None)


@pytest.mark.parametrize(("limit", "duration"), [(30, 60), (None, 60), (10, 3), (100, 60)])
def test_near_capacity_holds_the_limit(limit: int | None, duration: float) -> None:
    trunk: dict[str, Any] = {"name": "hot", "secret": "a"}
    if limit is not None:
        trunk["max_concurrent_calls"] = limit
    cfg = make_config([trunk, {"name": "cold", "secret": "b", "max_concurrent_calls": 20}])
    plan = plan_calls(cfg, "near-capacity", 5, duration, None, None, 9, start=START)
    effective = limit or 10
    hot = of_trunk(plan, "hot")
    admitted = [c for c in hot if c.end is not None]
    assert max_active(plan, "hot") <= effective
    # Held at >= 90% from the end of the ramp-up to the last arrival, which covers most of the run.
    ramp_end = sorted(c.start for c in admitted)[math.ceil(0.9 * effective) - 1]
    last = max(c.start for c in admitted)
    assert ramp_end <= 0.06 * duration
    assert last - ramp_end >= 0.6 * duration
    assert min_active_between(plan, "hot", ramp_end, last) >= math.ceil(0.9 * effective)
    rejected = [c for c in hot if c.rejection]
    assert rejected and {c.rejection for c in rejected} == {"rate_limited"}
    assert 5030 in {h["HangupCauseCode"] for h in hangups(hot)}
    assert max_active(plan, "cold") <= 10
    if duration >= 60:
        assert_normal_trunk(plan, "cold", 20)


@pytest.mark.parametrize("scenario", [s for s in simulate.SCENARIOS if s != "outage"])
def test_each_scenario_feeds_every_dashboard_in_a_default_run(config: Config, scenario: str) -> None:
    plan = plan_calls(config, scenario, 5, 60, None, None, 21, start=START)
    hot = of_trunk(plan, "mumbai-primary")
    assert {c.scenario for c in hot} == {scenario}
    assert {c.scenario for c in of_trunk(plan, "delhi")} == {"normal"}
    ans = answered(hot)
    assert len(ans) >= 10
    assert all(h["MOS"] > 0 for h in ans)
    assert sum("Jitter" in h for h in ans) >= 5
    assert sum(h["Cost"] for h in ans) > 0
    assert len({category(h["HangupCauseCode"]) for h in hangups(hot)}) >= 3
    assert len({h["HangupSource"] for h in hangups(hot)}) >= 3
    # Every call is over (Hangup sent) inside the run.
    window = run_window(5, 60, None)
    assert all(c.start < c.end <= window.end_limit < 60 for c in plan if c.end is not None)


def test_normal_has_realistic_user_outcomes_and_high_ner(config: Config) -> None:
    """Declines (3110), busy everywhere (3100) and cancels after ringing, yet NER ~96%."""
    from exporter.events import outcome_group

    plan = plan_calls(config, "normal", 20, 300, None, None, 5, start=START)
    for name in ("mumbai-primary", "delhi"):
        ended = hangups(of_trunk(plan, name))
        codes = Counter(h["HangupCauseCode"] for h in ended)
        assert {3000, 3010, 3020, 3100, 3110, 6010, 1000} <= set(codes)
        assert all(h["RingTime"] > 0 for h in ended if h["HangupCauseCode"] == 1000)
        assert not {1010, 1020, 5030} & set(codes)
        effective = sum(
            1 for h in ended if h["Billsec"] > 0 or outcome_group(h["HangupCauseCode"], h["RingTime"]) == "user"
        )
        assert 0.94 <= effective / len(ended) <= 0.98


def test_outage_fails_the_hot_trunks_seized_calls_with_provider_and_carrier_codes(config: Config) -> None:
    from exporter.events import outcome_group

    plan = plan_calls(config, "outage", 5, 120, None, "delhi", 8, start=START)
    assert {c.scenario for c in of_trunk(plan, "delhi")} == {"outage"}
    ended = hangups(of_trunk(plan, "delhi"))
    groups = Counter(outcome_group(h["HangupCauseCode"], h["RingTime"]) for h in ended)
    assert len(ended) >= 100
    assert (groups["provider"] + groups["carrier"]) >= 0.9 * len(ended)
    assert {5000, 5010, 5020, 3070, 3080, 3090} <= {h["HangupCauseCode"] for h in ended}
    assert all(h["Billsec"] == 0 and h["MOS"] == 0 for h in ended if h["HangupCauseCode"] != 4000)
    # Admission is healthy (the outage is past it): at most 2% no_routes, as in normal.
    rejected = [c for c in of_trunk(plan, "delhi") if c.rejection]
    assert len(rejected) <= 0.02 * len(of_trunk(plan, "delhi")) and {c.rejection for c in rejected} <= {"no_routes"}
    assert_normal_trunk(plan, "mumbai-primary", 30)


def test_scenario_hits_the_named_trunk(config: Config) -> None:
    plan = plan_calls(config, "rejection-spike", 5, 60, None, "delhi", 3, start=START)
    assert {c.scenario for c in of_trunk(plan, "delhi")} == {"rejection-spike"}
    assert {c.scenario for c in of_trunk(plan, "mumbai-primary")} == {"normal"}
    delhi = of_trunk(plan, "delhi")
    assert sum(1 for c in delhi if c.rejection) >= 0.3 * len(delhi)
    assert_normal_trunk(plan, "mumbai-primary", 30)


def test_invalid_arguments_raise(config: Config) -> None:
    with pytest.raises(ValueError, match="scenario"):
        plan_calls(config, "chaos", 5, 60, None, None, 1)
    with pytest.raises(ValueError, match="nope"):
        plan_calls(config, "normal", 5, 60, None, "nope", 1)
    with pytest.raises(ValueError):
        plan_calls(config, "normal", 0, 60, None, None, 1)
    with pytest.raises(ValueError):
        plan_calls(config, "normal", 5, 60, 0, None, 1)


# --- plan: payloads, determinism ---------------------------------------------------------


def test_payload_fields(config: Config) -> None:
    plan = plan_calls(config, "rejection-spike", 5, 60, None, None, 4, start=START)
    uuids: set[str] = set()
    for c in plan:
        ci = c.call_initiated
        expected = CALL_INITIATED_FIELDS if c.trunk == "mumbai-primary" else CALL_INITIATED_FIELDS - {"TrunkID"}
        assert set(ci) == expected
        assert ci["Event"] == CALL_INITIATED and ci["Direction"] == "outbound"
        assert ci.get("TrunkID") in (None, "trunk-mum-1")
        assert RFC3339_Z.match(ci["Timestamp"])
        assert INDIAN_E164.match(ci["From"]) and E164.match(ci["To"])  # To: the destination mix
        assert ipaddress.ip_address(ci["SourceIP"]) in ipaddress.ip_network("203.0.113.0/24")
        assert ci["RequestID"] == c.request_id
        assert isinstance(ci["Allowed"], bool)
        assert (ci["Reason"] == "") == ci["Allowed"]
        uuids.add(ci["CallUUID"])
        h = c.hangup
        if h is None:
            continue
        expected_h = HANGUP_FIELDS if c.trunk == "mumbai-primary" else HANGUP_FIELDS - {"TrunkID"}
        assert set(h) in (expected_h, expected_h - {"Jitter"})
        for key in ("CallUUID", "RequestID", "From", "To", "auth_id", "SIPCallID", "SourceIP", "Domain"):
            assert h[key] == ci[key]
        assert h["Event"] == HANGUP
        assert h["Timestamp"] == h["EndTime"]
        assert h["Currency"] == "INR"
        assert h["HangupSource"] in {"Caller", "Callee", "Vobiz", "Carrier"}
        assert isinstance(h["Duration"], int) and isinstance(h["Billsec"], int)
        assert isinstance(h["HangupCauseCode"], int)
        assert h["HangupCauseName"] == simulate.HANGUP_CODES[h["HangupCauseCode"]][0]
    assert len(uuids) == len(plan)


def test_currency_and_budget() -> None:
    cfg = make_config(
        [
            {"name": "eu", "secret": "x", "hourly_budget": {"amount": 300, "currency": "EUR"}},
            {"name": "in", "secret": "y"},
        ]
    )
    plan = plan_calls(cfg, "normal", 10, 60, None, None, 2, start=START)
    eu = hangups(of_trunk(plan, "eu"))
    assert {h["Currency"] for h in eu} == {"EUR"}
    # The spend rate stays at 40% of the hourly budget, so normal traffic never pages on spend.
    per_hour = sum(h["Cost"] for h in eu) * 3600 / 60
    assert per_hour == pytest.approx(0.4 * 300, rel=0.02)
    inr = answered(of_trunk(plan, "in"))
    prices = {round(h["Cost"] / h["Billsec"] * 60, 2) for h in inr if h["Billsec"] >= 60}
    assert len(prices) == 1 and 0.5 <= prices.pop() <= 1.2


def test_same_seed_same_plan_and_calls_limit(config: Config) -> None:
    a = plan_calls(config, "poor-quality", 5, 60, None, None, 42, start=START)
    b = plan_calls(config, "poor-quality", 5, 60, None, None, 42, start=START)
    c = plan_calls(config, "poor-quality", 5, 60, None, None, 43, start=START)
    assert [(p.start, p.call_initiated, p.hangup) for p in a] == [(p.start, p.call_initiated, p.hangup) for p in b]
    assert [p.request_id for p in a] != [p.request_id for p in c]
    limited = plan_calls(config, "normal", 50, 60, 40, None, 42, start=START)
    assert len(limited) == 40
    window = run_window(50, 60, 40)
    assert window.length == 2.0  # 40 calls at 50/s need no 60 s run
    assert all(p.end is None or p.end <= window.end_limit for p in limited)


# --- signing -----------------------------------------------------------------------------


def _payload(config: Config) -> tuple[PlannedCall, dict[str, Any]]:
    plan = plan_calls(config, "normal", 5, 10, None, None, 1, start=START)
    call = next(c for c in plan if c.hangup is not None)
    assert call.hangup is not None
    return call, call.hangup


def test_sign_body_hex() -> None:
    cfg = make_config(TWO_TRUNKS)
    trunk = cfg.trunks[0]
    call, payload = _payload(cfg)
    method, path, headers, body = build_request(cfg, trunk, payload, HANGUP)
    assert (method, path) == ("POST", "/webhook/mumbai-primary")
    assert isinstance(body, bytes) and json.loads(body) == payload
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "Vobiz-Vapor/1.0"
    assert headers["X-Vobiz-Event"] == "Hangup"
    assert headers["X-Vobiz-Request-ID"] == call.request_id
    assert re.fullmatch(r"[0-9a-f]{64}", headers["X-Vobiz-Signature"])
    assert verify(trunk.secrets, body, [headers["X-Vobiz-Signature"]], "hex") is Verdict.OK
    assert verify(trunk.secrets, body + b" ", [headers["X-Vobiz-Signature"]], "hex") is Verdict.INVALID
    assert verify(cfg.trunks[1].secrets, body, [headers["X-Vobiz-Signature"]], "hex") is Verdict.INVALID


def test_sign_body_base64_custom_header() -> None:
    cfg = make_config(TWO_TRUNKS, {"header": "X-Hook-Sig", "encoding": "base64"})
    trunk = cfg.trunks[1]
    _, payload = _payload(cfg)
    _, path, headers, body = build_request(cfg, trunk, payload, CALL_INITIATED)
    assert path == "/webhook/delhi" and "X-Vobiz-Signature" not in headers
    assert isinstance(body, bytes)
    assert verify(trunk.secrets, body, [headers["X-Hook-Sig"]], "base64") is Verdict.OK


def test_sign_get_query() -> None:
    cfg = make_config([{"name": "getter", "secret": "q-secret", "method": "GET"}])
    trunk = cfg.trunks[0]
    _, payload = _payload(cfg)
    method, _, headers, query = build_request(cfg, trunk, payload, HANGUP)
    assert method == "GET" and isinstance(query, str)
    assert verify(trunk.secrets, query.encode(), [headers["X-Vobiz-Signature"]], "hex") is Verdict.OK
    fields = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    assert fields == {k: (str(v) if not isinstance(v, bool) else str(v).lower()) for k, v in payload.items()}
    assert fields["Timestamp"] == payload["Timestamp"]  # "+"/":" survive the round trip


def test_sign_url_nonce_v3() -> None:
    cfg = make_config(TWO_TRUNKS, {"scheme": "url-nonce-v3", "public_url": "https://hooks.example.com/"})
    trunk = cfg.trunks[0]
    _, payload = _payload(cfg)
    _, path, headers, _ = build_request(cfg, trunk, payload, HANGUP)
    nonce = headers["X-Vobiz-Signature-V3-Nonce"]
    message = url_nonce_message("https://hooks.example.com/", path, nonce)
    assert message == f"https://hooks.example.com/webhook/mumbai-primary.{nonce}".encode()
    assert verify(trunk.secrets, message, [headers["X-Vobiz-Signature-V3"]], "base64") is Verdict.OK
    _, _, again, _ = build_request(cfg, trunk, payload, HANGUP)
    assert again["X-Vobiz-Signature-V3-Nonce"] != nonce  # a fresh nonce per request
    _, _, fixed, _ = build_request(cfg, trunk, payload, HANGUP, nonce="n-1")
    assert fixed["X-Vobiz-Signature-V3-Nonce"] == "n-1"


def test_stamp_sets_send_time() -> None:
    cfg = make_config(TWO_TRUNKS)
    _, payload = _payload(cfg)
    stamped = simulate.stamp(payload, HANGUP, 1_800_000_000.5)
    assert stamped["Timestamp"] == stamped["EndTime"] == "2027-01-15T08:00:00.500Z"
    start = time.gmtime(1_800_000_000 - payload["Duration"])
    assert stamped["StartTime"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", start))
    assert payload["Timestamp"] != stamped["Timestamp"]  # the plan is not mutated


# --- HTTP: the real run() against our own receiver ----------------------------------------


@dataclass
class Received:
    trunk: str
    event: str
    request_id: str
    fields: dict[str, Any]
    at: float
    seq: int
    method: str


@dataclass
class Receiver:
    config: Config
    reject: Callable[[int], bool] = lambda n: False
    got: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["trunk"]
        trunk = self.config.trunk_by_name(name)
        if trunk is None:
            return web.json_response({"outcome": "unknown_trunk", "detail": "no such trunk"}, status=404)
        sig = self.config.signature
        if request.method == "GET":
            raw_query = request.rel_url.raw_query_string
            signed = raw_query.encode()
            fields: dict[str, Any] = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        else:
            signed = await request.read()
            fields = json.loads(signed)
        if sig.scheme == "url-nonce-v3":
            nonce = request.headers.get("X-Vobiz-Signature-V3-Nonce", "")
            message = url_nonce_message(sig.public_url or "", request.path, nonce)
            verdict = verify(trunk.secrets, message, request.headers.getall("X-Vobiz-Signature-V3", []), "base64")
        else:
            verdict = verify(trunk.secrets, signed, request.headers.getall(sig.header, []), sig.encoding)
        if verdict is not Verdict.OK:
            self.bad_signatures += 1
            return web.json_response({"outcome": "invalid_signature", "detail": "bad"}, status=401)
        seq = len(self.got)
        self.got.append(
            Received(
                name,
                request.headers["X-Vobiz-Event"],
                request.headers["X-Vobiz-Request-ID"],
                fields,
                time.time(),
                seq,
                request.method,
            )
        )
        if self.reject(seq):
            return web.json_response({"outcome": "invalid_signature", "detail": "told to"}, status=401)
        return web.json_response({"outcome": "accepted", "detail": "recorded"})


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[Config], Receiver]]:
    """Start receivers in a background loop (run() owns the main thread's loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    def start(config: Config, reject: Callable[[int], bool] = lambda n: False) -> Receiver:
        rec = Receiver(config, reject)

        async def boot() -> int:
            app = web.Application()
            app.router.add_route("POST", "/webhook/{trunk}", rec.handle)
            app.router.add_route("GET", "/webhook/{trunk}", rec.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            return int(runner.addresses[0][1])

        rec.port = asyncio.run_coroutine_threadsafe(boot(), loop).result(timeout=10)
        return rec

    yield start
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def write_config(tmp_path: Path, trunks: list[dict[str, Any]], signature: dict[str, Any] | None = None) -> Path:
    raw: dict[str, Any] = {"trunks": trunks}
    if signature:
        raw["signature"] = signature
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def args_for(path: Path | None, url: str | None, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    argv = []
    if path is not None:
        argv += ["--config", str(path)]
    if url is not None:
        argv += ["--url", url]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


HTTP_CONFIGS: dict[str, tuple[list[dict[str, Any]], dict[str, Any] | None]] = {
    "hex-post-and-get": (
        [
            {"name": "hot", "id": "t-hot", "secret": "hot-secret", "max_concurrent_calls": 10},
            {"name": "getter", "secret": "get-secret", "method": "GET"},
        ],
        None,
    ),
    "base64-header": ([{"name": "b64", "secret": "b64-secret"}], {"header": "X-Sig", "encoding": "base64"}),
    "url-nonce-v3": (
        [{"name": "v3", "secret": "v3-secret"}, {"name": "v3get", "secret": "g", "method": "GET"}],
        {"scheme": "url-nonce-v3", "public_url": "https://hooks.example.com"},
    ),
}


@pytest.mark.parametrize("name", list(HTTP_CONFIGS))
def test_run_sends_every_planned_event_signed_and_in_order(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    trunks, signature = HTTP_CONFIGS[name]
    path = write_config(tmp_path, trunks, signature)
    config = load_config(str(path))
    rec = receiver_factory(config)
    url = f"http://127.0.0.1:{rec.port}"
    began = time.monotonic()
    rc = simulate.run(args_for(path, url, rate=40, duration=2.5, scenario="near-capacity", seed=5))
    elapsed = time.monotonic() - began
    out = capsys.readouterr().out
    assert rc == 0, out
    assert elapsed < 2.5 + 1.0
    assert rec.bad_signatures == 0
    assert "OK: all" in out

    plan = plan_calls(config, "near-capacity", 40, 2.5, None, None, 5)
    expected = Counter((c.trunk, CALL_INITIATED) for c in plan)
    expected += Counter((c.trunk, HANGUP) for c in plan if c.hangup is not None)
    assert Counter((r.trunk, r.event) for r in rec.got) == expected
    assert {r.request_id for r in rec.got} == {c.request_id for c in plan}

    by_id: dict[str, dict[str, Received]] = {}
    for r in rec.got:
        assert r.fields["RequestID"] == r.request_id
        assert r.fields["Event"] == r.event
        by_id.setdefault(r.request_id, {})[r.event] = r
        # Timestamp is the send time.
        sent = datetime.strptime(r.fields["Timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        sent_ts = sent.replace(tzinfo=UTC).timestamp()
        assert abs(r.at - sent_ts) < 1.0
    held, planned_hold = [], []
    planned = {c.request_id: c for c in plan}
    for rid, events in by_id.items():
        if HANGUP in events:
            ci, hu = events[CALL_INITIATED], events[HANGUP]
            assert ci.seq < hu.seq
            assert ci.fields["CallUUID"] == hu.fields["CallUUID"]
            assert hu.fields["Timestamp"] == hu.fields["EndTime"]
            held.append(hu.at - ci.at)
            end = planned[rid].end
            assert end is not None
            planned_hold.append(end - planned[rid].start)
    # Hangups go out at their planned offsets, not right after the CallInitiated.
    mean_held, mean_planned = sum(held) / len(held), sum(planned_hold) / len(planned_hold)
    assert mean_planned > 0.2
    assert abs(mean_held - mean_planned) < 0.05 + 0.2 * mean_planned, (mean_held, mean_planned)
    get_trunks = {t["name"] for t in trunks if t.get("method") == "GET"}
    for r in rec.got:
        assert r.method == ("GET" if r.trunk in get_trunks else "POST")
        if r.event == CALL_INITIATED:
            # Query fields are strings; JSON keeps real booleans.
            assert r.fields["Allowed"] in (("true", "false") if r.method == "GET" else (True, False))


def test_run_returns_1_when_some_requests_are_refused(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, [{"name": "only", "secret": "k"}])
    config = load_config(str(path))
    rec = receiver_factory(config, lambda n: n % 3 == 0)
    rc = simulate.run(args_for(path, f"http://127.0.0.1:{rec.port}", rate=30, duration=2, seed=1, quiet=True))
    out = capsys.readouterr().out
    assert rc == 1
    refused = sum(1 for r in rec.got if r.seq % 3 == 0)
    assert refused > 0
    assert f"FAILED: {refused} of {len(rec.got)} requests not accepted" in out


def test_run_returns_1_when_nothing_listens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_config(tmp_path, [{"name": "only", "secret": "k"}])
    rc = simulate.run(args_for(path, f"http://127.0.0.1:{port}", rate=20, duration=1, calls=5, seed=1))
    out = capsys.readouterr().out
    assert rc == 1
    assert "error ClientConnectorError" in out


def test_usage_and_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOBIZ_EXPORTER_CONFIG", raising=False)
    assert simulate.run(args_for(None, "http://127.0.0.1:1")) == 2
    assert "--config is required" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trunks": [{"name": "x", "secret": "TOPSECRET", "method": "PUT"}]}))
    assert simulate.run(args_for(bad, "http://127.0.0.1:1")) == 2
    captured = capsys.readouterr()
    assert "trunks[0].method" in captured.err
    assert "TOPSECRET" not in captured.err + captured.out

    good = write_config(tmp_path, [{"name": "only", "secret": "k"}])
    assert simulate.run(args_for(good, "http://127.0.0.1:1", trunk="nope")) == 2
    assert "nope" in capsys.readouterr().err
    assert simulate.run(args_for(good, "ftp://127.0.0.1:1")) == 2

    monkeypatch.setenv("VOBIZ_EXPORTER_CONFIG", str(bad))
    assert simulate.run(args_for(None, "http://127.0.0.1:1")) == 2
    assert "trunks[0].method" in capsys.readouterr().err

    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--rate", "-1"])
    assert exc.value.code == 2


def test_defaults() -> None:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    ns = parser.parse_args([])
    assert (ns.rate, ns.duration, ns.calls, ns.scenario, ns.trunk, ns.seed, ns.concurrency, ns.quiet) == (
        5.0,
        60.0,
        None,
        "normal",
        None,
        None,
        50,
        False,
    )
    cfg = make_config(TWO_TRUNKS)
    assert simulate.default_url(cfg) == "http://127.0.0.1:9613"


# --- destinations and the fraud scenario (issue 13) ---------------------------------------

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def region(number: str) -> str:
    """The exporter's own region label for a number (the one the destination metrics use)."""
    from exporter.destinations import region_of

    return region_of(number)


def test_destination_numbers_are_valid_and_map_to_their_region() -> None:
    import random

    import phonenumbers

    rng = random.Random(13)
    regions = set(simulate.NORMAL_DESTINATIONS) | set(simulate.FRAUD_DESTINATIONS)
    assert regions == {"IN", "US", "GB", "AE", "SG", "CU", "SO", "CK", "LV", "XN", "RU"}
    assert {r for mix in simulate.DESTINATION_MIXES for r in mix} == simulate.NORMAL_DESTINATIONS
    assert simulate.NORMAL_DESTINATIONS.isdisjoint(simulate.FRAUD_DESTINATIONS)
    for code in sorted(regions):
        for _ in range(300):
            number = simulate.destination_number(rng, code)
            assert E164.match(number), number
            parsed = phonenumbers.parse(number)
            assert phonenumbers.is_valid_number(parsed), number
            # libphonenumber's "001" (non-geographic, e.g. Iridium +881) is labelled XN.
            assert phonenumbers.region_code_for_number(parsed) == ("001" if code == "XN" else code), number
            assert region(number) == code, number


def test_normal_destination_mix_is_mostly_home_and_only_allowed_regions() -> None:
    cfg = make_config([{"name": f"t{i}", "secret": f"s{i}"} for i in range(3)])
    plan = plan_calls(cfg, "normal", 15, 60, None, None, 5, start=START)
    for i, mix in enumerate(simulate.DESTINATION_MIXES):
        calls = of_trunk(plan, f"t{i}")
        assert len(calls) >= 200
        regions = [region(c.call_initiated["To"]) for c in calls]
        assert set(regions) <= simulate.NORMAL_DESTINATIONS
        # Stratified: every full deck of 100 calls has the mix's exact proportions.
        assert Counter(regions[:100]) == Counter(mix)
        assert regions.count("IN") >= 0.8 * len(regions)
        for c in calls:
            if c.hangup is not None:
                assert c.hangup["To"] == c.call_initiated["To"]
        ans = answered(calls)
        # The FAS baseline: normal answers always rang and are almost never under 6 s.
        assert all(h["RingTime"] > 0 for h in ans)
        assert sum(h["Billsec"] < 6 for h in ans) <= 0.02 * len(ans)


def test_fraud_scenario_short_expensive_calls_outside_the_allowed_list(config: Config) -> None:
    plan = plan_calls(config, "fraud", 5, 60, None, None, 8, start=START)
    hot, other = of_trunk(plan, "mumbai-primary"), of_trunk(plan, "delhi")
    assert {c.scenario for c in hot} == {"fraud"} and {c.scenario for c in other} == {"normal"}
    assert_normal_trunk(plan, "delhi", None)
    assert {region(c.call_initiated["To"]) for c in other} <= simulate.NORMAL_DESTINATIONS

    fraud = [c for c in hot if region(c.call_initiated["To"]) not in simulate.NORMAL_DESTINATIONS]
    normal = [c for c in hot if c not in fraud]
    assert len(hot) >= 100
    assert abs(len(fraud) - len(normal)) <= 1  # one call in two, stratified
    assert {region(c.call_initiated["To"]) for c in fraud} == set(simulate.FRAUD_DESTINATIONS)
    for c in fraud:
        h = c.hangup
        assert c.call_initiated["Allowed"] is True and c.rejection == "" and h is not None
        assert (h["HangupCauseCode"], h["HangupCauseName"], h["HangupSource"]) == (4000, "Normal Hangup", "Callee")
        assert 1 <= h["Billsec"] <= 5 and h["RingTime"] in (0, 1, 2)
        assert h["Duration"] == h["RingTime"] + h["Billsec"] and h["MOS"] >= 3.6
    no_ring = sum(c.hangup is not None and c.hangup["RingTime"] == 0 for c in fraud)
    assert abs(no_ring - 0.75 * len(fraud)) <= 3  # stratified 3 in 4
    # Expensive: a whole minute at 40x the trunk's list price (0.5-1.2 INR/min), one price per trunk.
    fraud_costs = {c.hangup["Cost"] for c in fraud if c.hangup is not None}
    assert len(fraud_costs) == 1
    assert 40 * 0.5 <= fraud_costs.pop() <= 40 * 1.2
    # Normal calls' spend stays at 40% of the hourly budget; fraud spend comes on top of it.
    normal_ans = answered(normal)
    assert sum(h["Cost"] for h in normal_ans) * 3600 / 60 == pytest.approx(0.4 * 500, rel=0.02)
    fraud_spend = sum(c.hangup["Cost"] for c in fraud if c.hangup is not None)
    assert fraud_spend * 3600 / 60 > 500
    # Short-call and no-ring shares far above the normal baseline.
    ans = answered(hot)
    assert sum(h["Billsec"] < 6 for h in ans) >= 0.4 * len(ans)
    assert sum(h["RingTime"] == 0 for h in ans) >= 0.3 * len(ans)


def test_fraud_hits_the_named_trunk_and_other_scenarios_keep_the_home_mix(config: Config) -> None:
    plan = plan_calls(config, "fraud", 5, 60, None, "delhi", 9, start=START)
    assert {c.scenario for c in of_trunk(plan, "delhi")} == {"fraud"}
    assert {region(c.call_initiated["To"]) for c in of_trunk(plan, "mumbai-primary")} <= (simulate.NORMAL_DESTINATIONS)
    assert {region(c.call_initiated["To"]) for c in of_trunk(plan, "delhi")} - simulate.NORMAL_DESTINATIONS
    for scenario in ("normal", "rejection-spike", "poor-quality", "near-capacity"):
        other = plan_calls(config, scenario, 5, 60, None, None, 10, start=START)
        assert {region(c.call_initiated["To"]) for c in other} <= simulate.NORMAL_DESTINATIONS, scenario
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    assert parser.parse_args(["--scenario", "fraud"]).scenario == "fraud"
