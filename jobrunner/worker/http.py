"""The worker's HTTP endpoint (`[http] listen`): /healthz, /readyz and /metrics.

It runs in daemon threads of its own (one per request), so a slow probe or scrape never blocks
the worker's event loop, and the worker's loop never delays a probe. The checks are callables
that the worker provides; each returns `(ok, one-line reason)`:

- `/healthz`: 200 while the worker's loop and heartbeat are alive, else 503 (liveness);
- `/readyz`: 200 while the database answers and the schema is current, else 503 (readiness);
- `/metrics`: the Prometheus text exposition of `Metrics`.

Bodies are one line of plain text (`ok: ...` or the reason), so that `curl` and
`jobrunner health` can show them as they are. Requests are not logged.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from jobrunner.worker.metrics import Metrics

__all__ = ["Check", "HttpServer", "start_http"]

Check = Callable[[], tuple[bool, str]]

_TEXT = "text/plain; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics
    checks: dict[str, Check]

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup that can hang in a
        # container); the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a client may take to send its request
    server_version = "jobrunner"
    sys_version = ""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/metrics":
            body, content_type = self.server.metrics.render()
            self._send(200, body, content_type)
        elif path in self.server.checks:
            ok, reason = _run_check(self.server.checks[path])
            text = (f"ok: {reason}" if reason else "ok") if ok else (reason or "failed")
            self._send(200 if ok else 503, (text + "\n").encode(), _TEXT)
        else:
            self._send(404, b"not found: try /healthz, /readyz or /metrics\n", _TEXT)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Probes every few seconds must not flood the worker's log."""


def _run_check(check: Check) -> tuple[bool, str]:
    """Call a check; an exception is a failed check whose reason is the exception."""
    try:
        ok, reason = check()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return False, f"check failed: {type(exc).__name__}: {first}".rstrip(": ")
    return bool(ok), " ".join(str(reason).split())  # one line


class HttpServer:
    """A running endpoint; `port` is the bound port (useful after listening on port 0)."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="jobrunner-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket (requests in flight end with their thread)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_http(
    host: str,
    port: int,
    *,
    metrics: Metrics,
    healthy: Check,
    ready: Check,
) -> HttpServer:
    """Listen on `host:port` (port 0: any free port) and serve from a daemon thread.

    Raises OSError when the address cannot be bound (in use, bad host): the caller should
    refuse to start rather than run without the endpoint it was configured to serve.
    """

    class Server(_Server):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, port), _Handler)
    server.metrics = metrics
    server.checks = {"/healthz": healthy, "/readyz": ready}
    return HttpServer(server)
