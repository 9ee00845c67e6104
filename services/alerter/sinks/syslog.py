"""Syslog sink: RFC 5424 messages with a CEF or JSON payload over UDP (one datagram each), TCP or TLS
(RFC 6587 octet-counting frames, so payloads may hold newlines)."""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from services.alerter.formats import octet_frame, payload, rfc5424
from services.common.settings import Settings

PROTOCOLS = ("udp", "tcp", "tls")


class SyslogSink:
    name = "syslog"

    def __init__(self, settings: Settings) -> None:
        if settings.sink_syslog_protocol not in PROTOCOLS:
            raise ValueError(f"sink_syslog_protocol must be one of {PROTOCOLS}, not {settings.sink_syslog_protocol!r}")
        if settings.sink_syslog_format not in ("cef", "json"):
            raise ValueError(f"sink_syslog_format must be cef or json, not {settings.sink_syslog_format!r}")
        self.address = (settings.sink_syslog_host, settings.sink_syslog_port)
        self.protocol = settings.sink_syslog_protocol
        self.format = settings.sink_syslog_format
        self.hostname = socket.gethostname()
        self.context: ssl.SSLContext | None = None
        if self.protocol == "tls":
            self.context = ssl.create_default_context(cafile=settings.sink_syslog_ca_file or None)
            if settings.sink_syslog_cert_file:
                self.context.load_cert_chain(settings.sink_syslog_cert_file, settings.sink_syslog_key_file or None)
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.protocol == "udp":
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock = socket.create_connection(self.address, timeout=10)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_hostname=self.address[0])
        return sock

    def send(self, alerts: list[dict[str, Any]]) -> None:
        messages = [rfc5424(a, payload(a, self.format), self.hostname, os.getpid()) for a in alerts]
        if self.sock is None:
            self.sock = self._connect()
        try:
            for m in messages:
                if self.protocol == "udp":
                    self.sock.sendto(m, self.address)
                else:
                    self.sock.sendall(octet_frame(m))
        except OSError:
            self.close()  # reconnect on the retry
            raise

    def close(self) -> None:
        if self.sock is None:
            return
        sock, self.sock = self.sock, None
        if self.protocol != "udp":
            # Half-close and read to the end first: closing with unread bytes (e.g. TLS 1.3 session
            # tickets) makes the kernel send a reset, which can discard frames the server has not read.
            try:
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(2.0)
                while sock.recv(4096):
                    pass
            except OSError:
                pass
        sock.close()
