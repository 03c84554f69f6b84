"""The webhook pipeline without I/O: what was on the wire in, a decision out.

``Pipeline.decide`` turns one request (method, path, headers, the raw bytes the signature
covers) and the time into either a :class:`Verdict`-carrying :class:`Admitted` (the event to
de-duplicate and record) or a :class:`Refused` with its outcome. No aiohttp in here, no metric,
no log, no await: the checks run in the order of docs/contract.md ("Answers and order of
checks"), one small function each, and the adaptor in ``app`` does the reading, the store
round trip and the recording. So the order of checks is tested on this pure function, and a
reload can never interleave with a decision (it runs in one step of the event loop).

The checks before the body (source, method, declared size) are here too, as functions of the
peer address and the headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from . import events
from .config import Config, Trunk
from .dedupe import CallUpdate, event_key, material_key
from .events import CallInitiated, Hangup, MalformedPayload
from .protocol import EVENT_HEADER, REQUEST_ID_HEADER, V3_NONCE_HEADER, V3_SIGNATURE_HEADER
from .signature import Verdict, url_nonce_message, verify

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# The headers as the HTTP layer hands them over (a case-insensitive multidict: a repeated
# signature header must stay visible). multidict is the HTTP-free container aiohttp uses.
Headers = CIMultiDictProxy[str] | CIMultiDict[str]


class Inbound(NamedTuple):
    """One webhook request as the pipeline sees it, body already read. (NamedTuples: built
    per request, and a tuple is the cheapest immutable record to build.)"""

    method: str
    path: str  # the raw path without the query: url-nonce-v3 signs it ("" for other schemes)
    trunk_name: str | None  # from /webhook/{trunk}; None on /webhook
    headers: Headers
    raw: bytes  # the signed bytes: the body (POST) or the raw query string (GET)


class Refused(Exception):
    """The request stops here with ``outcome``. ``trunk`` is the resolved trunk (None before);
    ``verdict`` is the signature verdict once verified (for report-mode counting)."""

    def __init__(self, outcome: str, trunk: Trunk | None = None, why: str = "", verdict: Verdict | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.trunk = trunk
        self.why = why
        self.verdict = verdict


class Admitted(NamedTuple):
    """A verified, parsed, fresh event: de-duplicate it on ``keys``, then apply ``call`` and
    record it."""

    trunk: Trunk
    event: events.Event
    event_name: str  # call_initiated, hangup, or other:<type>
    keys: tuple[bytes, bytes]
    verdict: Verdict  # OK, OK_PREVIOUS, or (report mode) MISSING / INVALID; OK when mode is off
    event_header_disagrees: bool
    call: CallUpdate | None  # the active-call change once it is known not to be a duplicate


class Pipeline:
    """The decisions for one configuration (a reload builds a new one)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.by_name: dict[str, Trunk] = {t.name: t for t in config.trunks}
        self.by_id: dict[str, Trunk] = {t.id: t for t in config.trunks if t.id is not None}

    # --- before the body ---------------------------------------------------------------------

    def check_before_body(
        self, method: str, content_length: int | None, peer: str | None, forwarded: Sequence[str]
    ) -> None:
        """Source allowlist, method and declared body size: what can be refused unread."""
        webhook = self.config.webhook
        if webhook.allowed_sources:
            client = client_address(peer, forwarded, webhook.trusted_proxies)
            if client is None or not any(client in net for net in webhook.allowed_sources):
                raise Refused("forbidden_source", why=f"source {client}")
        if method not in ("POST", "GET"):
            raise Refused("method_not_allowed", why=f"method {safe_method(method)}")
        if method == "POST" and content_length is not None and content_length > webhook.max_body_bytes:
            raise Refused("too_large", why=f"Content-Length {content_length}")

    # --- after the body ----------------------------------------------------------------------

    def decide(self, req: Inbound, now: float) -> Admitted:
        """Every check from trunk resolution to the replay window. Raises Refused."""
        trunk, fields = self.resolve_trunk(req)
        verdict: Verdict | None = None
        try:
            check_trunk_method(req, trunk)
            verdict, material = self.verify_signature(req, trunk)
            if fields is None:
                fields = self.parse_fields(req)
            header_event = req.headers.get(EVENT_HEADER)
            event = parse_event(fields, header_event)
            self.check_trunk_id(event, trunk)
            self.check_replay_window(event, now)
        except Refused as refused:
            refused.trunk, refused.verdict = trunk, verdict
            raise
        event_name = event_name_of(event)
        request_id = req.headers.get(REQUEST_ID_HEADER) or event.request_id or event.call_uuid or ""
        keys = (event_key(trunk.name, event_name, request_id), material_key(trunk.name, material))
        disagrees = events.event_disagrees(fields, header_event)
        update = call_update(event, trunk.name, now)
        return _new_tuple(Admitted, (trunk, event, event_name, keys, verdict, disagrees, update))

    def resolve_trunk(self, req: Inbound) -> tuple[Trunk, dict[str, Any] | None]:
        """By the URL's name, else by the payload's TrunkID (which needs the body parsed: the
        fields are returned so they are not parsed twice)."""
        if req.trunk_name is not None:
            trunk = self.by_name.get(req.trunk_name)
            if trunk is None:
                raise Refused("unknown_trunk", why="no trunk of that name")
            return trunk, None
        fields = self.parse_fields(req)
        trunk_id = events.payload_trunk_id(fields)
        found = self.by_id.get(trunk_id) if trunk_id is not None else None
        if found is None:
            raise Refused("unknown_trunk", why="no trunk with that TrunkID")
        return found, fields

    def parse_fields(self, req: Inbound) -> dict[str, Any]:
        try:
            if req.method == "GET":
                return events.parse_form(req.raw)
            return events.parse_body(req.raw, req.headers.get("Content-Type") or "")
        except MalformedPayload as exc:
            raise Refused("malformed", why=exc.reason) from None

    def verify_signature(self, req: Inbound, trunk: Trunk) -> tuple[Verdict, bytes]:
        """(verdict, the signed material to de-duplicate on). Enforce mode refuses failures."""
        sig = self.config.signature
        if sig.scheme == "body":
            material = req.raw
            verdict = (
                Verdict.OK
                if sig.mode == "off"
                else verify(trunk.secrets, req.raw, req.headers.getall(sig.header, ()), sig.encoding)
            )
        else:
            material = v3_material(req.headers, req.raw)
            verdict = Verdict.OK if sig.mode == "off" else verify_v3(req, trunk, sig.public_url or "")
        if sig.mode == "enforce" and verdict not in (Verdict.OK, Verdict.OK_PREVIOUS):
            raise Refused(verdict.value)
        return verdict, material

    def check_trunk_id(self, event: events.Event, trunk: Trunk) -> None:
        """A TrunkID of another configured trunk, also when this trunk has no id of its own."""
        payload_id = event.trunk_id
        if payload_id is not None and payload_id != trunk.id and (trunk.id is not None or payload_id in self.by_id):
            raise Refused("trunk_mismatch")

    def check_replay_window(self, event: events.Event, now: float) -> None:
        tolerance = self.config.signature.replay_tolerance
        if tolerance and event.timestamp is not None and abs(now - event.timestamp) > tolerance:
            raise Refused("stale", why=f"timestamp {now - event.timestamp:.0f}s from now")


def check_trunk_method(req: Inbound, trunk: Trunk) -> None:
    if req.method == "GET" and trunk.method != "GET":
        raise Refused("method_not_allowed", why="trunk not set to method GET")


def parse_event(fields: dict[str, Any], header_event: str | None) -> events.Event:
    try:
        return events.normalise(fields, header_event)
    except MalformedPayload as exc:
        raise Refused("malformed", why=exc.reason) from None


def event_name_of(event: events.Event) -> str:
    if isinstance(event, CallInitiated):
        return events.CALL_INITIATED
    if isinstance(event, Hangup):
        return events.HANGUP
    return "other:" + event.event


def call_update(event: events.Event, trunk: str, now: float) -> CallUpdate | None:
    """A Hangup ends its call; an admitted CallInitiated starts one; nothing else changes calls.
    (Built as the plain tuple it is: a NamedTuple's own constructor costs 3x as much.)"""
    if isinstance(event, Hangup):
        return _new_tuple(CallUpdate, (False, trunk, event.call_uuid, now))
    if isinstance(event, CallInitiated) and event.allowed:
        return _new_tuple(CallUpdate, (True, trunk, event.call_uuid, now))
    return None


_new_tuple = tuple.__new__


def verify_v3(req: Inbound, trunk: Trunk, public_url: str) -> Verdict:
    """url-nonce-v3: base64 HMAC of "<public URL without query>.<nonce>". The body is not covered."""
    nonces = req.headers.getall(V3_NONCE_HEADER, ())
    signatures = req.headers.getall(V3_SIGNATURE_HEADER, ())
    if not signatures:
        return Verdict.MISSING
    if len(nonces) != 1 or not nonces[0]:
        return Verdict.INVALID
    try:
        message = url_nonce_message(public_url, req.path, nonces[0])
    except UnicodeEncodeError:  # undecodable header bytes (surrogate-escaped): cannot match
        return Verdict.INVALID
    return verify(trunk.secrets, message, signatures, "base64")


def v3_material(headers: Headers, raw: bytes) -> bytes:
    """What url-nonce-v3 de-duplicates on: the nonce (the only signed, per-request value), so a
    reused nonce is a duplicate. Without exactly one nonce (report/off modes) it is the raw body,
    as with the body scheme, so unsigned requests are not all taken for one another."""
    nonces = headers.getall(V3_NONCE_HEADER, ())
    if len(nonces) == 1 and nonces[0]:
        return b"nonce:" + nonces[0].encode("utf-8", "surrogatepass")
    return raw


def client_address(
    peer: str | None, forwarded: Sequence[str], trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> Address | None:
    """The client address: X-Forwarded-For is believed only when the peer is a trusted proxy,
    walking from the right past trusted hops (the leftmost entries are client-supplied)."""
    if peer is None:
        return None
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if not trusted or not any(addr in net for net in trusted):
        return addr
    hops = [h.strip() for value in forwarded for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            hop_addr = ipaddress.ip_address(hop)
        except ValueError:
            return None
        if not any(hop_addr in net for net in trusted):
            return hop_addr
    return addr


def safe_method(method: str) -> str:
    """A method name fit for a log line (aiohttp accepts any token as a method)."""
    return method if method.isalpha() and len(method) <= 16 else "<other>"
