"""The syslog sink against a real rsyslog daemon (Debian's `rsyslog`, installed by this set-up when
missing) started on loopback with its own configuration, writing every received message raw to a file
in a temporary folder; the system's syslog is not touched. Also TLS against a loopback TLS listener."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.alerter.sinks.syslog import SyslogSink
from services.common.settings import Settings
from services.common.stack import free_port
from tests.alert_samples import alerts
from tests.syslog_parse import parse_5424, parse_cef

CONFIG = """
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="flowsentinel") {{
  action(type="omfile" file="{out}" template="raw" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="flowsentinel")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="flowsentinel")
"""


def rsyslogd_binary() -> str:
    found = shutil.which("rsyslogd") or (Path("/usr/sbin/rsyslogd").is_file() and "/usr/sbin/rsyslogd")
    if found:
        return str(found)
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "rsyslog"], check=True, env=env, capture_output=True)
        return "/usr/sbin/rsyslogd"
    pytest.fail("rsyslogd is not installed and cannot be installed here (apt-get install rsyslog as root)")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    def __init__(self, tmp: Path) -> None:
        self.out = tmp / "received.log"
        self.udp, self.tcp = free_udp_port(), free_port()
        (tmp / "work").mkdir()
        conf = tmp / "rsyslog.conf"
        conf.write_text(CONFIG.format(work=tmp / "work", out=self.out, udp=self.udp, tcp=self.tcp))
        binary = rsyslogd_binary()
        check = subprocess.run([binary, "-N1", "-f", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.log = open(tmp / "rsyslogd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(conf), "-i", str(tmp / "rsyslogd.pid")], stdout=self.log, stderr=self.log
        )

    def lines(self) -> list[str]:
        """Complete lines only: rsyslog may be half-way through writing the last one."""
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return text[: text.rfind("\n") + 1].splitlines()

    def wait_ready(self) -> None:
        # Ready when a UDP probe has gone through the ruleset to the file (TCP listens by then too).
        deadline = time.monotonic() + 30
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not any("readiness-probe" in line for line in self.lines()):
                assert self.proc.poll() is None, "rsyslogd exited; see rsyslogd.log"
                assert time.monotonic() < deadline, "rsyslogd did not start receiving"
                s.sendto(b"<13>1 - - probe - - - readiness-probe", ("127.0.0.1", self.udp))
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    daemon = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()


def received(rsyslog: Rsyslog, incident_ids: set[str], count: int) -> list[Any]:
    deadline = time.monotonic() + 30
    while True:
        parsed = [parse_5424(line) for line in rsyslog.lines() if "readiness-probe" not in line]
        mine = [p for p in parsed if p.sd.get("flowsentinel@32473", {}).get("incident") in incident_ids]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_cef_over_syslog_reaches_rsyslog_as_rfc5424_with_the_extension_intact(rsyslog: Rsyslog, protocol: str) -> None:
    start = 1_545_000_000.0 if protocol == "udp" else 1_546_000_000.0  # distinct incidents per protocol
    batch = alerts(25, start=start)
    # An awkward summary: every character CEF escapes (the newline travels as the two characters \n).
    batch[0] = {**batch[0], "summary": "a=b | back\\slash\nsecond line"}
    port = rsyslog.udp if protocol == "udp" else rsyslog.tcp
    sink = SyslogSink(Settings(sink_syslog_port=port, sink_syslog_protocol=protocol, sink_syslog_format="cef"))
    sink.send(batch)
    sink.close()
    by_incident = {a["incident_id"]: a for a in batch}
    got = received(rsyslog, set(by_incident), len(batch))
    assert len(got) == len(batch)
    for message in got:
        alert = by_incident[message.sd["flowsentinel@32473"]["incident"]]
        assert (message.app_name, message.msgid, message.pri) == ("flowsentinel", "ALERT", 16 * 8 + 3)
        header, ext = parse_cef(message.msg)
        assert header[0] == "CEF:0" and header[1:3] == ["FlowSentinel", "FlowSentinel"] and header[6] == "8"
        assert ext["src"] == alert["host"] and ext["externalId"] == alert["alert_id"]
        assert ext["cs1"] == alert["incident_id"] and ext["cs3"] == ",".join(alert["top_features"])
        assert ext["cnt"] == str(alert["anomaly_count"]) and ext["start"] == str(int(alert["first_seen"] * 1000))
        assert ext["msg"] == alert["summary"]


def test_json_payload_over_tls(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.fail("openssl is needed to make the test's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    frames: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        while data:  # RFC 6587 octet counting: LEN SP MSG
            length, _, rest = data.partition(b" ")
            frames.append(rest[: int(length)])
            data = rest[int(length) :]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    batch = alerts(3)
    settings = Settings(
        sink_syslog_port=listener.getsockname()[1],
        sink_syslog_protocol="tls",
        sink_syslog_format="json",
        sink_syslog_ca_file=str(cert),
    )
    sink = SyslogSink(settings)
    sink.send(batch)
    sink.close()
    thread.join(10)
    listener.close()

    assert [json.loads(parse_5424(f.decode()).msg) for f in frames] == batch
