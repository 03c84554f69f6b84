"""Configuration: pure parsing and validation of the YAML file into frozen dataclasses.

The schema is declared once, on the dataclasses below: each key's default (as written in YAML),
parser (its constraint) and one-line doc (see exporter/schema.py). Every problem is collected and
reported together (as ``FILE: key.path: why``), so an operator fixes a broken file in one pass.
Values of secrets never appear in a problem or a repr.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import yaml

from .schema import REQUIRED, Invalid, Key, Reader, custom, key, key_names, required_keys, section

TRUNK_NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
RESERVED_TRUNK = "unknown"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_REGION_RE = re.compile(r"^[A-Z]{2}$")
# Prometheus' duration grammar (model.ParseDuration): integer components in descending unit
# order, each unit at most once, e.g. 1h30m, 1d, 90s, 1w2d, 500ms. A year is 365 days.
_DURATION_UNITS = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_DURATION_RE = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?"
    r"(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)
# Accepted before 0.2 and kept for compatibility: one decimal number with one unit (``1.5h``).
_LEGACY_DURATION_RE = re.compile(r"^(\d+\.\d+)(ms|s|m|h|d|w|y)$")
_DURATION_HELP = "must be a duration like 500ms, 90s, 15m, 1h30m or 1d (or 0)"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` are ``FILE: key: why`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ReloadError(Exception):
    """A reload was refused; the old configuration stays in force."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """``host:port``; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def bind_host(self) -> str | None:
        return self.host or None


# --- scalar parsers: each returns the value or raises ValueError with a reason ----------------


def parse_duration(value: object) -> float:
    """A Prometheus duration (``500ms``, ``90s``, ``1h30m``, ``1d``, ``1w``) or a bare ``0``;
    returns seconds. ``1.5h`` (one decimal number, one unit) is still accepted, as before."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_HELP)
    if isinstance(value, int) and value == 0:
        return 0.0
    if isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0.0
        m = _DURATION_RE.match(text)
        if text and m:
            return sum(int(n) * _DURATION_UNITS[unit] for unit, n in m.groupdict().items() if n is not None)
        legacy = _LEGACY_DURATION_RE.match(text)
        if legacy:
            return float(legacy.group(1)) * _DURATION_UNITS[legacy.group(2)]
    raise ValueError(_DURATION_HELP)


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be a duration greater than 0")
    return seconds


def parse_listen_address(value: object) -> ListenAddress:
    """``:9612``, ``127.0.0.1:9612`` or ``[::1]:9612``."""
    if not isinstance(value, str):
        raise ValueError("must be a string host:port")
    host, sep, port_s = value.rpartition(":")
    if not sep:
        raise ValueError("must be host:port, e.g. :9612 or 127.0.0.1:9612")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError("port must be a number from 0 to 65535")
    if host and not re.fullmatch(r"[A-Za-z0-9.:_-]+", host):
        raise ValueError("host is not a valid address or name")
    return ListenAddress(host, int(port_s))


def _parse_network(value: object) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError("must be a CIDR string like 10.0.0.0/8")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError("is not a valid CIDR like 10.0.0.0/8") from None


def _networks(value: object) -> tuple[IPNetwork, ...]:
    """A list of CIDRs; each bad item is a problem of its own (``key[i]``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    out: list[IPNetwork] = []
    bad: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        try:
            out.append(_parse_network(item))
        except ValueError as exc:
            bad.append((f"[{i}]", str(exc)))
    if bad:
        raise Invalid(bad)
    return tuple(out)


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError("must be a positive number")
    return float(value)


def _string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


def _choice(literal: object) -> Callable[[object], Any]:
    """One of the values of a ``Literal`` type, so the choices are written once (in the type)."""
    choices = get_args(literal)

    def conv(value: object) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return str(value)

    return conv


def _matching(pattern: re.Pattern[str], why: str) -> Callable[[object], str]:
    """A string that ``pattern`` matches whole."""

    def conv(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(why)
        return value

    return conv


_header_name = _matching(re.compile(r"[A-Za-z0-9-]{1,128}"), "must be an HTTP header name")
_trunk_name = _matching(TRUNK_NAME_RE, "must match [a-z0-9_-]{1,64}")
_currency = _matching(CURRENCY_RE, "must be an upper-case 3-letter code")


def _trunk_id(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ValueError("must be a non-empty string of at most 128 characters")
    return value


# --- the schema: one declaration per key (default as written in YAML, parser, doc) ------------

SignatureMode = Literal["enforce", "report", "off"]
SignatureScheme = Literal["body", "url-nonce-v3"]
SignatureEncoding = Literal["hex", "base64"]
DedupeBackend = Literal["memory", "redis"]
DedupeOnError = Literal["accept", "reject"]
RedisMode = Literal["standalone", "cluster"]
Method = Literal["POST", "GET"]


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """The webhook listener's own certificate: both files or neither, read at start (a change needs a restart)."""

    cert_file: str = key(
        REQUIRED, _string, "with `webhook.tls`: the certificate (PEM) of the webhook listener", path=True
    )
    key_file: str = key(REQUIRED, _string, "with `webhook.tls`: its unencrypted private key (PEM)", path=True)


@dataclass(frozen=True, slots=True)
class WebSection:
    listen_address: ListenAddress = key(":9612", parse_listen_address, "metrics listener")
    config_file: str | None = key(
        None,
        _string,
        "exporter-toolkit web config (TLS, basic auth); same as `--web.config.file`",
        path=True,
    )
    # Command-line flags only (with_overrides), not keys of the file.
    telemetry_path: str = "/metrics"
    enable_lifecycle: bool = False


@dataclass(frozen=True, slots=True)
class WebhookSection:
    listen_address: ListenAddress = key(
        ":9613", parse_listen_address, "webhook listener; the same as `web.listen_address` means one port"
    )
    max_body_bytes: int = key(65536, _positive_int, "larger bodies get 413, enforced while reading")
    read_timeout: float = key("10s", _positive_duration, "the whole body must arrive within this, else 408")
    keepalive_timeout: float = key("75s", parse_duration, "idle keep-alive connections close after this")
    max_in_flight: int = key(1000, _positive_int, "more concurrent webhook requests get 503 `overloaded`")
    allowed_sources: tuple[IPNetwork, ...] = key(
        [], _networks, "CIDRs allowed to send webhooks (empty: everyone); others get 403"
    )
    trusted_proxies: tuple[IPNetwork, ...] = key([], _networks, "CIDRs whose `X-Forwarded-For` is believed")
    # TLS on the webhook listener, for deployments without a terminating proxy.
    tls: TLSFiles | None = section(TLSFiles, None)


@dataclass(frozen=True, slots=True)
class SignatureSection:
    header: str = key("X-Vobiz-Signature", _header_name, "signature header name, as in the Vobiz console")
    encoding: SignatureEncoding = key(
        "hex", _choice(SignatureEncoding), "`hex` (any case, optional `sha256=` prefix) or `base64`"
    )
    mode: SignatureMode = key(
        "enforce", _choice(SignatureMode), "`enforce` (401), `report` (count failures, accept) or `off`"
    )
    replay_tolerance: float = key("15m", parse_duration, "max distance of the signed `Timestamp` from now; `0` = off")
    scheme: SignatureScheme = key(
        "body", _choice(SignatureScheme), "`body` or `url-nonce-v3` (see [docs/security.md](docs/security.md))"
    )
    public_url: str | None = key(None, _string, "this listener as the provider sees it (`url-nonce-v3` only)")


@dataclass(frozen=True, slots=True)
class DedupeSection:
    backend: DedupeBackend = key(
        "memory",
        _choice(DedupeBackend),
        "`memory` (one replica) or `redis` (several: [docs/replicas.md](docs/replicas.md))",
    )
    ttl: float = key("1h", _positive_duration, "how long a delivery is remembered; must be ≥ `replay_tolerance`")
    max_entries: int = key(1000000, _positive_int, "keys held (two per event); oldest evicted first")
    redis_url: str | None = key(
        None,
        _string,
        "`redis://host:6379/0`, `rediss://` for TLS; password in the URL or below",
        secret=True,
    )
    # Not a key: the value of the variable redis_password_env names.
    redis_password: str | None = field(default=None, repr=False)
    redis_password_env: str | None = key(None, _string, "environment variable holding the Redis password")
    redis_key_prefix: str = key(
        "vobiz:", _string, "key prefix in Redis (no `{` or `}`: every key carries the hash tag `{<trunk>}`)"
    )
    redis_timeout: float = key("500ms", _positive_duration, "connect and command timeout")
    redis_pool_size: int = key(10, _positive_int, "connection pool size (per node with a cluster)")
    on_error: DedupeOnError = key(
        "accept", _choice(DedupeOnError), "store failure: `accept` (count; may double count) or `reject` (503)"
    )
    redis_mode: RedisMode = key(
        "standalone",
        _choice(RedisMode),
        "`standalone` (one server, or a failover endpoint) or `cluster` (a Redis Cluster: `redis_url` names "
        "any node; [docs/replicas.md](docs/replicas.md))",
    )


@dataclass(frozen=True, slots=True)
class CallsSection:
    max_call_duration: float = key("4h", _positive_duration, "active calls older than this expire")


@dataclass(frozen=True, slots=True)
class DestinationsSection:
    """Opt-in per-destination-country metrics (off by default: no series change for anyone else)."""

    enabled: bool = key(False, _bool, "per-destination-country metrics (`vobiz_destination_*`, below)")
    max_countries: int = key(50, _positive_int, "distinct regions process-wide; new ones beyond are `other`")
    # trunk name -> ISO 3166-1 alpha-2 codes its admitted calls may go to; others are counted
    # in vobiz_destination_disallowed_total.
    allowed: Mapping[str, frozenset[str]] = custom(
        {},
        Key(
            "allowed",
            {},
            "`{trunk name: [IN, ...]}`: admitted calls to other regions count in `vobiz_destination_disallowed_total`",
        ),
    )


@dataclass(frozen=True, slots=True)
class MetricsSection:
    destinations: DestinationsSection = section(DestinationsSection, DestinationsSection())


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend ceiling per hour; only exported (``trunk_hourly_budget``), alerts compare spend with it."""

    amount: float = key(REQUIRED, _positive_number, "with `hourly_budget`: spend per hour, exported for spend alerts")
    currency: str = key(REQUIRED, _currency, "with `hourly_budget`: its upper-case 3-letter currency code, e.g. `INR`")


@dataclass(frozen=True, slots=True)
class Trunk:
    """One configured SIP trunk. ``secrets`` holds the current secret first, then previous ones."""

    name: str = key(REQUIRED, _trunk_name, "the `trunk` label; `[a-z0-9_-]{1,64}`; `unknown` is reserved")
    id: str | None = key(
        None, _trunk_id, "the provider's `TrunkID` (needed for `POST /webhook` routing and mismatch checks)"
    )
    secret: bytes = custom(
        b"",
        Key("secret", None, "the signing secret, inline (warned about: use `secret_env` or `secret_file`)"),
        Key(
            "secret_env",
            None,
            "environment variable holding the signing secret; one of `secret_env`, `secret_file` and `secret` "
            "is required (unless `signature.mode` is `off`)",
        ),
        Key("secret_file", None, "file holding the signing secret (re-read on reload; a trailing newline is cut)"),
        secret=True,
    )
    previous_secrets: tuple[bytes, ...] = custom(
        (),
        Key("previous_secrets_env", [], "rotated secrets (environment variables), still accepted and counted"),
        Key("previous_secrets_file", [], "rotated secrets (files), still accepted and counted"),
        secret=True,
    )
    method: Method = key("POST", _choice(Method), "`POST` or `GET`")
    max_concurrent_calls: int | None = key(None, _positive_int, "exported for capacity alerts")
    cps_limit: float | None = key(None, _positive_number, "exported (new calls per second)")
    hourly_budget: Budget | None = section(Budget, None)

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return (self.secret, *self.previous_secrets)


@dataclass(frozen=True, slots=True)
class Config:
    web: WebSection = section(WebSection, WebSection())
    webhook: WebhookSection = section(WebhookSection, WebhookSection())
    signature: SignatureSection = section(SignatureSection, SignatureSection())
    dedupe: DedupeSection = section(DedupeSection, DedupeSection())
    calls: CallsSection = section(CallsSection, CallsSection())
    metrics: MetricsSection = section(MetricsSection, MetricsSection())
    trunks: tuple[Trunk, ...] = section(Trunk, (), many=True)
    # Not keys of the file.
    source: str = "<memory>"
    warnings: tuple[str, ...] = ()

    def trunk_by_name(self, name: str) -> Trunk | None:
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None

    @property
    def single_listener(self) -> bool:
        """Both listeners on one address: one port serves everything."""
        return self.web.listen_address == self.webhook.listen_address

    def restart_fields(self) -> dict[str, object]:
        """What a reload cannot change (docs/contract.md, "Configuration"): a difference needs a restart."""
        return {
            "web.listen_address": self.web.listen_address,
            "webhook.listen_address": self.webhook.listen_address,
            "webhook.tls": self.webhook.tls,
            "dedupe.backend": self.dedupe.backend,
            "dedupe.redis_url": self.dedupe.redis_url,
            "dedupe.redis_key_prefix": self.dedupe.redis_key_prefix,
            "dedupe.redis_mode": self.dedupe.redis_mode,
        }


# --- the parser ---------------------------------------------------------------------------


class _Parser(Reader):
    """The schema's Reader, with what this file needs besides: the environment and the secrets."""

    def __init__(self, source: str, env: Mapping[str, str], base_dir: str) -> None:
        super().__init__(source, base_dir)
        self.env = env

    def read_secret_file(self, key: str, path: object) -> bytes | None:
        if not isinstance(path, str) or not path:
            self.problem(key, "must be a file path")
            return None
        full = path if os.path.isabs(path) else os.path.join(self.base_dir, path)
        try:
            with open(full, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            self.problem(key, f"cannot read the secret file ({exc.strerror})")
            return None
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        if not data:
            self.problem(key, "the secret file is empty")
            return None
        return data

    def read_secret_env(self, key: str, name: object) -> bytes | None:
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            # Never echo it: an operator may have pasted the secret itself here.
            self.problem(key, "must be the name of an environment variable, like VOBIZ_SECRET_MAIN")
            return None
        value = self.env.get(name)
        if not value:
            self.problem(key, f"environment variable {name} is not set or empty")
            return None
        return value.encode()

    def read_secret_inline(self, key: str, value: object) -> bytes | None:
        if not isinstance(value, str) or not value:
            self.problem(key, "must be a non-empty string")
            return None
        self.warnings.append(
            f"{self.source}: {key}: inline secret in the config file; use secret_env or secret_file outside demos"
        )
        return value.encode()


def _mapping_with(cls: type) -> str:
    return "must be a mapping with " + " and ".join(required_keys(cls))


def parse_config(
    raw: object,
    source: str = "<memory>",
    env: Mapping[str, str] | None = None,
    base_dir: str = ".",
) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    p = _Parser(source, os.environ if env is None else env, base_dir)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: (top level): must be a mapping"])
    p.unknown_keys(raw, "", key_names(Config))
    web = WebSection(**p.read(WebSection, p.section(raw, "web", WebSection), "web"))
    webhook = _parse_webhook(p, p.section(raw, "webhook", WebhookSection))
    signature = _parse_signature(p, p.section(raw, "signature", SignatureSection))
    dedupe = _parse_dedupe(p, p.section(raw, "dedupe", DedupeSection), signature)
    calls = CallsSection(**p.read(CallsSection, p.section(raw, "calls", CallsSection), "calls"))
    trunks = _parse_trunks(p, raw.get("trunks"), signature.mode)
    metrics = _parse_metrics(p, p.section(raw, "metrics", MetricsSection), {t.name for t in trunks})
    if p.problems:
        raise ConfigError(p.problems)
    return Config(web, webhook, signature, dedupe, calls, metrics, tuple(trunks), source, tuple(p.warnings))


def _parse_webhook(p: _Parser, h: Mapping[str, Any]) -> WebhookSection:
    tls = _parse_tls(p, h.get("tls"))
    return WebhookSection(tls=tls, **p.read(WebhookSection, h, "webhook"))


def _parse_tls(p: _Parser, raw: object) -> TLSFiles | None:
    prefix = "webhook.tls"
    t = p.mapping(raw, prefix, _mapping_with(TLSFiles))
    if t is None:
        return None
    p.unknown_keys(t, prefix, key_names(TLSFiles))
    files = {name: p.get(t, prefix, name, _string, "") for name in key_names(TLSFiles)}
    for name, path in files.items():
        if not path:
            if t.get(name) is None:  # absent or null: a TLS section that would silently serve HTTP
                p.problem(f"{prefix}.{name}", "is required")
        elif not os.path.isfile(path if os.path.isabs(path) else os.path.join(p.base_dir, path)):
            p.problem(f"{prefix}.{name}", "file does not exist")
    if not all(files.values()):
        return None
    return TLSFiles(**{name: p.resolve(path) for name, path in files.items()})


def _parse_signature(p: _Parser, s: Mapping[str, Any]) -> SignatureSection:
    signature = SignatureSection(**p.read(SignatureSection, s, "signature"))
    if signature.public_url is not None and not re.match(r"^https?://[^/\s]+", signature.public_url):
        p.problem("signature.public_url", "must be an absolute http(s) URL")
    if signature.scheme == "url-nonce-v3" and signature.public_url is None:
        p.problem("signature.public_url", "is required with scheme url-nonce-v3")
    return signature


def _parse_dedupe(p: _Parser, d: Mapping[str, Any], signature: SignatureSection) -> DedupeSection:
    # The Redis URL and the password's variable come first: their problems are listed first.
    first = {name: p.value(DedupeSection, d, "dedupe", name) for name in ("redis_password_env", "redis_url")}
    if first["redis_url"] is not None and not re.match(r"^(redis|rediss|unix)://", first["redis_url"]):
        p.problem("dedupe.redis_url", "must start with redis://, rediss:// or unix://")
    env_name = first["redis_password_env"]
    dedupe = DedupeSection(
        redis_password=(p.env.get(env_name) or None) if env_name is not None else None,
        **first,
        **p.read(DedupeSection, d, "dedupe", skip=first),
    )
    for check in (_check_key_prefix, _check_cluster_url, _check_backend_url):
        check(p, dedupe)
    if signature.replay_tolerance and dedupe.ttl < signature.replay_tolerance:
        p.problem("dedupe.ttl", "must be >= signature.replay_tolerance, or a replayed event outlives its dedupe key")
    return dedupe


def _check_key_prefix(p: _Parser, dedupe: DedupeSection) -> None:
    if "{" in dedupe.redis_key_prefix or "}" in dedupe.redis_key_prefix:
        # The keys carry the hash tag {trunk}: a brace in the prefix would move the tag.
        p.problem("dedupe.redis_key_prefix", "must not contain { or } (the keys carry the hash tag {trunk})")


def _check_cluster_url(p: _Parser, dedupe: DedupeSection) -> None:
    url = dedupe.redis_url
    if dedupe.redis_mode != "cluster" or url is None:
        return
    if url.startswith("unix://") or re.search(r"/[1-9][0-9]*/?(\?|$)", url):
        p.problem("dedupe.redis_url", "redis_mode cluster needs redis:// or rediss:// and database 0")


def _check_backend_url(p: _Parser, dedupe: DedupeSection) -> None:
    if dedupe.backend == "redis" and dedupe.redis_url is None:
        p.problem("dedupe.redis_url", "is required with backend redis")


def _parse_metrics(p: _Parser, m: Mapping[str, Any], trunk_names: set[str]) -> MetricsSection:
    prefix = "metrics.destinations"
    d = p.mapping(m.get("destinations"), prefix)
    if d is None:
        return MetricsSection()
    p.unknown_keys(d, prefix, key_names(DestinationsSection))
    allowed = _parse_allowed(p, d.get("allowed"), trunk_names)
    return MetricsSection(DestinationsSection(allowed=allowed, **p.read(DestinationsSection, d, prefix)))


def _parse_allowed(p: _Parser, raw: object, trunk_names: set[str]) -> dict[str, frozenset[str]]:
    prefix = "metrics.destinations.allowed"
    allowed = p.mapping(raw, prefix, "must be a mapping of trunk name to a list of country codes") or {}
    out: dict[str, frozenset[str]] = {}
    for name, codes in allowed.items():
        if name not in trunk_names:
            p.problem(f"{prefix}.{name}", "is not a configured trunk name")
        else:
            out[name] = _regions(p, f"{prefix}.{name}", codes)
    return out


def _regions(p: _Parser, key: str, codes: object) -> frozenset[str]:
    from .destinations import known_region

    regions = set()
    for i, code in enumerate(p.str_list(key, codes)):
        if not _REGION_RE.match(code) or not known_region(code):
            p.problem(f"{key}[{i}]", f"{code!r} is not an ISO 3166-1 alpha-2 region code (e.g. IN)")
        else:
            regions.add(code)
    return frozenset(regions)


@dataclass(slots=True)
class _Seen:
    """Names and ids of the trunks read so far: each must be unique."""

    names: set[str]
    ids: set[str]


def _parse_trunks(p: _Parser, raw: object, mode: str) -> list[Trunk]:
    if raw is None or raw == []:
        p.problem("trunks", "at least one trunk is required")
    if not isinstance(raw, list):
        if raw is not None:
            p.problem("trunks", "must be a list of trunks")
        return []
    seen = _Seen(set(), set())
    trunks = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            p.problem(f"trunks[{i}]", "must be a mapping")
        else:
            trunks.append(_parse_trunk(p, t, f"trunks[{i}]", mode, seen))
    return trunks


def _parse_trunk(p: _Parser, t: Mapping[str, Any], key: str, mode: str, seen: _Seen) -> Trunk:
    p.unknown_keys(t, key, key_names(Trunk))
    name = _trunk_unique_name(p, t, key, seen.names)
    trunk_id = _trunk_unique_id(p, t, key, seen.ids)
    secret = _trunk_secret(p, t, key, mode)
    previous = _previous_secrets(p, t, key)
    limits = p.read(Trunk, t, key, skip=("name", "id"))  # method, max_concurrent_calls, cps_limit
    budget = _parse_budget(p, t.get("hourly_budget"), f"{key}.hourly_budget")
    return Trunk(name, trunk_id, secret or b"", previous, hourly_budget=budget, **limits)


def _trunk_unique_name(p: _Parser, t: Mapping[str, Any], key: str, names: set[str]) -> str:
    name: str | None = p.value(Trunk, t, key, "name")
    if name is None:
        return ""
    if name == RESERVED_TRUNK:
        p.problem(f"{key}.name", f'"{RESERVED_TRUNK}" is reserved for unresolved requests')
    elif name in names:
        p.problem(f"{key}.name", f'duplicate name "{name}"')
    names.add(name)
    return name


def _trunk_unique_id(p: _Parser, t: Mapping[str, Any], key: str, ids: set[str]) -> str | None:
    trunk_id: str | None = p.value(Trunk, t, key, "id")
    if trunk_id is None:
        return None
    if trunk_id in ids:
        p.problem(f"{key}.id", f'duplicate id "{trunk_id}"')
    ids.add(trunk_id)
    return trunk_id


def _trunk_secret(p: _Parser, t: Mapping[str, Any], key: str, mode: str) -> bytes | None:
    readers = {"secret": p.read_secret_inline, "secret_env": p.read_secret_env, "secret_file": p.read_secret_file}
    sources = [k for k in readers if t.get(k) is not None]
    if len(sources) > 1:
        p.problem(f"{key}.secret_env", "set only one of secret_env, secret_file and secret")
    elif not sources and mode != "off":
        p.problem(f"{key}.secret_env", "a secret is required: set secret_env or secret_file")
    elif sources:
        return readers[sources[0]](f"{key}.{sources[0]}", t[sources[0]])
    return None


def _previous_secrets(p: _Parser, t: Mapping[str, Any], key: str) -> tuple[bytes, ...]:
    previous: list[bytes] = []
    for name, read in (("previous_secrets_env", p.read_secret_env), ("previous_secrets_file", p.read_secret_file)):
        for j, item in enumerate(p.str_list(f"{key}.{name}", t.get(name))):
            value = read(f"{key}.{name}[{j}]", item)
            if value is not None:
                previous.append(value)
    return tuple(previous)


def _parse_budget(p: _Parser, raw: object, prefix: str) -> Budget | None:
    b = p.mapping(raw, prefix, _mapping_with(Budget))
    if b is None:
        return None
    p.unknown_keys(b, prefix, key_names(Budget))
    amount = p.get(b, prefix, "amount", _positive_number, 0.0)
    if b.get("amount") is None:  # absent or null: not a budget quietly dropped
        p.problem(f"{prefix}.amount", "is required")
    try:
        currency = _currency(b.get("currency"))
    except ValueError as exc:
        p.problem(f"{prefix}.currency", str(exc))
        return None
    return Budget(amount, currency) if amount > 0 else None


def read_yaml(path: str) -> object:
    """Read a YAML file. Raises ConfigError naming the file and line, never quoting the content:
    a YAML error message can quote the offending line, which may hold a secret or a hash."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: (file): cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: (file): not UTF-8 text"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError([f"{path}: {where}: invalid YAML"]) from None


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML file. Raises ConfigError (with every problem)."""
    raw = read_yaml(path)
    return parse_config(raw, source=path, env=env, base_dir=os.path.dirname(os.path.abspath(path)))


def with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Apply command-line flags (which win over the file) to a parsed config."""
    web = config.web
    webhook = config.webhook
    if overrides.get("web.listen_address") is not None:
        web = replace(web, listen_address=overrides["web.listen_address"])
    if overrides.get("web.config_file") is not None:
        web = replace(web, config_file=overrides["web.config_file"])
    if overrides.get("web.telemetry_path") is not None:
        web = replace(web, telemetry_path=overrides["web.telemetry_path"])
    if overrides.get("web.enable_lifecycle") is not None:
        web = replace(web, enable_lifecycle=bool(overrides["web.enable_lifecycle"]))
    if overrides.get("webhook.listen_address") is not None:
        webhook = replace(webhook, listen_address=overrides["webhook.listen_address"])
    return replace(config, web=web, webhook=webhook)


def summary(config: Config) -> str:
    """One line for check-config and start-up logs; never a secret."""
    names = ",".join(t.name for t in config.trunks)
    return (
        f"{config.source}: OK: {len(config.trunks)} trunk(s) [{names}], "
        f"signature {config.signature.scheme}/{config.signature.mode}, "
        f"dedupe {config.dedupe.backend}, metrics on {config.web.listen_address}, "
        f"webhooks on {config.webhook.listen_address}"
    )
