"""A stand-in for the internal enrichment service, on a real loopback socket, so the example needs
no network. It echoes the `baggage` header it received."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["local_services_url"]

_lock = threading.Lock()
_url: str | None = None


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        status, body = (200, {"industry": "software", "employees": 120,
                              "baggage_seen": self.headers.get("baggage", "")}) \
            if self.path.startswith("/enrich") else (404, {"error": "not found"})
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def local_services_url() -> str:
    """Start the stand-in on first use (not at import: startup stays fast)."""
    global _url
    with _lock:
        if _url is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            threading.Thread(target=server.serve_forever, name="local-services", daemon=True).start()
            _url = f"http://127.0.0.1:{server.server_address[1]}"
        return _url
