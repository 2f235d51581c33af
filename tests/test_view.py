"""`distillgan view`'s server (distillgan/view.py) without a browser: what it serves, and what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillgan.view import ViewServer, assets_root

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "spec" / "vectors" / "valid" / "with-vocoder.distillgan"


@pytest.fixture
def server() -> Iterator[ViewServer]:
    srv = ViewServer(str(MODEL))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # loopback only
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, body, dict(e.headers)


def test_serves_the_page_its_reader_and_ranges_of_the_model(server: ViewServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}/{server.token}"
    status, body, _ = _get(server.url)
    assert status == 200 and b"distillgan inspector" in body
    assert _get(f"{base}/js/distillgan.mjs")[0] == 200
    status, _, headers = _get(f"{base}/model", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == MODEL.stat().st_size
    status, body, headers = _get(f"{base}/model", {"Range": "bytes=0-3"})
    assert status == 206 and body == b"PK\x03\x04" and headers["Content-Range"].endswith(f"/{MODEL.stat().st_size}")


@pytest.mark.parametrize("path", ["/web/index.html", "/{token}/web/../../pyproject.toml", "/{token}/web/%2e%2e/pyproject.toml",
                                  "/{token}/tests/test_view.py", "/{token}/web/.hidden", "/{wrong}/web/index.html", "/{token}/js/node.mjs"])
def test_serves_nothing_else(server: ViewServer, path: str) -> None:
    """Only the token's paths, only the page's own files (no '..', no other folder, no other kind of file)."""
    url = f"http://127.0.0.1:{server.server_address[1]}" + path.format(token=server.token, wrong="x" * len(server.token))
    status = _get(url)[0]
    assert status == 404 or (path.endswith("node.mjs") and status == 200), (path, status)


def test_a_range_past_the_end_or_no_range_is_refused(server: ViewServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}/{server.token}/model"
    assert _get(base)[0] == 416
    assert _get(base, {"Range": f"bytes=0-{MODEL.stat().st_size}"})[0] == 416
    assert _get(base, {"Range": "bytes=5-1"})[0] == 416


def test_the_page_and_reader_ship_in_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["web"] == "distillgan/_web/web" and include["js/distillgan.mjs"] == "distillgan/_web/js/distillgan.mjs"
    assert assets_root() == ROOT  # a source checkout uses its own web/ and js/


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_view_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.distillgan"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "distillgan", "view", str(fifo), "--no-browser"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1 and "error [not-regular-file]" in proc.stderr
