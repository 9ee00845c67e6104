"""Small loopback receivers that speak the HTTP sinks' protocols (Splunk HEC, Elasticsearch _bulk, a
JSON webhook), for the tests and for the README's examples. Each can fail its first N requests with 503."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, kind: str, fail_first: int = 0, token: str = "") -> None:
        self.kind, self.fail_first, self.token = kind, fail_first, token
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        self.bodies: list[bytes] = []  # bodies of the requests answered 2xx, as received
        self.accepted: Counter[str] = Counter()  # alert id -> times accepted
        self.rejected_items = 0

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests += 1
            if self.requests <= self.fail_first:
                self.refused += 1
                return 503, {"error": "warming up"}
            if self.kind == "hec":
                return self._hec(path, headers, body)
            if self.kind == "bulk":
                return self._bulk(path, headers, body)
            return self._webhook(body)

    def _hec(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        if path != "/services/collector/event":
            return 404, {"text": "not found", "code": 404}
        if headers.get("Authorization") != f"Splunk {self.token}":
            return 401, {"text": "Invalid token", "code": 4}
        text, events, i = body.decode(), [], 0
        decoder = json.JSONDecoder()
        while i < len(text):  # HEC batches are JSON objects written one after another
            event, i = decoder.raw_decode(text, i)
            events.append(event)
        if any("event" not in e for e in events):
            return 400, {"text": "Event field is required", "code": 12}
        self._accept(body, [e["event"]["alert_id"] for e in events])
        return 200, {"text": "Success", "code": 0}

    def _bulk(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        if path != "/_bulk" or headers.get("Content-Type") != "application/x-ndjson":
            return 400, {"error": "expected NDJSON to /_bulk"}
        lines = body.decode().splitlines()
        items, ok = [], []
        for action, doc in zip(lines[0::2], lines[1::2], strict=True):
            meta = json.loads(action)["index"]
            json.loads(doc)
            # The first item of the first accepted bulk request is refused, as a busy cluster does.
            if self.rejected_items == 0:
                self.rejected_items += 1
                error = {"type": "es_rejected_execution_exception", "reason": "queue full"}
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 429, "error": error}})
            else:
                ok.append(meta["_id"])
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201}})
        self._accept(body, ok)
        return 200, {"took": 1, "errors": len(ok) < len(items), "items": items}

    def _webhook(self, body: bytes) -> tuple[int, dict[str, Any]]:
        doc = json.loads(body)
        self._accept(body, [doc["alert_id"]] if "alert_id" in doc else [doc["text"]])
        return 200, {"ok": True}

    def _accept(self, body: bytes, ids: list[str]) -> None:
        self.bodies.append(body)
        self.accepted.update(ids)


@contextmanager
def serving(receiver: Receiver) -> Iterator[str]:
    """Serve the receiver on a free loopback port; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code, answer = receiver.handle(self.path, self.headers, body)
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
