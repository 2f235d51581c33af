"""The HTTP client's reach (FORMAT.md §12.2): proxies from the environment, headers and tokens for private servers,
retries of idempotent range reads, and TLS with a CA bundle. Real servers on 127.0.0.1 (tests/support/remote_server.py)
and a real forwarding proxy written here."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import torch
from remote_server import Request, Server, raw_response
from test_remote_hostile import tls  # noqa: F401  # the self-signed certificate fixture

from distillgan import DistillganError, ModelMetadata, inspect, load_model, save_model, verify
from distillgan.source import http as source_http

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
TOKEN = "s3cret-t0ken"


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*PROXY_VARS, source_http.HEADERS_ENV, source_http.TOKEN_ENV, source_http.CA_BUNDLE_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sd = {"w": torch.arange(1 << 18, dtype=torch.float32), "b": torch.ones(16)}
    meta = ModelMetadata(name="client", model_id="client", save_date="2026-11-28T00:00:00+00:00")
    return save_model(sd, {"n_mels": 80}, {}, meta, tmp_path_factory.mktemp("client"))


class Proxy:
    """A forwarding HTTP proxy on 127.0.0.1: takes absolute-form requests, asks the origin, relays the answer whole."""

    HOP = {"connection", "proxy-connection", "proxy-authorization", "keep-alive", "transfer-encoding"}

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.seen.append({"target": self.path, "auth": self.headers.get("Proxy-Authorization"),
                                   "authorization": self.headers.get("Authorization")})
                parts = urlsplit(self.path)
                upstream = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP}
                    upstream.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
                    resp = upstream.getresponse()
                    body = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in proxy.HOP:
                            self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    upstream.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


# --- proxies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("var", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_requests_go_through_the_proxy_the_environment_names(server: Server, proxy: Proxy, model: Path,
                                                             monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    url = server.add("/m.distillgan", model.read_bytes())
    monkeypatch.setenv(var, proxy.url.replace("http://", "http://user:p%40ss@"))
    assert inspect(url) == inspect(model)
    assert len(proxy.seen) == len(server.log) >= 2  # every request the server got came through the proxy
    assert {r["target"] for r in proxy.seen} == {url}  # absolute-form requests for the URL
    assert {r["auth"] for r in proxy.seen} == {"Basic dXNlcjpwQHNz"}  # the proxy's credentials from its URL: user:p@ss
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert verify(url, sha256=digest)["sha256"] == digest


def test_no_proxy_bypasses_the_proxy(server: Server, proxy: Proxy, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.add("/m.distillgan", model.read_bytes())
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert inspect(url) == inspect(model)
    assert proxy.seen == [] and len(server.log) >= 2


def test_a_socks_proxy_is_refused_by_name(server: Server, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.add("/m.distillgan", model.read_bytes())
    monkeypatch.setenv("HTTP_PROXY", "socks5://127.0.0.1:9")
    with pytest.raises(DistillganError) as exc:
        inspect(url)
    assert exc.value.code == "remote-unavailable" and "socks5" in str(exc.value)
    assert server.log == []


# --- headers and tokens -------------------------------------------------------------------------


def _demand_token(seen: list[str | None]) -> Any:
    def hook(req: Request) -> bool:
        seen.append(req.headers.get("Authorization"))
        if req.headers.get("Authorization") != f"Bearer {TOKEN}":
            raw_response(req.handler, 401, {"Content-Length": "0", "WWW-Authenticate": "Bearer"})
            return True
        return False

    return hook


def test_a_server_demanding_a_bearer_token_gets_it(server: Server, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.add("/m.distillgan", model.read_bytes())
    seen: list[str | None] = []
    server.hook = _demand_token(seen)
    with pytest.raises(DistillganError) as exc:
        inspect(url)
    assert exc.value.code == "remote-io" and "401" in str(exc.value) and "storage_options" in str(exc.value), exc.value
    assert seen == [None]

    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert inspect(url, storage_options={"headers": headers}) == inspect(model)
    loaded = load_model(url, storage_options={"headers": headers})
    assert torch.equal(loaded.state_dict["w"], torch.arange(1 << 18, dtype=torch.float32))

    monkeypatch.setenv(source_http.TOKEN_ENV, TOKEN)  # the CLI's way, and the library's without storage_options
    assert inspect(url) == inspect(model)
    monkeypatch.delenv(source_http.TOKEN_ENV)
    monkeypatch.setenv(source_http.HEADERS_ENV, json.dumps(headers))
    assert inspect(url) == inspect(model)
    assert set(seen[1:]) == {f"Bearer {TOKEN}"}


def test_the_cli_sends_the_token_from_the_environment(server: Server, model: Path) -> None:
    url = server.add("/m.distillgan", model.read_bytes())
    server.hook = _demand_token([])
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    r = subprocess.run([sys.executable, "-m", "distillgan", "verify", url], capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "remote-io" in out and "401" in out and TOKEN not in out, out
    r = subprocess.run([sys.executable, "-m", "distillgan", "verify", url], capture_output=True, text=True, timeout=120,
                       env={**env, source_http.TOKEN_ENV: TOKEN})
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr


def test_headers_never_follow_a_redirect_to_another_host(server: Server, model: Path) -> None:
    other = Server()
    try:
        target = other.add("/m.distillgan", model.read_bytes())
        seen: list[str | None] = []
        seen_there: list[str | None] = []

        def record(req: Request) -> bool:
            seen_there.append(req.headers.get("Authorization") or req.headers.get("X-Team"))
            return False

        other.hook = record

        def hook(req: Request) -> bool:
            seen.append(req.headers.get("Authorization"))
            raw_response(req.handler, 302, {"Location": target, "Content-Length": "0"})
            return True

        server.hook = hook
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Team": "audio"}
        loaded = load_model(server.url("/m.distillgan"), storage_options={"headers": headers})
        assert torch.equal(loaded.state_dict["b"], torch.ones(16))
        assert seen == [f"Bearer {TOKEN}"]  # the origin got it once; every later request went to the target
        assert len(seen_there) >= 2 and set(seen_there) == {None}, seen_there
    finally:
        other.close()


@pytest.mark.parametrize(("env", "options", "needle"), [
    ({source_http.HEADERS_ENV: "{not json " + TOKEN}, None, source_http.HEADERS_ENV),
    ({source_http.HEADERS_ENV: json.dumps([TOKEN])}, None, "object"),
    ({}, {"headers": {"Range": "bytes=0-1"}}, "Range"),
    ({}, {"headers": {"Authorization": f"Bearer {TOKEN}\r\nX-Injected: 1"}}, "line breaks"),
    ({}, {"headers": {"Bad Name": TOKEN}}, "header name"),
    ({}, {"client_kwargs": {}}, "client_kwargs"),
])
def test_bad_headers_are_refused_without_showing_their_values(server: Server, model: Path, monkeypatch: pytest.MonkeyPatch,
                                                               env: dict[str, str], options: dict | None, needle: str) -> None:
    url = server.add("/m.distillgan", model.read_bytes())
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(DistillganError) as exc:
        inspect(url, storage_options=options)
    assert exc.value.code == "invalid-input" and needle in str(exc.value) and TOKEN not in str(exc.value), exc.value
    assert server.log == []


def test_storage_options_with_a_local_path_are_refused(model: Path) -> None:
    with pytest.raises(DistillganError) as exc:
        inspect(model, storage_options={"headers": {"Authorization": "x"}})
    assert exc.value.code == "invalid-input"


# --- retries --------------------------------------------------------------------------------------


def test_a_connection_dropped_once_is_retried(server: Server, model: Path) -> None:
    url = server.add("/m.distillgan", model.read_bytes())

    def hook(req: Request) -> bool:
        if req.index in (0, 2):  # the first request and a later one: hang up without a word
            req.handler.close_connection = True
            return True
        return False

    server.hook = hook
    loaded = load_model(url, verify=True)
    assert torch.equal(loaded.state_dict["w"], torch.arange(1 << 18, dtype=torch.float32))
    assert [r["status"] for r in server.log[:3]] == ["hook", 206, "hook"]


def test_a_503_then_a_206_succeeds(server: Server, model: Path) -> None:
    url = server.add("/m.distillgan", model.read_bytes())

    def hook(req: Request) -> bool:
        if req.index == 0:
            raw_response(req.handler, 503, {"Content-Length": "0", "Retry-After": "0"})
            return True
        return False

    server.hook = hook
    assert inspect(url) == inspect(model)
    assert [r["status"] for r in server.log[:2]] == ["hook", 206]


def test_retries_are_bounded(server: Server, model: Path) -> None:
    url = server.add("/m.distillgan", model.read_bytes())

    def hook(req: Request) -> bool:
        raw_response(req.handler, 503, {"Content-Length": "0"})
        return True

    server.hook = hook
    with pytest.raises(DistillganError) as exc:
        inspect(url)
    assert exc.value.code == "remote-io" and "503" in str(exc.value)
    assert len(server.log) == 1 + source_http.REMOTE_RETRIES


def test_a_client_error_is_not_retried(server: Server) -> None:
    def hook(req: Request) -> bool:
        raw_response(req.handler, 403, {"Content-Length": "0"})
        return True

    server.hook = hook
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/m.distillgan"))
    assert exc.value.code == "remote-io" and "403" in str(exc.value)
    assert len(server.log) == 1


# --- TLS --------------------------------------------------------------------------------------------


def test_tls_is_verified_and_a_ca_bundle_can_be_named(tls: tuple[str, str], model: Path,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    secure = Server(tls=tls)
    try:
        url = secure.add("/m.distillgan", model.read_bytes())
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        with pytest.raises(DistillganError) as exc:
            inspect(url)  # a self-signed certificate the system does not trust
        assert exc.value.code == "remote-io" and "CERTIFICATE_VERIFY_FAILED" in str(exc.value), exc.value
        monkeypatch.setenv(source_http.CA_BUNDLE_ENV, tls[0])
        assert inspect(url) == inspect(model)
        monkeypatch.setenv(source_http.CA_BUNDLE_ENV, tls[0] + ".absent")
        with pytest.raises(DistillganError) as exc:
            inspect(url)
        assert exc.value.code == "invalid-input" and source_http.CA_BUNDLE_ENV in str(exc.value)
    finally:
        secure.close()
