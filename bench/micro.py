"""Per-request costs of the pieces of the webhook pipeline, on the bench's own request bodies.

Answers "where would a faster library earn its place": orjson against the stdlib parse the
exporter does (with the duplicate-key hook docs/contract.md requires), hmac.new against the one-shot
hmac.digest, and the exporter's own parse + normalise + dedupe keys, per request in µs."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter import events
from exporter.dedupe import event_key, material_key


def bodies(path: Path, n: int) -> list[bytes]:
    out: list[bytes] = []
    with path.open("rb") as f:
        while len(out) < n:
            head = f.read(8)
            if not head:
                break
            req = f.read(int(head))
            out.append(req.split(b"\r\n\r\n", 1)[1])
    return out


def orjson_guarded(raw: bytes) -> object:
    """A sketch for events.parse_json_body (not used by the exporter): orjson, plus docs/contract.md's
    duplicate-key rule checked in C-speed string operations. For a flat object without
    backslashes, every colon outside strings ends a key, so the key count must equal len(dict);
    anything else (escapes, nesting, orjson refusing) goes to the stdlib parser."""
    import orjson

    if b"\\" not in raw:
        outside = b"".join(raw.split(b'"')[::2])
        if outside.count(b"{") == 1 and b"[" not in outside:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict) and outside.count(b":") == len(value):
                return value
    return events.parse_json_body(raw)


def per_call_us(fn: Callable[[bytes], object], items: list[bytes], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for b in items:
            fn(b)
        best = min(best, time.perf_counter() - t)
    return round(best / len(items) * 1e6, 2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=Path, required=True)
    p.add_argument("-n", type=int, default=20000)
    a = p.parse_args()
    items = bodies(a.requests, a.n)
    secret = b"bench-secret-0000-" + b"x" * 24
    out: dict[str, object] = {"bodies": len(items), "mean_body_bytes": sum(map(len, items)) // len(items)}
    out["json_loads_duplicate_hook_us"] = per_call_us(
        lambda b: json.loads(b, object_pairs_hook=events._reject_duplicates), items
    )
    out["json_loads_plain_us"] = per_call_us(json.loads, items)
    try:
        import orjson

        out["orjson_loads_us"] = per_call_us(orjson.loads, items)
        for b in items:  # the sketch below must agree with the exporter's parser on these bodies
            assert orjson_guarded(b) == events.parse_json_body(b)
        out["orjson_with_duplicate_key_guard_us"] = per_call_us(orjson_guarded, items)
    except ImportError:
        out["orjson_loads_us"] = None
    out["exporter_parse_json_body_us"] = per_call_us(events.parse_json_body, items)
    parsed = [events.parse_json_body(b) for b in items]
    t = time.perf_counter()
    for f in parsed:
        events.normalise(f, None)
    out["exporter_normalise_us"] = round((time.perf_counter() - t) / len(parsed) * 1e6, 2)
    out["hmac_new_digest_us"] = per_call_us(lambda b: hmac.new(secret, b, hashlib.sha256).digest(), items)
    out["hmac_digest_oneshot_us"] = per_call_us(lambda b: hmac.digest(secret, b, "sha256"), items)
    out["dedupe_keys_us"] = per_call_us(
        lambda b: (event_key("t0001", "hangup", "7ed4d57b-1e2f-4b89-a14c-343c1027c4d1"), material_key("t0001", b)),
        items,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
