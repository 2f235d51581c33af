"""The inspector page (web/) in a real Chromium, driven over the DevTools protocol on a pipe (no driver, no websocket).

The page is served by `distillgan view`'s server on 127.0.0.1; files are fed through the page's file input.
Every valid vector and a sample of invalid ones are opened and what the page shows is checked; no request
may leave the page's own files. A screenshot of the demo model and the time a 2 GiB model takes to show its
metadata are kept in the artifacts folder (DISTILLGAN_ARTIFACTS, default .artifacts/browser); the time is
recorded there and printed, not asserted (a wall-clock bound on a shared 2-core machine would be flaky).
CI installs Chromium (`.ci/run`); without it these tests are skipped with the reason.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillgan.view import ViewServer

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs it)")
ARTIFACTS = Path(os.environ.get("DISTILLGAN_ARTIFACTS", ROOT / ".artifacts" / "browser"))
V1_MESSAGE = "This model was saved in v1 format which is no longer supported. Please retrain your model."


class Browser:
    """Headless Chromium with --remote-debugging-pipe: JSON messages separated by NUL on fds 3 (in) and 4 (out)."""

    def __init__(self, user_data_dir: Path) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # the child's fds 3 and 4 must be these pipes: move them above any number dup2 could clobber
        import fcntl

        hi_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)

        def child_fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-default-apps", "--mute-audio", f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(3, 4), preexec_fn=child_fds)  # noqa: PLW1509 - places the pipes on fds 3 and 4
        for fd in (to_child_r, from_child_w, hi_r, hi_w):
            os.close(fd)
        self._out = os.fdopen(to_child_w, "wb", buffering=0)
        self._in = os.fdopen(from_child_r, "rb", buffering=0)
        self._next = 0
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()
        self.session: str | None = None

    def _pump(self) -> None:
        buf = b""
        while True:
            chunk = self._in.read(1 << 16)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg and msg["id"] in self._waiting:
                    self._waiting.pop(msg["id"]).put(msg)
                else:
                    self.events.put(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True, timeout: float = 60) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            mid = self._next
            box: queue.Queue[dict[str, Any]] = queue.Queue()
            self._waiting[mid] = box
            msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
            if session and self.session:
                msg["sessionId"] = self.session
            self._out.write(json.dumps(msg).encode() + b"\0")
        reply = box.get(timeout=timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1400, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && !!window.distillganInspector")

    def eval(self, expression: str, timeout: float = 60) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(f"!!({condition})"):
                    return
            except RuntimeError:
                pass
            time.sleep(0.02)
        raise TimeoutError(condition)

    def requests(self) -> list[str]:
        urls = []
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return urls
            if ev.get("method") == "Network.requestWillBeSent":
                urls.append(ev["params"]["request"]["url"])

    def choose_file(self, path: Path) -> float:
        """Give the page's file input this file; the wall-clock seconds until the page shows a verdict."""
        self.eval("document.getElementById('status').dataset.state = 'idle'; delete document.body.dataset.openMs; true")
        doc = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": doc, "selector": "#file"})["nodeId"]
        start = time.monotonic()
        self.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node})
        self.wait_for("['ok', 'error'].includes(document.getElementById('status').dataset.state) && document.body.dataset.openMs")
        return time.monotonic() - start

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=10)
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._in.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Browser, ViewServer]]:
    srv = ViewServer(str(VECTORS / "valid" / "minimal.distillgan"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    browser = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        browser.open(srv.url.split("?")[0])  # the page alone; files come through the file input
        yield browser, srv
    finally:
        browser.close()
        srv.shutdown()
        srv.server_close()


def _own(srv: ViewServer, urls: list[str]) -> list[str]:
    """The URLs that are not the page's own files (or the served model)."""
    origin = f"http://127.0.0.1:{srv.server_address[1]}/{srv.token}/"
    return [u for u in urls if not u.startswith(origin)]


def _shown(browser: Browser) -> dict[str, Any]:
    return browser.eval("""(() => {
      const $ = (id) => document.getElementById(id);
      const meta = Object.fromEntries([...$('meta').rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent]));
      const voc = Object.fromEntries([...$('vocoder').rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent]));
      return {state: $('status').dataset.state, status: $('status').textContent, errorHidden: $('error').hidden,
              code: $('error-code').textContent, message: $('error-message').textContent, meta, voc,
              members: [...$('members').tBodies[0].rows].map((r) => r.cells[0].textContent),
              tensors: $('tensors').tBodies[0].rows.length, count: $('count').textContent,
              totals: [...$('totals').tBodies[0].rows].map((r) => [r.dataset.dtype, r.cells[1].textContent]),
              bars: $('chart').querySelectorAll('.bar').length, tree: $('tree').textContent,
              openMs: Number(document.body.dataset.openMs)};
    })()""")


def test_every_valid_vector_shows_its_metadata_members_and_tensors(page: tuple[Browser, ViewServer]) -> None:
    browser, srv = page
    browser.requests()
    for v in (x for x in INDEX["vectors"] if x["valid"]):
        browser.choose_file(VECTORS / v["file"])
        browser.wait_for("document.getElementById('count').textContent !== ''")
        shown = _shown(browser)
        manifest = v["expected"]["manifest"]
        assert shown["state"] == "ok" and shown["errorHidden"], (v["id"], shown["status"], shown["code"], shown["message"])
        assert shown["meta"]["name"] == json.dumps(manifest["metadata"]["name"], ensure_ascii=False), v["id"]
        assert shown["meta"]["model_id"] == json.dumps(manifest["metadata"]["model_id"], ensure_ascii=False), v["id"]
        assert shown["members"] == v["members"], v["id"]
        n = sum(len(d) for d in v["expected"]["digests"].values())
        assert shown["count"].startswith(f"{n} of {n} tensors"), (v["id"], shown["count"])
        assert dict(shown["totals"])["all"] == str(n), v["id"]
        assert ("none bundled" in shown["voc"].get("vocoder", "")) == (manifest["vocoder_state"] is None), v["id"]
        browser.eval("document.getElementById('count').textContent = ''; true")
    assert _own(srv, browser.requests()) == []


def test_invalid_files_show_their_code_and_message(page: tuple[Browser, ViewServer]) -> None:
    browser, srv = page
    browser.requests()
    invalid = [x for x in INDEX["vectors"] if not x["valid"] and not x.get("needs")]
    sample = invalid[::8] + [x for x in invalid if x["expected"]["code"] in ("legacy-distill-v1", "pickle", "safetensors-file")]
    for v in sample:
        browser.choose_file(VECTORS / v["file"])
        shown = _shown(browser)
        assert shown["state"] == "error" and not shown["errorHidden"], v["id"]
        assert shown["code"] == v["expected"]["code"], (v["id"], shown["code"], shown["message"])
        if shown["code"] == "legacy-distill-v1":
            assert shown["message"] == V1_MESSAGE
    assert len(sample) >= 50
    assert _own(srv, browser.requests()) == []


def test_demo_model_verify_histogram_sort_filter_and_screenshot(page: tuple[Browser, ViewServer], tmp_path: Path) -> None:
    browser, srv = page
    browser.requests()
    demo = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "distillgan", "demo", "--dir", str(demo)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = max((p for p in demo.glob("*.distillgan") if p.stat().st_size > 0), key=lambda p: p.stat().st_size)
    browser.choose_file(model)
    browser.wait_for("document.getElementById('hist').querySelectorAll('rect').length === 60")
    shown = _shown(browser)
    assert shown["state"] == "ok" and shown["voc"]["type"] == "hifigan", shown
    assert shown["voc"]["resumable checkpoint"].startswith("yes")
    assert shown["bars"] >= 2 and "spectrogram_config" in shown["tree"]
    # verify: progress to the end, every CRC-32 intact
    browser.eval("document.getElementById('verify').click(); true")
    browser.wait_for("document.getElementById('verify-result').dataset.state === 'ok'")
    assert browser.eval("(() => { const p = document.getElementById('verify-progress'); return p.value === p.max && p.max > 0; })()")
    # sort by bytes, largest first (two clicks), then filter
    browser.eval("const th = document.querySelector('th[data-key=nbytes]'); th.click(); th.click(); true")
    sizes = browser.eval("[...document.getElementById('tensors').tBodies[0].rows].map((r) => Number(r.cells[5].textContent.replaceAll(',', '')))")
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == shown["tensors"]
    browser.eval("const f = document.getElementById('filter'); f.value = 'bias'; f.dispatchEvent(new Event('input')); true")
    names = browser.eval("[...document.getElementById('tensors').tBodies[0].rows].map((r) => r.cells[1].textContent)")
    assert names and all("bias" in n for n in names) and len(names) < shown["tensors"]
    browser.eval("const g = document.getElementById('filter'); g.value = ''; g.dispatchEvent(new Event('input')); true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(ARTIFACTS / "demo-model.png")
    assert (ARTIFACTS / "demo-model.png").stat().st_size > 10_000
    if os.environ.get("DISTILLGAN_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / "demo-model.png", ROOT / "web" / "screenshot.png")
    # a damaged file: verify names the member
    browser.choose_file(VECTORS / "invalid" / "crc-model-data.distillgan")
    browser.eval("document.getElementById('verify').click(); true")
    browser.wait_for("document.getElementById('verify-result').dataset.state === 'error'")
    assert "crc-mismatch" in browser.eval("document.getElementById('verify-result').textContent")
    assert _own(srv, browser.requests()) == []


def test_histograms_of_fp16_and_bf16_tensors(page: tuple[Browser, ViewServer]) -> None:
    browser, _ = page
    browser.choose_file(VECTORS / "valid" / "all-dtypes.distillgan")
    browser.wait_for("document.getElementById('hist-tensor').options.length > 0")
    for name in ("state_dict/f16", "state_dict/bf16"):
        browser.eval(f"(() => {{ const s = document.getElementById('hist-tensor'); s.value = 'model.safetensors\\n{name}'; "
                     "document.getElementById('hist').dataset.values = ''; s.dispatchEvent(new Event('change')); return true; })()")
        browser.wait_for("document.getElementById('hist').dataset.values === '5'")
        info = browser.eval("document.getElementById('hist-info').textContent")
        assert "min -1.000" in info and "max 1.000" in info, (name, info)


def _sparse_model(path: Path, n_tensors: int, tensor_bytes: int) -> None:
    """A valid model whose tensors (F16, zeros) are holes of a sparse file: 2 GiB written in milliseconds."""
    spec = importlib.util.spec_from_file_location("dg_vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    names = [f"state_dict/blocks.{i // 4}.{['conv', 'norm', 'attn', 'mlp'][i % 4]}.weight" for i in range(n_tensors)]
    header: dict[str, Any] = {}
    for i, name in enumerate(sorted(names)):
        header[name] = {"dtype": "F16", "shape": [tensor_bytes // 2], "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 64)
    parts = [struct.pack("<Q", len(text)) + text, n_tensors * tensor_bytes]
    m = gen.base_manifest(metadata=gen.metadata(name="Two GiB model"), state_dict=gen.flat("state_dict/", sorted(names)))
    m["members"] = {"model.safetensors": {"aliases": {}, "size": len(parts[0]) + n_tensors * tensor_bytes}}
    manifest = gen.manifest_bytes(m)
    gen.sparse_zip(path, [("manifest.msgpack", [manifest]), ("model.safetensors", parts)])


def test_a_2_gib_model_shows_its_metadata_at_once(page: tuple[Browser, ViewServer], tmp_path: Path) -> None:
    """Only headers are read: the figure (wall clock until the metadata is on screen) is recorded, not asserted."""
    browser, srv = page
    big = tmp_path / "two-gib.distillgan"
    _sparse_model(big, 512, 4 << 20)
    assert big.stat().st_size > 2 << 30
    browser.requests()
    seconds = browser.choose_file(big)
    shown = _shown(browser)
    assert shown["state"] == "ok" and shown["meta"]["name"] == '"Two GiB model"', shown["status"]
    read = browser.eval("window.distillganInspector.lastBytesRead")
    assert read < 256 << 10, read  # headers only: what makes it instant, whatever the file's size
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figure = {"file_bytes": big.stat().st_size, "tensors": 512, "bytes_read": read, "page_open_ms": round(shown["openMs"], 1),
              "wall_ms_file_input_to_metadata": round(seconds * 1000, 1)}
    (ARTIFACTS / "open-2gib.json").write_text(json.dumps(figure, indent=1) + "\n", encoding="utf-8")
    print(f"2 GiB model: metadata shown {figure['page_open_ms']} ms after the file was chosen (page), "
          f"{figure['wall_ms_file_input_to_metadata']} ms wall through DevTools; {read} bytes read")
    assert _own(srv, browser.requests()) == []


def test_distillgan_view_serves_the_page_and_the_model_on_loopback(tmp_path: Path) -> None:
    """`distillgan view FILE --no-browser` prints the URL; the page opened there reads the model by range requests."""
    proc = subprocess.Popen([sys.executable, "-m", "distillgan", "view", str(VECTORS / "valid" / "with-vocoder.distillgan"), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        browser = Browser(tmp_path / "profile")
        try:
            browser.open(url)
            browser.wait_for("document.getElementById('status').dataset.state === 'ok'")
            shown = _shown(browser)
            assert shown["members"] == ["manifest.msgpack", "model.safetensors", "vocoder.safetensors"]
            assert shown["voc"]["type"] == "hifigan"
            origin = url.split("/web/")[0] + "/"
            assert [u for u in browser.requests() if not u.startswith(origin)] == []
        finally:
            browser.close()
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError):  # nothing outside the token's paths
            urllib.request.urlopen(url.split("/web/")[0].rsplit("/", 1)[0] + "/web/index.html", timeout=10)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
