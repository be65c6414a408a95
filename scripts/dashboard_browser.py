#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium opens the page of a
real node with two peers, reads what it rendered (both peers in sync),
clicks keep on a real conflict copy and checks the file on disk, and takes
a screenshot while a file is on its way (target/dashboard.png). Requests
without the token are refused.

Run with `just browser` (also part of `just e2e`). Needs Debian's
`chromium` (installed here when missing, if apt can). Talks to Chromium over
its DevTools protocol with a minimal WebSocket client (Python's standard
library has none). Everything stays on loopback.
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from loopback import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = float(os.environ.get("BROWSER_TIMEOUT", "60"))



def wait_for(what: str, check, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            print(f"ok   {what}", flush=True)
            return value
        if time.time() > deadline:
            sys.exit(f"FAILED: {what} (within {timeout:.0f} s)")
        time.sleep(0.25)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=False)
    if shutil.which("chromium"):
        return shutil.which("chromium")
    sys.exit("FAILED: no chromium, and it could not be installed (apt-get install chromium)")


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames."""

    def __init__(self, url: str):
        assert url.startswith("ws://")
        hostport, path = url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake cut short")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def send(self, text: str):
        data = text.encode()
        header = bytes([0x81])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("websocket closed")
            out += chunk
        return out

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exactly(8))[0]
            payload = self._exactly(n)
            if b0 & 0x0F in (0x1, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()


class Page:
    """One browser tab, driven over the DevTools protocol."""

    def __init__(self, debug_port: int):
        req = urllib.request.Request(f"http://127.0.0.1:{debug_port}/json/new?about:blank", method="PUT")
        target = json.loads(urllib.request.urlopen(req, timeout=TIMEOUT).read())
        self.ws = WebSocket(target["webSocketDebuggerUrl"])
        self.next = 0

    def call(self, method: str, **params):
        self.next += 1
        self.ws.send(json.dumps({"id": self.next, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r.get("result", {}).get("value")

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""


class Node:
    def __init__(self, name: str, scratch: Path, bport: int, args: list):
        self.name, self.dir = name, scratch / name
        self.dir.mkdir()
        self.log = scratch / f"{name}.log"
        self.bport, self.args = bport, args
        self.proc = None

    def start(self):
        self.port = free_port()
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [str(BIN), "-l", str(self.port), "-b", str(self.bport), "--broadcast-addr", "127.255.255.255", *self.args, str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, RUST_LOG="info"),
            )

    def stop(self):
        stop(self.proc)

def get(url: str, headers=None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=TIMEOUT).status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


BIN = ROOT / "target/release/dirsync"


def main() -> int:
    browser = chromium()
    subprocess.run(["nice", "cargo", "build", "--release", "--bin", "dirsync"], cwd=ROOT, check=True)
    scratch = Path(tempfile.mkdtemp(prefix="dirsync-browser-"))
    bport = free_port(socket.SOCK_DGRAM)
    page_port = free_port()
    # n0 serves the page, and takes file content in slowly, so that a
    # transfer is seen moving.
    nodes = [
        Node("n0", scratch, bport, ["--dashboard", f"127.0.0.1:{page_port}", "--max-recv-rate", "8MB/s"]),
        Node("n1", scratch, bport, ["--no-dashboard"]),
        Node("n2", scratch, bport, ["--no-dashboard"]),
    ]
    chrome = None
    try:
        (nodes[1].dir / "report.txt").write_bytes(b"first version\n")
        for n in nodes:
            n.start()
        wait_for("the report reaches n0", lambda: (nodes[0].dir / "report.txt").exists())
        token = wait_for("the token is made", lambda: (nodes[0].dir / ".dirsync/dashboard-token").exists() and (nodes[0].dir / ".dirsync/dashboard-token").read_text().strip())
        base = f"http://127.0.0.1:{page_port}"
        url = f"{base}/?token={token}"
        # The address rules, from outside a browser.
        assert get(f"{base}/") == 401, "the page without its token"
        assert get(f"{base}/api/state") == 401, "the state without the token"
        assert get(f"{base}/metrics") == 401, "metrics without the token"
        assert get(f"{base}/metrics", {"Authorization": f"Bearer {token}"}) == 200, "metrics with the token"
        assert get(f"{base}/api/state", {"Authorization": f"Bearer {token}", "Origin": "http://evil.example"}) == 403, "another site"
        print("ok   requests without the token, or from another site, are refused", flush=True)

        profile = scratch / "chromium-profile"
        debug_port = free_port()
        chrome = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
             f"--remote-debugging-port={debug_port}", "--remote-allow-origins=*", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for("chromium answers", lambda: get(f"http://127.0.0.1:{debug_port}/json/version") == 200)
        page = Page(debug_port)
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        wait_for("the page shows both peers in sync",
                 lambda: "in sync with every peer" in page.text() and page.text().count("in sync\t") + page.text().count("in sync\n") >= 2)
        print(page.text(), flush=True)

        # A real conflict: n1 edits while stopped, n2 edits later.
        nodes[1].stop()
        (nodes[1].dir / "report.txt").write_bytes(b"offline edit on n1\n")
        time.sleep(1.2)
        (nodes[2].dir / "report.txt").write_bytes(b"later edit on n2\n")
        wait_for("n0 takes n2's edit", lambda: (nodes[0].dir / "report.txt").read_bytes() == b"later edit on n2\n")
        nodes[1].start()
        copy = wait_for("the page lists the conflict copy", lambda: page.eval(
            "(b => b && b.dataset.path)(document.querySelector('button[data-act=\"/api/conflicts/keep\"]'))"))
        page.eval("document.querySelector('button[data-act=\"/api/conflicts/keep\"]').click()")
        wait_for("keep put the copy in place on disk", lambda: (nodes[0].dir / "report.txt").read_bytes() == b"offline edit on n1\n"
                 and not (nodes[0].dir / copy).exists())
        wait_for("and every host follows", lambda: all((n.dir / "report.txt").read_bytes() == b"offline edit on n1\n" for n in nodes))
        wait_for("the page says it was kept", lambda: "kept: it is report.txt now" in page.text())

        # A transfer on its way, for the screenshot.
        with open(nodes[2].dir / "video.bin", "wb") as f:
            f.write(os.urandom(96 * 1024 * 1024))
        wait_for("the page shows the transfer moving", lambda: "to go" in page.text(), timeout=30)
        time.sleep(1.5)
        shot = page.call("Page.captureScreenshot", format="png")
        out = ROOT / "target/dashboard.png"
        out.write_bytes(base64.b64decode(shot["data"]))
        print(f"ok   screenshot of a transfer in progress: {out}", flush=True)
        wait_for("the file arrives", lambda: (nodes[0].dir / "video.bin").exists() and (nodes[0].dir / "video.bin").stat().st_size == 96 * 1024 * 1024, timeout=90)
        print("dashboard in a browser: all checks passed", flush=True)
        return 0
    finally:
        if chrome:
            chrome.kill()
        for n in nodes:
            n.stop()
        if os.environ.get("BROWSER_KEEP"):
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
