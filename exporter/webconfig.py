"""Web config (the exporter-toolkit schema): TLS and basic auth for the metrics listener.

The file is the one every Prometheus exporter reads with ``--web.config.file``, so an operator's
existing file works here: ``tls_server_config``, ``basic_auth_users`` (bcrypt hashes) and
``http_server_config.headers``. Problems are reported like the main config (``FILE: key: why``)
and never quote a hash or a value from the file.

Basic auth follows exporter-toolkit's design: bcrypt is slow on purpose, so a successful check is
cached (keyed on a digest of user, password and hash; bounded), and a scrape with known-good
credentials never waits on bcrypt. bcrypt itself runs on one worker thread, so a flood of wrong
passwords costs one core at most and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import bcrypt
from aiohttp import web

from .config import Config, ConfigError, ReloadError, read_yaml
from .logs import LOGGER_NAME

REALM = "vobiz-exporter"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'
CACHE_SIZE = 100  # successful (user, password, hash) digests kept; exporter-toolkit keeps 100 too
MAX_PENDING_BCRYPT = 64  # checks queued for the bcrypt thread; past this, 401 without checking

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit allows exactly these response headers, some with fixed values.
HEADER_VALUES: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_BCRYPT_RE = re.compile(r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$")
# A real bcrypt hash (cost 10) of a throwaway string: unknown users are checked against it, so
# an unknown user name takes as long to refuse as a wrong password.
_DUMMY_HASH = b"$2b$10$TQ225lLIkTDBSNpDRUoD5urqguhmuw6ldfcFClziedcHtDGu5/U8."
# Keys of the schema that we know but cannot honour: refused, so a security setting is never
# silently ignored.
_UNSUPPORTED = {
    "tls_server_config.cert": "inline certificates are not supported; use cert_file",
    "tls_server_config.key": "inline keys are not supported; use key_file",
    "tls_server_config.client_ca": "inline CAs are not supported; use client_ca_file",
    "tls_server_config.cipher_suites": "not supported (Python's ssl uses OpenSSL names); remove it",
    "tls_server_config.curve_preferences": "not supported; remove it",
    "tls_server_config.client_allowed_sans": "not supported; remove it",
    "rate_limit": "not supported; rate-limit in front of the exporter",
}


# The same error as the main config's: every problem, as ``FILE: key: why`` lines.
WebConfigError = ConfigError


class ReloadHooks(Protocol):
    """What the web config needs of the runtime: a place to validate a reload before it applies."""

    reload_hooks: list[Callable[[Config], None]]


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion | None = None
    prefer_server_cipher_suites: bool = True

    def restart_key(self) -> tuple[object, ...]:
        """What cannot change on a live listener: everything but the certificate and key."""
        return (
            self.client_auth_type,
            self.client_ca_file,
            self.min_version,
            self.max_version,
            self.prefer_server_cipher_suites,
        )


@dataclass(frozen=True, slots=True)
class WebConfig:
    source: str = "<none>"
    tls: TLSServerConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)


# --- parsing ----------------------------------------------------------------------------------


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web-config file. Raises WebConfigError listing every problem.

    Relative file names inside it are relative to the web-config file (as in exporter-toolkit).
    The certificate and key are loaded once here, so a broken pair fails check-config and reload.
    """
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        raise WebConfigError(exc.problems) from None
    return parse_web_config(raw, path, os.path.dirname(os.path.abspath(path)))


def parse_web_config(raw: object, source: str, base_dir: str) -> WebConfig:
    problems: list[str] = []

    def problem(key: str, why: str) -> None:
        problems.append(f"{source}: {key}: {why}")

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WebConfigError([f"{source}: (top level): must be a mapping"])
    for key in raw:
        if key in _UNSUPPORTED:
            problem(str(key), _UNSUPPORTED[key])
        elif key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            problem(str(key), "unknown key")

    tls = _parse_tls(raw.get("tls_server_config"), problem, base_dir)
    users = _parse_users(raw.get("basic_auth_users"), problem)
    headers = _parse_http(raw.get("http_server_config"), problem)
    if problems:
        raise WebConfigError(problems)
    return WebConfig(source=source, tls=tls, users=users, headers=headers)


_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
_VERIFYING = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
Problem = Callable[[str, str], None]


def _mapping(raw: object, key: str, why: str, problem: Problem) -> dict[Any, Any] | None:
    """``raw`` when it is a mapping; None when it is unset, or not a mapping (a problem)."""
    if raw is not None and not isinstance(raw, dict):
        problem(key, why)
    return raw if isinstance(raw, dict) else None


def _parse_tls(value: object, problem: Problem, base_dir: str) -> TLSServerConfig | None:
    prefix = "tls_server_config"
    raw = _mapping(value, prefix, "must be a mapping", problem)
    if raw is None:
        return None
    for key in raw:
        full = f"{prefix}.{key}"
        if full in _UNSUPPORTED:
            problem(full, _UNSUPPORTED[full])
        elif key not in _TLS_KEYS:
            problem(full, "unknown key")
    cert = _tls_path(raw, "cert_file", True, problem, base_dir)
    key = _tls_path(raw, "key_file", True, problem, base_dir)
    ca = _tls_path(raw, "client_ca_file", False, problem, base_dir)
    auth = _client_auth(raw, problem)
    min_version, max_version = _tls_versions(raw, problem)
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        problem(f"{prefix}.prefer_server_cipher_suites", "must be true or false")
        prefer = True
    if cert is None or key is None:
        return None
    tls = TLSServerConfig(cert, key, auth, ca, min_version or ssl.TLSVersion.TLSv1_2, max_version, prefer)
    return _loaded(tls, problem)


def _tls_path(raw: Mapping[str, object], key: str, required: bool, problem: Problem, base_dir: str) -> str | None:
    """A file named in tls_server_config, relative to the web-config file; it must exist."""
    value = raw.get(key)
    if value is None or value == "":
        if required:
            problem(f"tls_server_config.{key}", "is required")
        return None
    if not isinstance(value, str):
        problem(f"tls_server_config.{key}", "must be a file path")
        return None
    full = value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))
    if not os.path.isfile(full):
        problem(f"tls_server_config.{key}", "file does not exist")
        return None
    return full


def _client_auth(raw: Mapping[str, object], problem: Problem) -> str:
    """client_auth_type, and whether client_ca_file goes with it."""
    prefix = "tls_server_config"
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth is None or auth == "":
        auth = "NoClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        problem(f"{prefix}.client_auth_type", "must be one of " + ", ".join(CLIENT_AUTH_TYPES))
        auth = "NoClientCert"
    elif auth == "RequireAnyClientCert":
        problem(
            f"{prefix}.client_auth_type",
            "RequireAnyClientCert (a certificate that is never verified) is not supported by Python's ssl; "
            "use RequireAndVerifyClientCert with client_ca_file",
        )
    has_ca = raw.get("client_ca_file") not in (None, "")
    if auth in _VERIFYING and not has_ca:
        problem(f"{prefix}.client_ca_file", f"is required with client_auth_type {auth}")
    if auth not in _VERIFYING and has_ca:
        # exporter-toolkit refuses this too: a CA without a policy that uses it is a mistake.
        problem(f"{prefix}.client_ca_file", f"is set but client_auth_type {auth} does not verify clients")
    return str(auth)


def _tls_versions(raw: Mapping[str, object], problem: Problem) -> tuple[ssl.TLSVersion | None, ssl.TLSVersion | None]:
    min_version = _tls_version(raw, "min_version", ssl.TLSVersion.TLSv1_2, problem)
    max_version = _tls_version(raw, "max_version", None, problem)
    if min_version is not None and max_version is not None and max_version < min_version:
        problem("tls_server_config.max_version", "is lower than min_version")
    return min_version, max_version


def _tls_version(
    raw: Mapping[str, object], key: str, default: ssl.TLSVersion | None, problem: Problem
) -> ssl.TLSVersion | None:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if value not in TLS_VERSIONS:
        problem(f"tls_server_config.{key}", "must be one of " + ", ".join(TLS_VERSIONS))
        return default
    return TLS_VERSIONS[str(value)]


def _loaded(tls: TLSServerConfig, problem: Problem) -> TLSServerConfig | None:
    """``tls`` when its files load into a context (a broken pair fails check-config and reload)."""
    try:
        build_ssl_context(tls)
    except WebConfigError as exc:
        for why in exc.problems:
            key_name, _, reason = why.partition(": ")
            problem(key_name, reason)
        return None
    return tls


def _parse_users(raw: object, problem: Problem) -> dict[str, bytes]:
    why = "must be a mapping of user name to bcrypt hash"
    users: dict[str, bytes] = {}
    for i, (user, hashed) in enumerate((_mapping(raw, "basic_auth_users", why, problem) or {}).items()):
        # Name the user when it is printable text; it is not a secret, the hash is.
        label = (
            f"basic_auth_users.{user}" if isinstance(user, str) and user.isprintable() else (f"basic_auth_users[{i}]")
        )
        if not isinstance(user, str) or not user:
            problem(label, "user name must be a non-empty string")
            continue
        if ":" in user:
            problem(label, 'user name cannot contain ":" (basic auth separates user and password with it)')
            continue
        if not isinstance(hashed, str) or not _BCRYPT_RE.match(hashed):
            problem(label, "is not a bcrypt hash (generate one with htpasswd -nBC 10 USER)")
            continue
        users[user] = hashed.encode("ascii")
    return users


def _parse_http(raw: object, problem: Problem) -> dict[str, str]:
    prefix = "http_server_config"
    headers: dict[str, str] = {}
    for key, value in (_mapping(raw, prefix, "must be a mapping", problem) or {}).items():
        if key == "http2":
            if not isinstance(value, bool):
                problem(f"{prefix}.http2", "must be true or false")
            # aiohttp serves HTTP/1.1 only; http2 is accepted (files are shared between
            # exporters) and has no effect.
        elif key == "headers":
            headers = _parse_headers(value, problem)
        else:
            problem(f"{prefix}.{key}", "unknown key")
    return headers


def _parse_headers(raw: object, problem: Problem) -> dict[str, str]:
    prefix = "http_server_config.headers"
    headers: dict[str, str] = {}
    for name, text in (_mapping(raw, prefix, "must be a mapping of header name to value", problem) or {}).items():
        canonical = next((h for h in HEADER_VALUES if h.lower() == str(name).lower()), None)
        hkey = f"{prefix}.{name}"
        allowed = HEADER_VALUES.get(canonical or "")
        if canonical is None:
            problem(hkey, "cannot be configured (allowed: " + ", ".join(HEADER_VALUES) + ")")
        elif not isinstance(text, str) or not text or any(c in text for c in "\r\n"):
            problem(hkey, "must be a non-empty single-line string")
        elif allowed is not None and text.lower() not in allowed:
            problem(hkey, "must be one of " + ", ".join(allowed))
        else:
            headers[canonical] = text
    return headers


# --- TLS --------------------------------------------------------------------------------------


def _no_password() -> bytes:
    # An encrypted key would otherwise make OpenSSL prompt on the terminal.
    raise WebConfigError(["tls_server_config.key_file: encrypted keys are not supported"])


def build_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context for ``tls``. Raises WebConfigError (``key: why``) when files do not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = tls.min_version
    if tls.max_version is not None:
        ctx.maximum_version = tls.max_version
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, tls.cert_file, tls.key_file)
    if tls.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError, ValueError):
            why = "tls_server_config.client_ca_file: cannot load the CA certificates"
            raise WebConfigError([why]) from None
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if tls.client_auth_type == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
        )
    else:
        # RequestClientCert asks for a certificate that is never verified or used: for access
        # control that is the same as NoClientCert, which is what Python's ssl can do.
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except WebConfigError:
        raise
    except (ssl.SSLError, OSError, ValueError):
        raise WebConfigError(
            ["tls_server_config.cert_file: cannot load the certificate and key (wrong format or not a pair)"]
        ) from None


def ssl_context_for_webhook(config: Config) -> ssl.SSLContext | None:
    """TLS for the webhook listener (``webhook.tls``), for deployments without a TLS proxy."""
    if config.webhook.tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.webhook.tls.cert_file, config.webhook.tls.key_file, password=_no_password)
    except (ssl.SSLError, OSError, ValueError, WebConfigError):
        raise OSError("webhook.tls: cannot load the certificate and key") from None
    return ctx


# --- basic auth -------------------------------------------------------------------------------


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, with a bounded cache of successes."""

    def __init__(self) -> None:
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0

    @staticmethod
    def _cache_key(user: bytes, password: bytes, hashed: bytes) -> bytes:
        # Length-prefixed so ("ab", "c") and ("a", "bc") differ; only this digest is kept.
        h = hashlib.sha256()
        for part in (user, hashed, password):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return h.digest()

    async def check(self, users: Mapping[str, bytes], header: str | None) -> bool:
        creds = _parse_basic(header)
        if creds is None:
            return False
        user, password = creds
        # Constant time over the configured names: every name is compared, whatever matches.
        hashed: bytes | None = None
        for name, candidate in users.items():
            if hmac.compare_digest(name.encode(), user) and hashed is None:
                hashed = candidate
        target = hashed if hashed is not None else _DUMMY_HASH
        key = self._cache_key(user, password, target)
        if hashed is not None and key in self._cache:
            self._cache.move_to_end(key)
            return True
        if self._pending >= MAX_PENDING_BCRYPT:
            return False  # a flood of guesses; good credentials are answered from the cache
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self._pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._executor, _checkpw, password, target)
        finally:
            self._pending -= 1
        if ok and hashed is not None:
            self._cache[key] = None
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return True
        return False

    def clear(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # a password over 72 bytes, or a hash bcrypt cannot read
        return False


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


# --- wiring into the app ----------------------------------------------------------------------


class WebConfigHolder:
    """The live web config of one listener; ``reload`` swaps it (or raises, keeping the old one).

    Basic auth and headers follow a reload at once. The TLS certificate and key are re-read into
    the live SSL context (so a renewed certificate needs no restart); switching TLS on or off, or
    changing the client-auth policy, CA or versions, needs a restart.
    """

    def __init__(
        self, path: str | None, config: WebConfig, ssl_context: ssl.SSLContext | None, exempt: Callable[[str], bool]
    ) -> None:
        self.path = path
        self.config = config
        self.ssl_context = ssl_context
        self.exempt = exempt
        self.auth = BasicAuth()

    def reload(self, new: Config) -> None:
        path = new.web.config_file
        wc = load_web_config(path) if path is not None else WebConfig()
        old_tls = self.config.tls
        if (old_tls is None) != (wc.tls is None) or (
            old_tls is not None and wc.tls is not None and old_tls.restart_key() != wc.tls.restart_key()
        ):
            where = path or "web.config_file"
            raise WebConfigError([f"{where}: tls_server_config: changed: needs a restart"])
        if self.ssl_context is not None and wc.tls is not None:
            _load_chain(self.ssl_context, wc.tls.cert_file, wc.tls.key_file)
        self.path = path
        self.config = wc
        self.auth.clear()

    async def middleware_check(self, request: web.Request) -> web.StreamResponse | None:
        users = self.config.users
        if not users or self.exempt(request.path):
            return None
        if await self.auth.check(users, request.headers.get("Authorization")):
            return None
        return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": WWW_AUTHENTICATE})


WEB_CONFIG = web.AppKey("web_config", WebConfigHolder)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _exempt_none(path: str) -> bool:
    return False


def _exempt_webhooks(path: str) -> bool:
    """One port for both listeners: webhooks carry their own HMAC, and health checks stay open."""
    return path == "/webhook" or path.startswith("/webhook/") or path == "/-/healthy"


def install_web_config(app: web.Application, runtime: ReloadHooks, config: Config) -> ssl.SSLContext | None:
    """Wire the web config into the metrics (or single-port) app; return its SSL context.

    Raises WebConfigError for a broken file. With one port for both listeners, TLS comes from the
    web config, else from ``webhook.tls``; basic auth then spares ``/webhook`` paths and
    ``/-/healthy``. The file is re-read on every reload (SIGHUP or ``POST /-/reload``).
    """
    path = config.web.config_file
    wc = load_web_config(path) if path is not None else WebConfig()
    ctx = build_ssl_context(wc.tls) if wc.tls is not None else None
    single = config.single_listener
    if ctx is None and single:
        ctx = ssl_context_for_webhook(config)
    holder = WebConfigHolder(
        path, wc, ctx if wc.tls is not None else None, _exempt_webhooks if single else _exempt_none
    )
    app[WEB_CONFIG] = holder

    @web.middleware
    async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = await holder.middleware_check(request)
        if refused is not None:
            return refused
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in holder.config.headers.items():
            response.headers[name] = value

    async def close(app: web.Application) -> None:
        holder.auth.close()

    app.middlewares.append(basic_auth)
    app.on_response_prepare.append(add_headers)
    app.on_cleanup.append(close)

    def reload_hook(new: Config) -> None:
        try:
            holder.reload(new)
        except WebConfigError as exc:
            raise ReloadError("; ".join(exc.problems)) from None

    runtime.reload_hooks.append(reload_hook)
    logging.getLogger(LOGGER_NAME).debug(
        "web config installed",
        extra={"tls": ctx is not None, "basic_auth_users": len(wc.users)},
    )
    return ctx
