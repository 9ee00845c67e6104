"""Every service's operational surface: Prometheus metrics on /metrics, liveness on /healthz and
readiness on /readyz, served from a background thread on FLOWSENTINEL_METRICS_PORT (0 = off).

Metric names are one closed list here, so dashboards and alerts have a single place to look.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# All FlowSentinel metrics, labelled by service where several services count the same thing.
CONSUMED = Counter("flowsentinel_records_consumed", "Records read from the input topic", ["service"])
PRODUCED = Counter("flowsentinel_records_produced", "Records produced to output topics", ["service", "topic"])
DLQ = Counter("flowsentinel_dlq_records", "Records sent to a dead-letter topic", ["service", "reason"])
ERRORS = Counter("flowsentinel_errors", "Errors by kind", ["service", "kind"])
BATCH_SECONDS = Histogram(
    "flowsentinel_batch_seconds",
    "Time to process one batch",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "flowsentinel_batch_size", "Records per batch", ["service"], buckets=(1, 10, 50, 100, 500, 1000, 5000, 20000)
)
LAG = Gauge("flowsentinel_consumer_lag", "Messages behind the end of the input topic", ["service"])
FLOWS_PUBLISHED = Counter("flowsentinel_flows_published", "Flows published to the flows topic", ["source"])
COLLECTOR_PACKETS = Counter("flowsentinel_collector_packets", "Export datagrams received by version", ["version"])
DECODE_ERRORS = Counter("flowsentinel_decode_errors", "Datagrams or data sets not decoded, by reason", ["reason"])
KERNEL_DROPS = Gauge("flowsentinel_collector_kernel_drops", "Datagrams the kernel dropped: receive buffer full")
WINDOWS_EMITTED = Counter("flowsentinel_windows_emitted", "Host windows the featurizer emitted (both roles)", ["kind"])
OPEN_WINDOWS = Gauge("flowsentinel_open_windows", "Host windows open in the featurizer")
WINDOWS_SCORED = Counter("flowsentinel_windows_scored", "Host windows scored", ["backend"])
ANOMALIES = Counter("flowsentinel_anomalies", "Anomalies raised", ["model"])
MODEL_SECONDS = Histogram(
    "flowsentinel_model_call_seconds",
    "Time of one model backend call (both models of one window role, one scoring batch)",
    ["backend"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_RETRIES = Counter("flowsentinel_model_retries", "Scoring batches retried: model server failed", ["backend"])
MODEL_VERSION = Gauge("flowsentinel_model_version", "Model version the scorer uses", ["model"])
INCIDENTS = Counter("flowsentinel_incidents", "Incidents opened")
ALERTS_SENT = Counter("flowsentinel_alerts_sent", "Alerts delivered", ["sink"])
SINK_ERRORS = Counter("flowsentinel_sink_errors", "Failed sink deliveries", ["sink"])
SUPPRESSED = Counter("flowsentinel_suppressed_anomalies", "Anomalies dropped by a suppression rule", ["rule"])


class Health:
    """Liveness and readiness a service updates; /readyz answers 503 until it is ready."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"
        self.alive: Callable[[], bool] = lambda: True

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready, self.reason = ready, reason


def serve(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Start the endpoint server in a daemon thread; returns it (None when port is 0)."""
    if not port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = health.alive()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
            elif path == "/readyz":
                body = b"ready\n" if health.ready else f"not ready: {health.reason}\n".encode()
                self._reply(200 if health.ready else 503, body)
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:  # scrapes every few seconds would flood the log
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
