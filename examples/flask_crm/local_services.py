"""Stand-ins for the outside world, served on real loopback sockets so the example needs no network:
an enrichment API, a HubSpot-like contacts API and an OpenAI-compatible chat endpoint that
returns token counts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["start_local_services"]

CONTACTS = [{"id": i, "email": f"contact{i}@example.com", "company": f"Company {i}"} for i in range(1, 26)]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the example's stdout clean
        return

    def _json(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.startswith("/enrich"):
            self._json(200, {"industry": "software", "employees": 120,
                             "baggage_seen": self.headers.get("baggage", "")})
        elif self.path.startswith("/hubspot/contacts"):
            self._json(200, {"results": CONTACTS, "baggage_seen": self.headers.get("baggage", "")})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path.startswith("/leads/_search"):  # an Elasticsearch-like search endpoint
            hits = [{"_id": str(c["id"]), "_source": c} for c in CONTACTS[:3]]
            self._json(200, {"hits": {"total": {"value": len(hits)}, "hits": hits}})
        elif self.path.startswith("/v1/chat/completions"):
            prompt = json.dumps(request.get("messages", []))
            self._json(200, {
                "model": request.get("model", "gpt-4o-mini") + "-2024-07-18",
                "choices": [{"message": {"role": "assistant", "content": "Qualified: strong fit."}}],
                "usage": {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 12},
            })
        else:
            self._json(404, {"error": "not found"})


def start_local_services(port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, name="local-services", daemon=True).start()
    return server
