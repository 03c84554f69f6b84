"""Configuration: pure parsing and validation of the YAML file into frozen dataclasses.

Every problem is collected and reported together (as ``FILE: key.path: why``), so an operator
fixes a broken file in one pass. Values of secrets never appear in a problem or a repr.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

TRUNK_NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
RESERVED_TRUNK = "unknown"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
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


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert_file: str
    key_file: str


DEFAULT_METRICS_ADDRESS = ListenAddress("", 9612)
DEFAULT_WEBHOOK_ADDRESS = ListenAddress("", 9613)


@dataclass(frozen=True, slots=True)
class WebSection:
    listen_address: ListenAddress = DEFAULT_METRICS_ADDRESS
    config_file: str | None = None
    telemetry_path: str = "/metrics"
    enable_lifecycle: bool = False


@dataclass(frozen=True, slots=True)
class WebhookSection:
    listen_address: ListenAddress = DEFAULT_WEBHOOK_ADDRESS
    max_body_bytes: int = 65536
    read_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_in_flight: int = 1000
    allowed_sources: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    tls: TLSFiles | None = None


SignatureMode = Literal["enforce", "report", "off"]
SignatureScheme = Literal["body", "url-nonce-v3"]
SignatureEncoding = Literal["hex", "base64"]


@dataclass(frozen=True, slots=True)
class SignatureSection:
    header: str = "X-Vobiz-Signature"
    encoding: SignatureEncoding = "hex"
    mode: SignatureMode = "enforce"
    replay_tolerance: float = 900.0
    scheme: SignatureScheme = "body"
    public_url: str | None = None


@dataclass(frozen=True, slots=True)
class DedupeSection:
    backend: Literal["memory", "redis"] = "memory"
    ttl: float = 3600.0
    max_entries: int = 1_000_000
    redis_url: str | None = field(default=None, repr=False)
    redis_password: str | None = field(default=None, repr=False)
    redis_password_env: str | None = None
    redis_key_prefix: str = "vobiz:"
    redis_timeout: float = 0.5
    redis_pool_size: int = 10
    on_error: Literal["accept", "reject"] = "accept"
    redis_mode: Literal["standalone", "cluster"] = "standalone"


@dataclass(frozen=True, slots=True)
class CallsSection:
    max_call_duration: float = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class DestinationsSection:
    """Opt-in per-destination-country metrics (off by default: no series change for anyone else)."""

    enabled: bool = False
    max_countries: int = 50
    # trunk name -> ISO 3166-1 alpha-2 codes its admitted calls may go to; others are counted
    # in vobiz_destination_disallowed_total.
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricsSection:
    destinations: DestinationsSection = DestinationsSection()


@dataclass(frozen=True, slots=True)
class Budget:
    amount: float
    currency: str


@dataclass(frozen=True, slots=True)
class Trunk:
    """One configured SIP trunk. ``secrets`` holds the current secret first, then previous ones."""

    name: str
    id: str | None = None
    secret: bytes = field(default=b"", repr=False)
    previous_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    method: Literal["POST", "GET"] = "POST"
    max_concurrent_calls: int | None = None
    cps_limit: float | None = None
    hourly_budget: Budget | None = None

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return (self.secret, *self.previous_secrets)


@dataclass(frozen=True, slots=True)
class Config:
    web: WebSection = WebSection()
    webhook: WebhookSection = WebhookSection()
    signature: SignatureSection = SignatureSection()
    dedupe: DedupeSection = DedupeSection()
    calls: CallsSection = CallsSection()
    metrics: MetricsSection = MetricsSection()
    trunks: tuple[Trunk, ...] = ()
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


# --- the parser ---------------------------------------------------------------------------


class _Parser:
    """Walks the raw YAML tree, collecting problems instead of stopping at the first one."""

    def __init__(self, source: str, env: Mapping[str, str], base_dir: str) -> None:
        self.source = source
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key: str, why: str) -> None:
        self.problems.append(f"{self.source}: {key}: {why}")

    def section(self, raw: Mapping[str, Any], name: str, allowed: Iterable[str]) -> dict[str, Any]:
        value = raw.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(name, "must be a mapping")
            return {}
        self.unknown_keys(value, name, allowed)
        return value

    def unknown_keys(self, mapping: Mapping[str, Any], prefix: str, allowed: Iterable[str]) -> None:
        allowed_set = set(allowed)
        for key in mapping:
            if key not in allowed_set:
                path = f"{prefix}.{key}" if prefix else str(key)
                near = difflib.get_close_matches(str(key), sorted(allowed_set), n=1, cutoff=0.6)
                self.problem(path, f"unknown key (did you mean `{near[0]}`?)" if near else "unknown key")

    def get(
        self,
        mapping: Mapping[str, Any],
        prefix: str,
        key: str,
        conv: Callable[[object], T],
        default: T,
    ) -> T:
        if key not in mapping or mapping[key] is None:
            return default
        try:
            return conv(mapping[key])
        except ValueError as exc:
            self.problem(f"{prefix}.{key}", str(exc))
            return default

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

    def str_list(self, key: str, value: object) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, "must be a list of strings")
            return []
        return list(value)


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


def _choice(*choices: str) -> Callable[[object], Any]:
    def conv(value: object) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return str(value)

    return conv


def _header_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,128}", value):
        raise ValueError("must be an HTTP header name")
    return value


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
    p.unknown_keys(raw, "", ["web", "webhook", "signature", "dedupe", "calls", "metrics", "trunks"])

    w = p.section(raw, "web", ["listen_address", "config_file"])
    web = WebSection(
        listen_address=p.get(w, "web", "listen_address", parse_listen_address, DEFAULT_METRICS_ADDRESS),
        config_file=p.get(w, "web", "config_file", lambda v: _abs(_string(v), base_dir), None),
    )

    h = p.section(
        raw,
        "webhook",
        [
            "listen_address",
            "max_body_bytes",
            "read_timeout",
            "keepalive_timeout",
            "max_in_flight",
            "allowed_sources",
            "trusted_proxies",
            "tls",
        ],
    )
    tls: TLSFiles | None = None
    if h.get("tls") is not None:
        t = h["tls"]
        if not isinstance(t, dict):
            p.problem("webhook.tls", "must be a mapping with cert_file and key_file")
        else:
            p.unknown_keys(t, "webhook.tls", ["cert_file", "key_file"])
            cert = p.get(t, "webhook.tls", "cert_file", _string, "")
            key = p.get(t, "webhook.tls", "key_file", _string, "")
            for k, v in (("cert_file", cert), ("key_file", key)):
                if not v:
                    if k not in t:
                        p.problem(f"webhook.tls.{k}", "is required")
                elif not os.path.isfile(v if os.path.isabs(v) else os.path.join(base_dir, v)):
                    p.problem(f"webhook.tls.{k}", "file does not exist")
            if cert and key:
                tls = TLSFiles(_abs(cert, base_dir), _abs(key, base_dir))

    def networks(key: str) -> tuple[IPNetwork, ...]:
        out = []
        for i, item in enumerate(p.str_list(f"webhook.{key}", h.get(key))):
            try:
                out.append(_parse_network(item))
            except ValueError as exc:
                p.problem(f"webhook.{key}[{i}]", str(exc))
        return tuple(out)

    webhook = WebhookSection(
        listen_address=p.get(h, "webhook", "listen_address", parse_listen_address, DEFAULT_WEBHOOK_ADDRESS),
        max_body_bytes=p.get(h, "webhook", "max_body_bytes", _positive_int, 65536),
        read_timeout=p.get(h, "webhook", "read_timeout", _positive_duration, 10.0),
        keepalive_timeout=p.get(h, "webhook", "keepalive_timeout", parse_duration, 75.0),
        max_in_flight=p.get(h, "webhook", "max_in_flight", _positive_int, 1000),
        allowed_sources=networks("allowed_sources"),
        trusted_proxies=networks("trusted_proxies"),
        tls=tls,
    )

    s = p.section(raw, "signature", ["header", "encoding", "mode", "replay_tolerance", "scheme", "public_url"])
    signature = SignatureSection(
        header=p.get(s, "signature", "header", _header_name, "X-Vobiz-Signature"),
        encoding=p.get(s, "signature", "encoding", _choice("hex", "base64"), "hex"),
        mode=p.get(s, "signature", "mode", _choice("enforce", "report", "off"), "enforce"),
        replay_tolerance=p.get(s, "signature", "replay_tolerance", parse_duration, 900.0),
        scheme=p.get(s, "signature", "scheme", _choice("body", "url-nonce-v3"), "body"),
        public_url=p.get(s, "signature", "public_url", _string, None),
    )
    if signature.public_url is not None and not re.match(r"^https?://[^/\s]+", signature.public_url):
        p.problem("signature.public_url", "must be an absolute http(s) URL")
    if signature.scheme == "url-nonce-v3" and signature.public_url is None:
        p.problem("signature.public_url", "is required with scheme url-nonce-v3")

    d = p.section(
        raw,
        "dedupe",
        [
            "backend",
            "ttl",
            "max_entries",
            "redis_url",
            "redis_password_env",
            "redis_key_prefix",
            "redis_timeout",
            "redis_pool_size",
            "on_error",
            "redis_mode",
        ],
    )
    redis_password_env = p.get(d, "dedupe", "redis_password_env", _string, None)
    redis_password: str | None = None
    if redis_password_env is not None:
        redis_password = p.env.get(redis_password_env) or None
    redis_url = p.get(d, "dedupe", "redis_url", _string, None)
    if redis_url is not None and not re.match(r"^(redis|rediss|unix)://", redis_url):
        p.problem("dedupe.redis_url", "must start with redis://, rediss:// or unix://")
    dedupe = DedupeSection(
        backend=p.get(d, "dedupe", "backend", _choice("memory", "redis"), "memory"),
        ttl=p.get(d, "dedupe", "ttl", _positive_duration, 3600.0),
        max_entries=p.get(d, "dedupe", "max_entries", _positive_int, 1_000_000),
        redis_url=redis_url,
        redis_password=redis_password,
        redis_password_env=redis_password_env,
        redis_key_prefix=p.get(d, "dedupe", "redis_key_prefix", _string, "vobiz:"),
        redis_timeout=p.get(d, "dedupe", "redis_timeout", _positive_duration, 0.5),
        redis_pool_size=p.get(d, "dedupe", "redis_pool_size", _positive_int, 10),
        on_error=p.get(d, "dedupe", "on_error", _choice("accept", "reject"), "accept"),
        redis_mode=p.get(d, "dedupe", "redis_mode", _choice("standalone", "cluster"), "standalone"),
    )
    if "{" in dedupe.redis_key_prefix or "}" in dedupe.redis_key_prefix:
        # The keys carry the hash tag {trunk}: a brace in the prefix would move the tag.
        p.problem("dedupe.redis_key_prefix", "must not contain { or } (the keys carry the hash tag {trunk})")
    if (
        dedupe.redis_mode == "cluster"
        and dedupe.redis_url is not None
        and (dedupe.redis_url.startswith("unix://") or re.search(r"/[1-9][0-9]*/?(\?|$)", dedupe.redis_url))
    ):
        p.problem("dedupe.redis_url", "redis_mode cluster needs redis:// or rediss:// and database 0")
    if dedupe.backend == "redis" and dedupe.redis_url is None:
        p.problem("dedupe.redis_url", "is required with backend redis")
    if signature.replay_tolerance and dedupe.ttl < signature.replay_tolerance:
        p.problem(
            "dedupe.ttl",
            "must be >= signature.replay_tolerance, or a replayed event outlives its dedupe key",
        )

    c = p.section(raw, "calls", ["max_call_duration"])
    calls = CallsSection(max_call_duration=p.get(c, "calls", "max_call_duration", _positive_duration, 4 * 3600.0))

    trunks = _parse_trunks(p, raw.get("trunks"), signature.mode)
    metrics = _parse_metrics(p, raw, {t.name for t in trunks})

    if p.problems:
        raise ConfigError(p.problems)
    return Config(
        web=web,
        webhook=webhook,
        signature=signature,
        dedupe=dedupe,
        calls=calls,
        metrics=metrics,
        trunks=tuple(trunks),
        source=source,
        warnings=tuple(p.warnings),
    )


_REGION_RE = re.compile(r"^[A-Z]{2}$")


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


def _parse_metrics(p: _Parser, raw: Mapping[str, Any], trunk_names: set[str]) -> MetricsSection:
    m = p.section(raw, "metrics", ["destinations"])
    d = m.get("destinations")
    if d is None:
        return MetricsSection()
    if not isinstance(d, dict):
        p.problem("metrics.destinations", "must be a mapping")
        return MetricsSection()
    p.unknown_keys(d, "metrics.destinations", ["enabled", "max_countries", "allowed"])
    allowed: dict[str, frozenset[str]] = {}
    raw_allowed = d.get("allowed")
    if raw_allowed is not None and not isinstance(raw_allowed, dict):
        p.problem("metrics.destinations.allowed", "must be a mapping of trunk name to a list of country codes")
    elif raw_allowed:
        from .destinations import known_region

        for name, codes in raw_allowed.items():
            key = f"metrics.destinations.allowed.{name}"
            if name not in trunk_names:
                p.problem(key, "is not a configured trunk name")
                continue
            regions = set()
            for i, code in enumerate(p.str_list(key, codes)):
                if not _REGION_RE.match(code) or not known_region(code):
                    p.problem(f"{key}[{i}]", f"{code!r} is not an ISO 3166-1 alpha-2 region code (e.g. IN)")
                else:
                    regions.add(code)
            allowed[name] = frozenset(regions)
    return MetricsSection(
        DestinationsSection(
            enabled=p.get(d, "metrics.destinations", "enabled", _bool, False),
            max_countries=p.get(d, "metrics.destinations", "max_countries", _positive_int, 50),
            allowed=allowed,
        )
    )


def _abs(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be a duration greater than 0")
    return seconds


_TRUNK_KEYS = [
    "name",
    "id",
    "secret",
    "secret_env",
    "secret_file",
    "previous_secrets_env",
    "previous_secrets_file",
    "method",
    "max_concurrent_calls",
    "cps_limit",
    "hourly_budget",
]


def _parse_trunks(p: _Parser, raw: object, mode: str) -> list[Trunk]:
    if raw is None:
        p.problem("trunks", "at least one trunk is required")
        return []
    if not isinstance(raw, list):
        p.problem("trunks", "must be a list of trunks")
        return []
    if not raw:
        p.problem("trunks", "at least one trunk is required")
    trunks: list[Trunk] = []
    names: set[str] = set()
    ids: set[str] = set()
    for i, t in enumerate(raw):
        key = f"trunks[{i}]"
        if not isinstance(t, dict):
            p.problem(key, "must be a mapping")
            continue
        p.unknown_keys(t, key, _TRUNK_KEYS)
        name = t.get("name")
        if name is None:
            p.problem(f"{key}.name", "is required")
            name = ""
        elif not isinstance(name, str) or not TRUNK_NAME_RE.fullmatch(name):
            p.problem(f"{key}.name", "must match [a-z0-9_-]{1,64}")
            name = ""
        elif name == RESERVED_TRUNK:
            p.problem(f"{key}.name", f'"{RESERVED_TRUNK}" is reserved for unresolved requests')
        elif name in names:
            p.problem(f"{key}.name", f'duplicate name "{name}"')
        names.add(name)

        trunk_id = t.get("id")
        if trunk_id is not None:
            if isinstance(trunk_id, int | float) and not isinstance(trunk_id, bool):
                trunk_id = str(trunk_id)
            if not isinstance(trunk_id, str) or not trunk_id or len(trunk_id) > 128:
                p.problem(f"{key}.id", "must be a non-empty string of at most 128 characters")
                trunk_id = None
            elif trunk_id in ids:
                p.problem(f"{key}.id", f'duplicate id "{trunk_id}"')
            else:
                ids.add(trunk_id)

        sources = [k for k in ("secret", "secret_env", "secret_file") if t.get(k) is not None]
        secret: bytes | None = None
        if len(sources) > 1:
            p.problem(f"{key}.secret_env", "set only one of secret_env, secret_file and secret")
        elif not sources:
            if mode != "off":
                p.problem(f"{key}.secret_env", "a secret is required: set secret_env or secret_file")
        elif sources[0] == "secret_env":
            secret = p.read_secret_env(f"{key}.secret_env", t["secret_env"])
        elif sources[0] == "secret_file":
            secret = p.read_secret_file(f"{key}.secret_file", t["secret_file"])
        else:
            if not isinstance(t["secret"], str) or not t["secret"]:
                p.problem(f"{key}.secret", "must be a non-empty string")
            else:
                secret = t["secret"].encode()
                p.warnings.append(
                    f"{p.source}: {key}.secret: inline secret in the config file; "
                    "use secret_env or secret_file outside demos"
                )

        previous: list[bytes] = []
        for j, env_name in enumerate(p.str_list(f"{key}.previous_secrets_env", t.get("previous_secrets_env"))):
            value = p.read_secret_env(f"{key}.previous_secrets_env[{j}]", env_name)
            if value is not None:
                previous.append(value)
        for j, path in enumerate(p.str_list(f"{key}.previous_secrets_file", t.get("previous_secrets_file"))):
            value = p.read_secret_file(f"{key}.previous_secrets_file[{j}]", path)
            if value is not None:
                previous.append(value)

        method: Literal["POST", "GET"] = p.get(t, key, "method", _choice("POST", "GET"), "POST")
        max_cc = p.get(t, key, "max_concurrent_calls", _positive_int, None)
        cps = p.get(t, key, "cps_limit", _positive_number, None)
        budget: Budget | None = None
        b = t.get("hourly_budget")
        if b is not None:
            if not isinstance(b, dict):
                p.problem(f"{key}.hourly_budget", "must be a mapping with amount and currency")
            else:
                p.unknown_keys(b, f"{key}.hourly_budget", ["amount", "currency"])
                amount = p.get(b, f"{key}.hourly_budget", "amount", _positive_number, 0.0)
                currency = b.get("currency")
                if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
                    p.problem(f"{key}.hourly_budget.currency", "must be an upper-case 3-letter code")
                elif "amount" not in b:
                    p.problem(f"{key}.hourly_budget.amount", "is required")
                elif amount > 0:
                    budget = Budget(amount, currency)
        trunks.append(
            Trunk(
                name=name,
                id=trunk_id,
                secret=secret or b"",
                previous_secrets=tuple(previous),
                method=method,
                max_concurrent_calls=max_cc,
                cps_limit=cps,
                hourly_budget=budget,
            )
        )
    return trunks


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
