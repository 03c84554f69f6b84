"""Web config (exporter-toolkit schema) with real TLS: a throwaway CA and certificates made here.

In-process tests run the real app on an AppRunner/TCPSite with the SSL context our module
builds; the end-to-end test runs ``python -m exporter serve`` with TLS on both listeners and
reloads it with SIGHUP and ``POST /-/reload``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme
import yaml
from prometheus_client import CollectorRegistry

from exporter import cli, webconfig
from exporter.app import RUNTIME, ReloadError, create_app
from exporter.config import Config, parse_config
from exporter.webconfig import WebConfigError, install_web_config, load_web_config

from .helpers import SECRET_A, TRUNK_A_ID, call_initiated, encode, free_port, headers_for
from .procs import start_process, wait_until

ALICE_PW = "alice-correct-horse-battery"
BOB_PW = "bob-tr0ub4dor-and-3"


def bhash(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class PKI:
    """A CA, a server certificate for 127.0.0.1/localhost and client certificates, as files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file, self.key_file = self.server_cert("server")
        client = self.ca.issue_cert("client.example.com")
        self.client = client
        self.other_ca = trustme.CA()
        self.foreign_client = self.other_ca.issue_cert("client.example.com")

    def server_cert(self, name: str) -> tuple[Path, Path]:
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        cert, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        with open(cert, "wb") as fh:
            for pem in leaf.cert_chain_pems:
                fh.write(pem.bytes())
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def client_ctx(self, cert: Any = None, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


def write_web_config(path: Path, doc: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def config_for(web_config: str | None, single: bool = False, **webhook: Any) -> Config:
    port = free_port()
    raw: dict[str, Any] = {
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "webhook": {"listen_address": f"127.0.0.1:{port if single else free_port()}", **webhook},
        "trunks": [{"name": "a", "id": TRUNK_A_ID, "secret": SECRET_A}],
    }
    if web_config is not None:
        raw["web"]["config_file"] = web_config
    return parse_config(raw, env={})


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[str, CollectorRegistry, Any]]:
    """The metrics (or single-port) app with the web config installed, on a real TLS socket."""
    registry = CollectorRegistry()
    app = create_app(config, registry, role="all" if config.single_listener else "metrics")
    ctx = install_web_config(app, app[RUNTIME], config)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    addr = config.web.listen_address
    site = aiohttp.web.TCPSite(runner, addr.host, addr.port, ssl_context=ctx)
    await site.start()
    try:
        scheme = "https" if ctx is not None else "http"
        yield f"{scheme}://127.0.0.1:{addr.port}", registry, app
    finally:
        await runner.cleanup()


async def fetch(
    url: str,
    ctx: ssl.SSLContext | None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            url,
            ssl=ctx if ctx is not None else False,
            headers=headers,
            data=data,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


# --- parsing and check-config ---------------------------------------------------------------


def test_valid_file_parses(tmp_path: Path, pki: PKI) -> None:
    h = bhash(ALICE_PW)
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "server.crt",
                "key_file": "server.key",
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "ca.pem",
                "min_version": "TLS13",
            },
            "basic_auth_users": {"alice": h},
            "http_server_config": {"http2": True, "headers": {"x-frame-options": "deny"}},
        },
    )
    wc = load_web_config(path)
    assert wc.tls is not None
    assert wc.tls.cert_file == str(pki.cert_file)  # relative to the web-config file
    assert wc.tls.client_ca_file == str(pki.ca_file)
    assert wc.tls.min_version is ssl.TLSVersion.TLSv1_3
    assert dict(wc.users) == {"alice": h.encode()}
    assert dict(wc.headers) == {"X-Frame-Options": "deny"}
    assert h not in repr(wc)


def test_every_problem_is_reported_and_no_hash_or_value_is_printed(tmp_path: Path, pki: PKI) -> None:
    h = bhash(ALICE_PW)
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "missing.crt",
                "client_auth_type": "VerifyClientCertIfGiven",
                "min_version": "TLS9",
                "cipher_suites": ["TLS_AES_128_GCM_SHA256"],
            },
            "basic_auth_users": {"alice": h[:-3], "bo:b": h, "carol": "plain-text-password"},
            "http_server_config": {"headers": {"X-Powered-By": "me", "X-Content-Type-Options": "sniff"}},
            "basic_auth": {"x": 1},
        },
    )
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    assert err.value.problems == [
        f"{path}: basic_auth: unknown key",
        f"{path}: tls_server_config.cipher_suites: not supported (Python's ssl uses OpenSSL names); remove it",
        f"{path}: tls_server_config.cert_file: file does not exist",
        f"{path}: tls_server_config.key_file: is required",
        f"{path}: tls_server_config.client_ca_file: is required with client_auth_type VerifyClientCertIfGiven",
        f"{path}: tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13",
        f"{path}: basic_auth_users.alice: is not a bcrypt hash (generate one with htpasswd -nBC 10 USER)",
        f'{path}: basic_auth_users.bo:b: user name cannot contain ":" (basic auth separates user and password with it)',
        f"{path}: basic_auth_users.carol: is not a bcrypt hash (generate one with htpasswd -nBC 10 USER)",
        f"{path}: http_server_config.headers.X-Content-Type-Options: must be one of nosniff",
        f"{path}: http_server_config.headers.X-Powered-By: cannot be configured (allowed: "
        "Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, "
        "Strict-Transport-Security)",
    ]
    text = "\n".join(err.value.problems)
    assert h[:-3] not in text and "plain-text-password" not in text and "$2" not in text


@pytest.mark.parametrize(
    ("tls", "problem"),
    [
        (
            {"client_auth_type": "RequireAnyClientCert"},
            "tls_server_config.client_auth_type: RequireAnyClientCert (a certificate that is never verified) is "
            "not supported by Python's ssl; use RequireAndVerifyClientCert with client_ca_file",
        ),
        (
            {"client_ca_file": "ca.pem"},
            "tls_server_config.client_ca_file: is set but client_auth_type NoClientCert does not verify clients",
        ),
        (
            {"client_auth_type": "Sometimes"},
            "tls_server_config.client_auth_type: must be one of NoClientCert, RequestClientCert, "
            "RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
        ),
        ({"min_version": "TLS13", "max_version": "TLS12"}, "tls_server_config.max_version: is lower than min_version"),
        (
            {"key_file": "ca.pem"},
            "tls_server_config.cert_file: cannot load the certificate and key (wrong format or not a pair)",
        ),
    ],
)
def test_tls_problems(tmp_path: Path, pki: PKI, tls: dict[str, str], problem: str) -> None:
    doc = {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **tls}}
    path = write_web_config(tmp_path / "web.yml", doc)
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    assert err.value.problems == [f"{path}: {problem}"]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(tmp_path / "nope.yml"))
    assert err.value.problems == [f"{tmp_path / 'nope.yml'}: (file): cannot read (No such file or directory)"]
    bad = tmp_path / "bad.yml"
    bad.write_text("basic_auth_users:\n  alice: $2b$10$secret-looking: [\n")
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(bad))
    assert err.value.problems == [f"{bad}: line 2: invalid YAML"]


def test_check_config_validates_the_web_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = bhash(ALICE_PW)
    web = write_web_config(tmp_path / "web.yml", {"basic_auth_users": {"alice": h[:20]}})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"web": {"config_file": web}, "trunks": [{"name": "a", "secret_env": "S"}]}))
    os.environ["S"] = "check-config-secret-value"
    try:
        assert cli.check_config(str(cfg)) == 1
        out, errtext = capsys.readouterr()
        assert out == ""
        assert errtext.splitlines() == [
            f"{web}: basic_auth_users.alice: is not a bcrypt hash (generate one with htpasswd -nBC 10 USER)"
        ]
        assert h[:20] not in errtext and "check-config-secret-value" not in errtext
        write_web_config(tmp_path / "web.yml", {"basic_auth_users": {"alice": h}})
        assert cli.check_config(str(cfg)) == 0
        out, errtext = capsys.readouterr()
        assert out.startswith(f"{cfg}: OK: 1 trunk(s) [a]")
    finally:
        del os.environ["S"]


# --- basic auth over TLS ------------------------------------------------------------------------


async def test_basic_auth_over_tls(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
            "basic_auth_users": {"alice": bhash(ALICE_PW)},
            "http_server_config": {"headers": {"Strict-Transport-Security": "max-age=31536000"}},
        },
    )
    ctx = pki.client_ctx()
    async with serving(config_for(path)) as (url, _, _app):
        status, headers, body = await fetch(url + "/metrics", ctx, auth("alice", ALICE_PW))
        assert status == 200
        assert b"vobiz_webhook_requests_total" in body
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
        for bad in (
            auth("alice", "wrong"),
            auth("mallory", ALICE_PW),
            auth("alice", ""),
            auth("", ""),
            {"Authorization": "Bearer abc"},
            {"Authorization": "Basic !!!notbase64"},
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            {},
        ):
            for path_ in ("/metrics", "/", "/-/healthy", "/-/ready", "/-/reload"):
                method = "POST" if path_ == "/-/reload" else "GET"
                status, headers, body = await fetch(url + path_, ctx, bad, method=method)
                assert (status, headers.get("WWW-Authenticate")) == (401, 'Basic realm="vobiz-exporter"'), (bad, path_)
                assert b"vobiz" not in body.replace(b"vobiz-exporter", b"")
        # Plain HTTP to the TLS port is refused (no answer with data).
        with pytest.raises(aiohttp.ClientError):
            await fetch(url.replace("https", "http") + "/metrics", None, auth("alice", ALICE_PW))
        # A client that does not trust our CA refuses the server.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(url + "/metrics", ssl.create_default_context(), auth("alice", ALICE_PW))


async def test_successful_checks_are_cached(tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = webconfig._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(webconfig, "_checkpw", counting)
    path = write_web_config(tmp_path / "web.yml", {"basic_auth_users": {"alice": bhash(ALICE_PW)}})
    async with serving(config_for(path)) as (url, _, _app):
        for _ in range(5):
            assert (await fetch(url + "/metrics", None, auth("alice", ALICE_PW)))[0] == 200
        assert len(calls) == 1  # bcrypt ran once; the next four came from the cache
        for _ in range(3):
            assert (await fetch(url + "/metrics", None, auth("alice", "nope")))[0] == 401
        assert len(calls) == 4  # failures are never cached: each wrong guess pays bcrypt
        assert (await fetch(url + "/metrics", None, auth("alice", ALICE_PW)))[0] == 200
        assert len(calls) == 4


async def test_wrong_password_flood_does_not_block_scrapes(tmp_path: Path) -> None:
    """bcrypt runs off the event loop (one thread): a flood of guesses at cost 10 takes seconds,
    while a scrape with cached good credentials and a webhook are answered meanwhile."""
    path = write_web_config(tmp_path / "web.yml", {"basic_auth_users": {"alice": bhash(ALICE_PW, rounds=10)}})
    async with serving(config_for(path, single=True)) as (url, _, _app):
        assert (await fetch(url + "/metrics", None, auth("alice", ALICE_PW)))[0] == 200  # fills the cache
        t0 = time.monotonic()
        flood = [asyncio.create_task(fetch(url + "/metrics", None, auth("alice", f"guess-{i}"))) for i in range(24)]
        await asyncio.sleep(0.05)
        t_scrape = time.monotonic()
        assert (await fetch(url + "/metrics", None, auth("alice", ALICE_PW)))[0] == 200
        scrape_s = time.monotonic() - t_scrape
        raw = encode(call_initiated())
        status, _, _ = await fetch(url + "/webhook/a", None, headers_for(raw), method="POST", data=raw)
        assert status == 200
        results = await asyncio.gather(*flood)
        flood_s = time.monotonic() - t0
        assert [r[0] for r in results] == [401] * 24
        assert scrape_s < 1.0
        assert scrape_s < flood_s / 3, (scrape_s, flood_s)


async def test_single_port_spares_webhooks_and_healthy(tmp_path: Path, pki: PKI) -> None:
    """One port for both listeners: TLS on everything, basic auth on all but /webhook and /-/healthy."""
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
            "basic_auth_users": {"alice": bhash(ALICE_PW)},
        },
    )
    ctx = pki.client_ctx()
    async with serving(config_for(path, single=True)) as (url, registry, _app):
        raw = encode(call_initiated())
        status, _, body = await fetch(url + "/webhook/a", ctx, headers_for(raw), method="POST", data=raw)
        assert (status, body) == (200, b'{"outcome": "accepted", "detail": "Event accepted."}')
        raw = encode(call_initiated(TrunkID=TRUNK_A_ID))
        assert (await fetch(url + "/webhook", ctx, headers_for(raw), method="POST", data=raw))[0] == 200
        assert (await fetch(url + "/-/healthy", ctx))[0] == 200
        assert (await fetch(url + "/-/ready", ctx))[0] == 401
        assert (await fetch(url + "/metrics", ctx))[0] == 401
        assert (await fetch(url + "/webhooks-not-really", ctx))[0] == 401
        assert (await fetch(url + "/metrics", ctx, auth("alice", ALICE_PW)))[0] == 200
        assert registry.get_sample_value("vobiz_webhook_requests_total", {"trunk": "a", "outcome": "accepted"}) == 2


async def test_single_port_uses_webhook_tls_without_web_config(pki: PKI) -> None:
    config = config_for(None, single=True, tls={"cert_file": str(pki.cert_file), "key_file": str(pki.key_file)})
    async with serving(config) as (url, _, _app):
        assert url.startswith("https://")
        assert (await fetch(url + "/metrics", pki.client_ctx()))[0] == 200


# --- mTLS -----------------------------------------------------------------------------------


async def test_mtls_require_and_verify(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "server.crt",
                "key_file": "server.key",
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "ca.pem",
            },
        },
    )
    async with serving(config_for(path)) as (url, _, _app):
        assert (await fetch(url + "/metrics", pki.client_ctx(pki.client)))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(url + "/metrics", pki.client_ctx())  # no client certificate
        with pytest.raises(aiohttp.ClientError):
            await fetch(url + "/metrics", pki.client_ctx(pki.foreign_client))  # signed by another CA
        with pytest.raises(aiohttp.ClientError):  # and over TLS 1.2, where the server refuses in the handshake
            await fetch(url + "/metrics", pki.client_ctx(max_version=ssl.TLSVersion.TLSv1_2))


async def test_mtls_verify_if_given(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "server.crt",
                "key_file": "server.key",
                "client_auth_type": "VerifyClientCertIfGiven",
                "client_ca_file": "ca.pem",
            },
        },
    )
    async with serving(config_for(path)) as (url, _, _app):
        assert (await fetch(url + "/metrics", pki.client_ctx()))[0] == 200
        assert (await fetch(url + "/metrics", pki.client_ctx(pki.client)))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(url + "/metrics", pki.client_ctx(pki.foreign_client))


async def test_min_version_tls13(tmp_path: Path, pki: PKI) -> None:
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS13"},
        },
    )
    async with serving(config_for(path)) as (url, _, _app):
        assert (await fetch(url + "/metrics", pki.client_ctx()))[0] == 200
        with pytest.raises(aiohttp.ClientError):
            await fetch(url + "/metrics", pki.client_ctx(max_version=ssl.TLSVersion.TLSv1_2))


# --- reload (in process) ----------------------------------------------------------------------


async def test_reload_rereads_the_web_config(tmp_path: Path, pki: PKI) -> None:
    web = tmp_path / "web.yml"
    cfg_path = tmp_path / "c.yaml"
    port = free_port()
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "web": {"listen_address": f"127.0.0.1:{port}", "config_file": str(web)},
                "webhook": {"listen_address": f"127.0.0.1:{free_port()}"},
                "trunks": [{"name": "a", "secret": SECRET_A}],
            }
        )
    )
    tls = {"cert_file": "server.crt", "key_file": "server.key"}
    write_web_config(web, {"tls_server_config": tls, "basic_auth_users": {"alice": bhash(ALICE_PW)}})
    from exporter.config import load_config

    config = load_config(str(cfg_path))
    registry = CollectorRegistry()
    app = create_app(config, registry, role="metrics", config_path=str(cfg_path))
    rt = app[RUNTIME]
    ctx = install_web_config(app, rt, config)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    url, cctx = f"https://127.0.0.1:{port}/metrics", pki.client_ctx()
    reload_ok: Callable[[], float | None] = lambda: registry.get_sample_value(  # noqa: E731
        "vobiz_config_last_reload_successful"
    )
    try:
        assert (await fetch(url, cctx, auth("bob", BOB_PW)))[0] == 401
        write_web_config(
            web, {"tls_server_config": tls, "basic_auth_users": {"alice": bhash(ALICE_PW), "bob": bhash(BOB_PW)}}
        )
        rt.reload()
        assert (await fetch(url, cctx, auth("bob", BOB_PW)))[0] == 200
        assert reload_ok() == 1.0
        # A broken file fails the reload; the old users stay.
        write_web_config(web, {"tls_server_config": tls, "basic_auth_users": {"carol": "not-a-hash"}})
        with pytest.raises(ReloadError, match=r"basic_auth_users\.carol: is not a bcrypt hash"):
            rt.reload()
        assert reload_ok() == 0.0
        assert (await fetch(url, cctx, auth("bob", BOB_PW)))[0] == 200
        # Removing a user takes effect (the cache is cleared on reload).
        write_web_config(web, {"tls_server_config": tls, "basic_auth_users": {"alice": bhash(ALICE_PW)}})
        rt.reload()
        assert (await fetch(url, cctx, auth("bob", BOB_PW)))[0] == 401
        # Turning TLS off (or changing the client-auth policy) needs a restart.
        write_web_config(web, {"basic_auth_users": {"alice": bhash(ALICE_PW)}})
        with pytest.raises(ReloadError, match="tls_server_config: changed: needs a restart"):
            rt.reload()
        assert (await fetch(url, cctx, auth("alice", ALICE_PW)))[0] == 200
    finally:
        await runner.cleanup()


# --- the real process: TLS on both listeners, reload by SIGHUP and /-/reload --------------------


def _https_get(
    url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None, method: str = "GET", data: bytes | None = None
) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    import socket

    from cryptography import x509

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.e2e
def test_serve_process_tls_both_listeners_and_reload(tmp_path: Path, pki: PKI) -> None:
    mport, wport = free_port(), free_port()
    web = tmp_path / "web.yml"
    tls = {"cert_file": "server.crt", "key_file": "server.key"}
    write_web_config(web, {"tls_server_config": tls, "basic_auth_users": {"alice": bhash(ALICE_PW)}})
    wcert, wkey = pki.server_cert("webhook")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "web": {"listen_address": f"127.0.0.1:{mport}"},
                "webhook": {
                    "listen_address": f"127.0.0.1:{wport}",
                    "tls": {"cert_file": str(wcert), "key_file": str(wkey)},
                },
                "trunks": [{"name": "a", "id": TRUNK_A_ID, "secret_env": "VOBIZ_TLS_TEST_SECRET"}],
            }
        )
    )
    env = {**os.environ, "VOBIZ_TLS_TEST_SECRET": SECRET_A, "VOBIZ_EXPORTER_NO_UVLOOP": ""}
    proc = start_process(
        [
            sys.executable,
            "-m",
            "exporter",
            "serve",
            "--config",
            str(cfg),
            "--web.config.file",
            str(web),
            "--web.enable-lifecycle",
        ],
        tmp_path / "exporter.log",
        env=env,
    )
    ctx = pki.client_ctx()
    murl, wurl = f"https://127.0.0.1:{mport}", f"https://127.0.0.1:{wport}"
    try:
        wait_until(lambda: _https_get(wurl + "/-/healthy", ctx)[0] == 200, 20, what="exporter over TLS")
        # Webhook over TLS (no basic auth there: the HMAC authenticates).
        raw = encode(call_initiated())
        assert _https_get(wurl + "/webhook/a", ctx, headers_for(raw), "POST", raw)[0] == 200
        # Metrics: TLS + basic auth.
        assert _https_get(murl + "/metrics", ctx)[0] == 401
        status, body = _https_get(murl + "/metrics", ctx, auth("alice", ALICE_PW))
        assert status == 200
        assert b'vobiz_webhook_requests_total{outcome="accepted",trunk="a"} 1.0' in body
        assert _https_get(murl + "/metrics", ctx, auth("bob", BOB_PW))[0] == 401

        # SIGHUP re-reads the web config: bob appears.
        write_web_config(
            web, {"tls_server_config": tls, "basic_auth_users": {"alice": bhash(ALICE_PW), "bob": bhash(BOB_PW)}}
        )
        proc.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: _https_get(murl + "/metrics", ctx, auth("bob", BOB_PW))[0] == 200, 10, what="bob")

        # A renewed certificate at the same path is served after a reload, without a restart.
        old_serial = _peer_serial(mport, ctx)
        new_leaf = pki.ca.issue_cert("127.0.0.1")
        (tmp_path / "server.crt").write_bytes(b"".join(p.bytes() for p in new_leaf.cert_chain_pems))
        new_leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
        status, body = _https_get(murl + "/-/reload", ctx, auth("bob", BOB_PW), "POST", b"")
        assert (status, body) == (200, b"Reloaded.\n")
        assert _peer_serial(mport, ctx) != old_serial

        # A broken web config fails the reload with 500 and keeps the old one.
        write_web_config(web, {"tls_server_config": tls, "basic_auth_users": {"alice": "$2b$10$short"}})
        status, body = _https_get(murl + "/-/reload", ctx, auth("bob", BOB_PW), "POST", b"")
        assert status == 500
        assert b"basic_auth_users.alice: is not a bcrypt hash" in body
        assert b"$2b$10$short" not in body
        status, body = _https_get(murl + "/metrics", ctx, auth("bob", BOB_PW))
        assert status == 200
        assert b"vobiz_config_last_reload_successful 0.0" in body
    finally:
        proc.stop()
    log = proc.log()
    assert "$2b$" not in log and ALICE_PW not in log and BOB_PW not in log and SECRET_A not in log
    assert "reload failed" in log
