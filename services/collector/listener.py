"""`flowsentinel collector --listen 0.0.0.0:2055 [--listen ...]`: receive NetFlow v5/v9/IPFIX over UDP,
decode, publish Flow records to `flows` (keyed by source address, asynchronous, batched by the producer),
and send every datagram it cannot decode to `flows.dlq` with the exporter, the reason and the raw bytes.

The receive loop never raises on input: the decoders raise only DecodeError, which is counted. Counters
go to Prometheus (services.common.metrics) and, for the pipeline's own progress reports, to the Redis
hash `<ns>fs:collector:stats`.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from services.collector.decoders import DecodeError, PacketDecoder
from services.collector.decoders.templates import TemplateCache, Undecodable
from services.collector.publisher import FlowPublisher
from services.common import log, metrics
from services.common.kafka import dlq_record
from services.common.redis_client import sync_redis
from services.common.settings import Settings, load_settings

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: per-socket count of datagrams dropped, in ancillary data
MAX_DATAGRAM = 65535
HOUSEKEEPING_S = 0.5
VERSION_LABELS = {5: "5", 9: "9", 10: "ipfix"}


def parse_listen(text: str) -> tuple[str, int]:
    """'0.0.0.0:2055', '[::]:2055' or ':2055' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class CollectorStats:
    packets: int = 0
    flows: int = 0
    dlq: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    kernel_drops: dict[int, int] = field(default_factory=dict)  # socket fd -> last SO_RXQ_OVFL count
    unflushed_flows: int = 0  # published since the last Redis update


class Listener:
    """UDP sockets -> PacketDecoder -> FlowPublisher; built with its dependencies, idle until `bind`."""

    def __init__(self, settings: Settings, publisher: FlowPublisher, decoder: PacketDecoder) -> None:
        self.settings = settings
        self.publisher = publisher
        self.decoder = decoder
        self.dlq_topic = settings.topic("flows.dlq")
        self.stats = CollectorStats()
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.redis = sync_redis(settings)
        self.stats_key = settings.key("collector", "stats")
        self.running = True
        self.snmp_baseline: int | None = None  # UdpRcvbufErrors at start, where SO_RXQ_OVFL is unavailable

    def bind(self, addresses: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Open one socket per address; returns the bound (host, port)s (port 0 picks a free one)."""
        bound = []
        for host, port in addresses:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if self.settings.collector_rcvbuf:
                set_rcvbuf(sock, self.settings.collector_rcvbuf)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self.stats.kernel_drops[sock.fileno()] = 0
            except OSError:  # not Linux: fall back to the host-wide counter
                self.snmp_baseline = udp_rcvbuf_errors()
            # Several collector processes may share a port: the kernel hashes each exporter's address and port
            # to one socket, so an exporter's templates and its data always reach the same process.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.sockets.append(sock)
            bound.append(sock.getsockname()[:2])
        return bound

    def run(self) -> None:
        last = time.monotonic()
        while self.running:
            for key, _ in self.selector.select(HOUSEKEEPING_S):
                self._drain(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            if now - last >= HOUSEKEEPING_S:
                self._housekeeping(now)
                last = now
        self._housekeeping(time.monotonic())

    def _drain(self, sock: socket.socket, limit: int = 2000) -> None:
        """Read what the socket holds (bounded, so one busy port does not starve the others)."""
        for _ in range(limit):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP errors surfacing on a UDP socket, and the like: count, keep going
                self._count_error(f"socket:{exc.errno}")
                return
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    self.stats.kernel_drops[sock.fileno()] = struct.unpack("=I", value[:4])[0]
            self.handle(data, addr[0], time.monotonic())

    def handle(self, data: bytes, exporter: str, now: float) -> None:
        """One datagram: decode, publish its flows, or dead-letter it. Never raises on bad input."""
        self.stats.packets += 1
        try:
            result = self.decoder.decode(data, exporter, now)
        except DecodeError as exc:
            metrics.COLLECTOR_PACKETS.labels("invalid").inc()
            self._dead_letter(exporter, exc.reason, data, exc.detail)
            return
        metrics.COLLECTOR_PACKETS.labels(VERSION_LABELS[result.version]).inc()
        for gone in result.undecodable:
            self._undecodable(gone)
        if result.flows:
            try:
                n = self.publisher.publish(result.flows)
            except (ValueError, TypeError, OverflowError) as exc:  # a Flow the schema refuses: a decoder bug
                self._dead_letter(exporter, "unpublishable", data, str(exc))
                return
            self.stats.flows += n
            self.stats.unflushed_flows += n
            metrics.FLOWS_PUBLISHED.labels("udp").inc(n)

    def _undecodable(self, gone: Undecodable) -> None:
        self._dead_letter(gone.exporter, gone.reason, gone.raw, "data set whose template never arrived")

    def _dead_letter(self, exporter: str, reason: str, raw: bytes, detail: str) -> None:
        self._count_error(reason)
        record = dlq_record("collector", reason, raw, topic="udp", exporter=exporter, detail=detail)
        self._produce_dlq(record)
        self.stats.dlq += 1
        metrics.DLQ.labels("collector", reason).inc()

    def _produce_dlq(self, record: bytes) -> None:
        producer = self.publisher.producer
        while True:
            try:
                producer.produce(self.dlq_topic, record)
                return
            except BufferError:
                producer.poll(0.05)

    def _count_error(self, reason: str) -> None:
        self.stats.errors[reason] += 1
        metrics.DECODE_ERRORS.labels(reason).inc()

    def _housekeeping(self, now: float) -> None:
        for gone in self.decoder.expire(now):
            self._undecodable(gone)
        self.publisher.producer.poll(0)
        metrics.KERNEL_DROPS.set(self.kernel_drops())
        self.flush_stats()

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on our sockets (SO_RXQ_OVFL), else the host's count since we started."""
        if self.snmp_baseline is not None:
            return udp_rcvbuf_errors() - self.snmp_baseline
        return sum(self.stats.kernel_drops.values())

    def flush_stats(self) -> None:
        """Publish counters to Redis: flows_published grows by what was published since the last flush."""
        mapping = {
            "packets": self.stats.packets,
            "flows": self.stats.flows,
            "dlq": self.stats.dlq,
            "kernel_drops": self.kernel_drops(),
            **{f"error:{reason}": n for reason, n in self.stats.errors.items()},
        }
        pipe = self.redis.pipeline()
        pipe.hset(self.stats_key, mapping=mapping)
        if self.stats.unflushed_flows:
            pipe.hincrby(self.stats_key, "flows_published", self.stats.unflushed_flows)
        pipe.execute()
        self.stats.unflushed_flows = 0

    def close(self) -> None:
        for gone in self.decoder.expire(float("inf")):
            self._undecodable(gone)
        for sock in self.sockets:
            self.selector.unregister(sock)
            sock.close()
        self.publisher.close()
        self.flush_stats()
        self.redis.close()


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for `size` bytes of receive buffer. SO_RCVBUF is capped by net.core.rmem_max (often 208 KiB, a
    fraction of a second of a busy exporter); with CAP_NET_ADMIN, SO_RCVBUFFORCE is not. Returns what the
    kernel granted (Linux reports twice the request: it counts its bookkeeping)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def udp_rcvbuf_errors(path: Path = Path("/proc/net/snmp")) -> int:
    """The host's UdpRcvbufErrors (all sockets): the fallback where SO_RXQ_OVFL is unavailable."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.startswith("Udp:")]
        return int(dict(zip(lines[0][1:], lines[1][1:], strict=False)).get("RcvbufErrors", 0))
    except (OSError, IndexError, ValueError):
        return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", action="append", help="host:port to receive on (repeatable; default from settings)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logger = log.setup("collector")
    try:
        addresses = [parse_listen(a) for a in (args.listen or settings.collector_listen.split(","))]
    except ValueError as exc:
        print(f"flowsentinel collector: {exc}")
        return 2
    health = metrics.Health()
    metrics.serve(settings.metrics_port, health)
    cache = TemplateCache(settings.template_timeout_s, settings.template_hold_s)
    listener = Listener(settings, FlowPublisher(settings), PacketDecoder(cache))
    bound = listener.bind(addresses)
    logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in bound))
    health.set_ready(True)

    def stop(_sig: int, _frame: object) -> None:
        listener.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        listener.run()
    finally:
        listener.close()
        s = listener.stats
        logger.info("stopped: %d packets, %d flows, %d dead-lettered, %s", s.packets, s.flows, s.dlq, dict(s.errors))
    return 0
