"""signature.scheme: url-nonce-v3 (the provider's general callback scheme).

base64 HMAC-SHA256 of "<public URL without query>.<nonce>" in X-Vobiz-Signature-V3, with the
nonce in X-Vobiz-Signature-V3-Nonce. The body is not covered, so a nonce seen before is a
duplicate; report and off modes behave as they do with the body scheme.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from exporter.app import create_app
from exporter.config import parse_config
from exporter.protocol import SIGNATURE_HEADER, V3_NONCE_HEADER, V3_SIGNATURE_HEADER

from .helpers import (
    SECRET_A,
    SECRET_B,
    TRUNK_A_ID,
    call_initiated,
    call_samples,
    encode,
    outcomes,
    v3_headers,
)

PUBLIC = "https://hooks.example.com"
OLD = "old-rotated-secret-for-trunk-a"


def v3_config(mode: str = "enforce", public_url: str = PUBLIC) -> Any:
    return parse_config(
        {
            "signature": {"scheme": "url-nonce-v3", "public_url": public_url, "mode": mode},
            "trunks": [
                {"name": "a", "id": TRUNK_A_ID, "secret": SECRET_A, "previous_secrets_env": ["OLD"]},
            ],
        },
        env={"OLD": OLD},
    )


async def make_client(
    aiohttp_client: Any, mode: str = "enforce", public_url: str = PUBLIC
) -> tuple[TestClient[Any, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    client = await aiohttp_client(create_app(v3_config(mode, public_url), registry))
    return client, registry


async def send(
    client: TestClient[Any, Any], headers: Any, body: dict[str, Any] | None = None, path: str = "/webhook/a"
) -> tuple[int, str]:
    h = CIMultiDict(headers)
    h["Content-Type"] = "application/json"
    resp = await client.post(path, data=encode(body or call_initiated()), headers=h)
    return resp.status, (await resp.json())["outcome"]


def sig_failures(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("vobiz_webhook_signature_failures_allowed_total", {"trunk": "a"})


def admitted(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("vobiz_call_attempts_total", {"trunk": "a", "result": "admitted"})


async def test_correct_signature_accepted(aiohttp_client: Any) -> None:
    client, registry = await make_client(aiohttp_client)
    assert await send(client, v3_headers(SECRET_A, PUBLIC + "/webhook/a", "n-1")) == (200, "accepted")
    assert outcomes(registry) == {("a", "accepted"): 1.0}
    assert admitted(registry) == 1.0


async def test_query_string_is_not_signed_and_trailing_slash_ignored(aiohttp_client: Any) -> None:
    client, _ = await make_client(aiohttp_client, public_url=PUBLIC + "/")
    headers = v3_headers(SECRET_A, PUBLIC + "/webhook/a", "n-q")
    assert await send(client, headers, path="/webhook/a?source=vobiz") == (200, "accepted")


async def test_resolved_by_trunk_id_signs_the_webhook_path(aiohttp_client: Any) -> None:
    client, registry = await make_client(aiohttp_client)
    assert await send(client, v3_headers(SECRET_A, PUBLIC + "/webhook", "n-2"), path="/webhook") == (200, "accepted")
    assert outcomes(registry) == {("a", "accepted"): 1.0}


async def test_previous_secret_accepted_and_counted(aiohttp_client: Any) -> None:
    client, registry = await make_client(aiohttp_client)
    assert await send(client, v3_headers(OLD, PUBLIC + "/webhook/a", "n-old")) == (200, "accepted")
    assert registry.get_sample_value("vobiz_webhook_previous_secret_used_total", {"trunk": "a"}) == 1.0


@pytest.mark.parametrize(
    ("case", "headers", "outcome"),
    [
        ("wrong_url_host", v3_headers(SECRET_A, "https://evil.example.com/webhook/a", "n"), "invalid_signature"),
        ("wrong_url_path", v3_headers(SECRET_A, PUBLIC + "/webhook/b", "n"), "invalid_signature"),
        ("wrong_url_scheme", v3_headers(SECRET_A, "http://hooks.example.com/webhook/a", "n"), "invalid_signature"),
        ("url_with_query", v3_headers(SECRET_A, PUBLIC + "/webhook/a?x=1", "n"), "invalid_signature"),
        (
            "wrong_nonce",
            {**v3_headers(SECRET_A, PUBLIC + "/webhook/a", "n-signed"), V3_NONCE_HEADER: "n-sent"},
            "invalid_signature",
        ),
        ("wrong_secret", v3_headers(SECRET_B, PUBLIC + "/webhook/a", "n"), "invalid_signature"),
        (
            "hex_instead_of_base64",
            {V3_SIGNATURE_HEADER: "ab" * 32, V3_NONCE_HEADER: "n"},
            "invalid_signature",
        ),
        (
            "nonce_missing",
            {V3_SIGNATURE_HEADER: v3_headers(SECRET_A, PUBLIC + "/webhook/a", "")[V3_SIGNATURE_HEADER]},
            "invalid_signature",
        ),
        ("signature_missing", {V3_NONCE_HEADER: "n"}, "missing_signature"),
        ("nothing", {}, "missing_signature"),
        ("body_signature_only", {SIGNATURE_HEADER: "00" * 32}, "missing_signature"),
    ],
)
async def test_wrong_signature_is_401(aiohttp_client: Any, case: str, headers: dict[str, str], outcome: str) -> None:
    client, registry = await make_client(aiohttp_client)
    before = call_samples(registry)
    assert await send(client, headers) == (401, outcome)
    assert outcomes(registry) == {("a", outcome): 1.0}
    assert call_samples(registry) == before


async def test_repeated_nonce_header_is_401(aiohttp_client: Any) -> None:
    client, _ = await make_client(aiohttp_client)
    good = v3_headers(SECRET_A, PUBLIC + "/webhook/a", "n")
    headers = [
        (V3_SIGNATURE_HEADER, good[V3_SIGNATURE_HEADER]),
        (V3_NONCE_HEADER, "n"),
        (V3_NONCE_HEADER, "n"),
    ]
    assert await send(client, headers) == (401, "invalid_signature")


async def test_reused_nonce_is_duplicate(aiohttp_client: Any) -> None:
    """A captured request replayed with a different body (new CallUUID, new request id) still
    carries the captured nonce: the nonce is what the signature covers, so it is a duplicate."""
    client, registry = await make_client(aiohttp_client)
    headers = v3_headers(SECRET_A, PUBLIC + "/webhook/a", "nonce-once")
    assert await send(client, headers) == (200, "accepted")
    before = call_samples(registry)
    assert await send(client, headers, call_initiated()) == (200, "duplicate")
    assert await send(client, headers, call_initiated(Allowed=False, Reason="KYC pending")) == (200, "duplicate")
    assert call_samples(registry) == before
    assert outcomes(registry) == {("a", "accepted"): 1.0, ("a", "duplicate"): 2.0}


async def test_body_is_not_covered(aiohttp_client: Any) -> None:
    """What the scheme does not protect (docs/security.md): with a fresh, validly signed nonce,
    any body is accepted. This pins the documented limitation."""
    client, registry = await make_client(aiohttp_client)
    forged = call_initiated(Allowed=False, Reason="Insufficient balance: 0.50 INR")
    assert await send(client, v3_headers(SECRET_A, PUBLIC + "/webhook/a", "n-f"), forged) == (200, "accepted")
    assert (
        registry.get_sample_value("vobiz_call_rejections_total", {"trunk": "a", "reason": "insufficient_balance"})
        == 1.0
    )


async def test_report_mode_accepts_failures_and_counts_them(aiohttp_client: Any) -> None:
    client, registry = await make_client(aiohttp_client, "report")
    assert await send(client, {}) == (200, "accepted")  # missing
    assert await send(client, v3_headers(SECRET_B, PUBLIC + "/webhook/a", "n-r1")) == (200, "accepted")  # invalid
    assert await send(client, v3_headers(SECRET_A, PUBLIC + "/webhook/a", "n-r2")) == (200, "accepted")  # good
    assert sig_failures(registry) == 2.0
    assert outcomes(registry) == {("a", "accepted"): 3.0}
    assert admitted(registry) == 3.0
    # As with the body scheme, a reused nonce is a duplicate, verified or not.
    assert await send(client, v3_headers(SECRET_B, PUBLIC + "/webhook/a", "n-r1")) == (200, "duplicate")
    # Requests without a nonce are told apart by their body, not all taken for one another ...
    assert await send(client, {}) == (200, "accepted")
    # ... and the same unsigned body again is a duplicate (as with the body scheme).
    body = call_initiated()
    assert await send(client, {}, body) == (200, "accepted")
    assert await send(client, {}, body) == (200, "duplicate")
    assert sig_failures(registry) == 6.0  # every missing/invalid one (counted before de-duplication)
    assert outcomes(registry) == {("a", "accepted"): 5.0, ("a", "duplicate"): 2.0}


async def test_off_mode_verifies_nothing_but_still_dedupes_nonces(aiohttp_client: Any) -> None:
    client, registry = await make_client(aiohttp_client, "off")
    assert await send(client, {}) == (200, "accepted")
    assert await send(client, {}) == (200, "accepted")
    assert await send(client, {V3_SIGNATURE_HEADER: "garbage", V3_NONCE_HEADER: "n-o"}) == (
        200,
        "accepted",
    )
    assert await send(client, {V3_NONCE_HEADER: "n-o"}) == (200, "duplicate")
    assert sig_failures(registry) is not None
    assert sig_failures(registry) == 0.0
    assert outcomes(registry) == {("a", "accepted"): 3.0, ("a", "duplicate"): 1.0}


def test_public_url_is_required() -> None:
    from exporter.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(
            {"signature": {"scheme": "url-nonce-v3"}, "trunks": [{"name": "a", "secret": SECRET_A}]},
            source="c.yaml",
            env={},
        )
    assert err.value.problems == ["c.yaml: signature.public_url: is required with scheme url-nonce-v3"]
