"""Fuzzing the whole verify -> parse -> record path over HTTP (hypothesis).

Arbitrary bytes and headers, unsigned and correctly signed (so the parser and the recorder are
reached with hostile content), against the real app on a loopback socket. Every answer must be
one of the documented statuses with a documented outcome, never a 500; afterwards every label
value of every vobiz_ metric must lie in its bounded set.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from yarl import URL

from exporter.app import create_app
from exporter.config import Config
from exporter.events import (
    HANGUP_CATEGORIES,
    HANGUP_CAUSES,
    HANGUP_SOURCES,
    INVALID_FIELD_NAMES,
    OUTCOME_GROUPS,
    REJECTION_REASONS,
)
from exporter.metrics import EVENTS, MAX_CURRENCIES, OUTCOMES
from exporter.protocol import EVENT_HEADER, REQUEST_ID_HEADER, SIGNATURE_HEADER, V3_NONCE_HEADER, V3_SIGNATURE_HEADER
from exporter.signature import sign_hex

from .helpers import SECRET_A, SECRET_B, TRUNK_A_ID, TRUNK_B_ID, WIRE_FIELDS, plain_config, rfc3339, v3_headers

STATUSES = {200, 400, 401, 403, 404, 405, 408, 413, 503}
PUBLIC = "https://hooks.example.com"
TRUNK_IDS = {TRUNK_A_ID, TRUNK_B_ID, ""}
FIELDS = list(WIRE_FIELDS)

# --- strategies --------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "0",
            "4000",
            "3010",
            "true",
            "FALSE",
            "1e400",
            "-1",
            "4.3",
            "INR",
            "usd",
            "Caller",
            "Call Recipient",
            "Normal Hangup",
            "Insufficient balance: 0.50 INR",
            "KYC required",
            TRUNK_A_ID,
            TRUNK_B_ID,
            "9" * 400,
            "CallInitiated",
            "Hangup",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A payload that looks like a Vobiz event, with any field missing or replaced by junk."""
    fields: dict[str, Any] = {
        "Event": draw(st.sampled_from(["CallInitiated", "Hangup", "hangup", " CALLINITIATED ", "Other"])),
        "CallUUID": draw(st.uuids()).hex,
        "Timestamp": rfc3339(),
        "TrunkID": TRUNK_A_ID,
        "Allowed": draw(st.booleans()),
        "Currency": "INR",
    }
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=10, unique=True)):
        fields[key] = draw(values)
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        fields.pop(key, None)
    fields.update(draw(st.dictionaries(st.text(max_size=10), values, max_size=2)))
    return fields


header_names = st.sampled_from(
    [
        SIGNATURE_HEADER,
        SIGNATURE_HEADER.lower(),
        EVENT_HEADER,
        REQUEST_ID_HEADER,
        "Content-Type",
        "X-Forwarded-For",
        V3_SIGNATURE_HEADER,
        V3_NONCE_HEADER,
        "Authorization",
        "Content-Encoding",
        "X-Junk",
    ]
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80).map(
        str.strip
    ),
    st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain; charset=latin-1",
            "multipart/form-data; boundary=x",
            "sha256=",
            "CallInitiated",
            "Hangup",
            "gzip",
        ]
    ),
)
headers_st = st.lists(st.tuples(header_names, header_values), max_size=6)
paths = st.sampled_from(["/webhook/a", "/webhook", "/webhook/g", "/webhook/nope", "/webhook/a?x=1"])
QUERY_ALPHABET = string.ascii_letters + string.digits + "-._~%&=+"


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, list[tuple[str, str]]]:
    """(method, path, body, headers): raw junk, or a payload signed with the right secret."""
    kind = draw(st.sampled_from(["raw", "signed_json", "signed_form", "signed_raw", "get"]))
    path = draw(paths)
    extra = draw(headers_st)
    if kind == "get":
        query = draw(st.one_of(st.text(alphabet=QUERY_ALPHABET, max_size=200), payloads().map(_form)))
        secret = SECRET_B if path.startswith("/webhook/g") else SECRET_A
        sig = [(SIGNATURE_HEADER, sign_hex(secret.encode(), query.encode()))] if draw(st.booleans()) else []
        return "GET", path.partition("?")[0] + "?" + query, b"", sig + extra
    if kind == "raw":
        body = draw(st.binary(max_size=300))
        return draw(st.sampled_from(["POST", "POST", "PUT", "GET"])), path, body, extra
    if kind == "signed_json":
        body = json.dumps(draw(payloads())).encode()
        ctype = [("Content-Type", "application/json")]
    elif kind == "signed_form":
        body = _form(draw(payloads())).encode()
        ctype = [("Content-Type", "application/x-www-form-urlencoded")]
    else:
        body = draw(st.binary(max_size=300))
        ctype = []
    secret = SECRET_B if path.startswith("/webhook/g") else SECRET_A
    headers = [(SIGNATURE_HEADER, sign_hex(secret.encode(), body)), *ctype]
    if draw(st.booleans()):
        nonce = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20))
        url = PUBLIC + path.partition("?")[0]
        headers += list(v3_headers(secret, url, nonce).items())
    return "POST", path, body, headers + extra


def _form(fields: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})


# --- the harness -------------------------------------------------------------------------------


class Harness:
    """One real app on a loopback socket, driven from synchronous hypothesis examples."""

    def __init__(self, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.registry = CollectorRegistry()
        app = create_app(config, self.registry)

        async def start() -> TestClient[Any, Any]:
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            return client

        self.client = self.loop.run_until_complete(start())
        self.statuses: dict[int, int] = {}

    def send(self, method: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, str]:
        async def go() -> tuple[int, str]:
            from multidict import CIMultiDict

            resp = await self.client.request(
                method,
                URL(path, encoded=True),
                data=body,
                headers=CIMultiDict(headers),
                skip_auto_headers=["Content-Type"],
            )
            text = await resp.text()
            return resp.status, text

        status, text = self.loop.run_until_complete(go())
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status, text

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module", params=["body-enforce", "v3-report", "off"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "body-enforce":
        config = plain_config()
    elif request.param == "v3-report":
        config = plain_config(signature={"scheme": "url-nonce-v3", "public_url": PUBLIC, "mode": "report"})
    else:
        config = plain_config(signature={"mode": "off"})
    h = Harness(config)
    yield h
    h.close()


# aiohttp's own parser refuses a repeated one of these with a plain-text 400 before any handler
# runs (http_parser.SINGLETON_HEADERS): the one answer that is not ours.
SINGLETON_HEADERS = {
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "etag",
    "host",
    "max-forwards",
    "server",
    "transfer-encoding",
    "user-agent",
}


def check_answer(status: int, text: str, headers: list[tuple[str, str]]) -> None:
    assert status in STATUSES, (status, text)
    names = [n.lower() for n, _ in headers]
    if any(names.count(n) > 1 for n in SINGLETON_HEADERS):
        assert status == 400
        return
    body = json.loads(text)
    assert set(body) == {"outcome", "detail"}
    assert body["outcome"] in OUTCOMES


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
@given(req=requests())
def test_fuzz_requests(harness: Harness, req: tuple[str, str, bytes, list[tuple[str, str]]]) -> None:
    status, text = harness.send(*req)
    check_answer(status, text, req[3])
    assert status != 500


BOUNDED: dict[str, set[str]] = {
    "outcome": set(OUTCOMES),
    "result": {"admitted", "rejected"},
    "reason": set(REJECTION_REASONS),
    "hangup_cause": set(HANGUP_CAUSES),
    "hangup_category": set(HANGUP_CATEGORIES),
    "hangup_source": set(HANGUP_SOURCES),
    "field": set(INVALID_FIELD_NAMES),
    "event": set(EVENTS),
    "trunk": {"a", "g", "unknown"},
    "trunk_id": TRUNK_IDS,
    "group": set(OUTCOME_GROUPS),
}
CURRENCY = re.compile(r"^[A-Z]{3}$")


def test_labels_stay_bounded(harness: Harness) -> None:
    """Runs after the fuzz examples of the same module-scoped harness (pytest keeps file order)."""
    assert sum(harness.statuses.values()) >= 100, harness.statuses
    # The fuzz reached past verification: something was accepted, and something refused.
    assert harness.statuses.get(200, 0) > 0 and harness.statuses.get(400, 0) > 0, harness.statuses
    currencies: set[str] = set()
    seen_accepted = 0.0
    for metric in harness.registry.collect():
        if not metric.name.startswith("vobiz_"):
            continue
        for s in metric.samples:
            for label, value in s.labels.items():
                if label == "le":
                    continue
                if label == "currency":
                    assert value == "other" or CURRENCY.fullmatch(value), value
                    currencies.add(value)
                elif label in ("version", "python_version"):
                    assert s.name == "vobiz_exporter_build_info"
                else:
                    assert label in BOUNDED, (s.name, label)
                    assert value in BOUNDED[label], (s.name, label, value)
            if s.name == "vobiz_webhook_requests_total" and s.labels["outcome"] == "accepted":
                seen_accepted += s.value
    assert len(currencies - {"other"}) <= MAX_CURRENCIES
    assert seen_accepted > 0
