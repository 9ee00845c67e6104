"""The template engine on packets built here for the cases the vectors lack (RFC 5103 biflow, withdrawal,
expiry, held data sets, options sampling, timestamp forms), and a bounded fuzz run over the decoders."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.collector.capture import read_datagrams
from services.collector.decoders import DecodeError, PacketDecoder
from services.collector.decoders.templates import TemplateCache
from services.common import serde
from tests.paths import REPO

EXPORT = 1_700_000_000
IP = socket.inet_aton


def ipfix(*sets: bytes, domain: int = 7, export_time: int = EXPORT) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_time, 1, domain) + body


def ipfix_set(set_id: int, payload: bytes) -> bytes:
    return struct.pack(">HH", set_id, 4 + len(payload)) + payload


def template(tid: int, fields: list[tuple[int, int, int]], scope: int = 0) -> bytes:
    head = struct.pack(">HHH", tid, len(fields), scope) if scope else struct.pack(">HH", tid, len(fields))
    specs = b"".join(
        struct.pack(">HHI", ie | 0x8000, n, pen) if pen else struct.pack(">HH", ie, n) for ie, n, pen in fields
    )
    return head + specs


BIFLOW = [(8, 4, 0), (12, 4, 0), (7, 2, 0), (11, 2, 0), (4, 1, 0), (1, 8, 0), (2, 4, 0), (1, 8, 29305), (2, 4, 29305),
          (6, 1, 0), (6, 1, 29305), (999, 65535, 9), (152, 8, 0), (153, 8, 0)]  # fmt: skip


def biflow_record(src: str, sport: int, extra: bytes = b"vendor") -> bytes:
    return (
        IP(src) + IP("192.0.2.9") + struct.pack(">HHB", sport, 443, 6)
        + struct.pack(">QI", 1200, 10) + struct.pack(">QI", 64000, 50) + bytes([0x1A, 0x12])
        + bytes([len(extra)]) + extra + struct.pack(">QQ", 1_699_999_990_250, 1_699_999_995_500)
    )  # fmt: skip


def test_biflow_reverse_counters_enterprise_skip_and_millisecond_times() -> None:
    d = PacketDecoder()
    pkt = ipfix(ipfix_set(2, template(300, BIFLOW)), ipfix_set(300, biflow_record("10.0.0.1", 5000)))
    [flow] = d.decode(pkt, "198.51.100.1", 0.0).flows
    assert (flow["src_addr"], flow["dst_addr"], flow["src_port"], flow["dst_port"]) == (
        "10.0.0.1",
        "192.0.2.9",
        5000,
        443,
    )
    assert (flow["bytes"], flow["packets"], flow["bytes_rev"], flow["packets_rev"]) == (1200, 10, 64000, 50)
    assert (flow["tcp_flags"], flow["tcp_flags_rev"]) == (0x1A, 0x12)
    assert (flow["first_seen"], flow["last_seen"]) == (1_699_999_990.25, 1_699_999_995.5)
    assert flow["exporter"] == "198.51.100.1" and flow["sampling_interval"] == 1
    again = PacketDecoder().decode(pkt, "198.51.100.1", 0.0).flows[0]["flow_id"]
    other = PacketDecoder().decode(pkt, "198.51.100.2", 0.0).flows[0]["flow_id"]
    assert flow["flow_id"] == again != other


def test_data_before_template_is_held_then_decoded_or_given_up() -> None:
    d = PacketDecoder(TemplateCache(hold_s=5.0))
    data = ipfix(ipfix_set(300, biflow_record("10.0.0.1", 1) + biflow_record("10.0.0.2", 2)))
    early = d.decode(data, "e1", 0.0)
    assert (early.flows, early.held) == ([], 1)
    late = d.decode(ipfix(ipfix_set(2, template(300, BIFLOW))), "e1", 1.0)
    assert [f["src_addr"] for f in late.flows] == ["10.0.0.1", "10.0.0.2"]
    d.decode(ipfix(ipfix_set(301, biflow_record("10.0.0.3", 3))), "e2", 2.0)  # a template e2 never sends
    assert d.expire(6.0) == []
    [gone] = d.expire(7.1)  # given up after the 5 s hold
    assert (gone.exporter, gone.reason) == ("e2", "no_template")


def test_template_withdrawal_expiry_and_scope_by_exporter_and_domain() -> None:
    d = PacketDecoder(TemplateCache(template_timeout_s=100.0))
    d.decode(ipfix(ipfix_set(2, template(300, BIFLOW))), "e1", 0.0)
    data = ipfix(ipfix_set(300, biflow_record("10.0.0.1", 1)))
    assert len(d.decode(data, "e1", 1.0).flows) == 1
    assert d.decode(data, "e2", 1.0).held == 1  # another exporter: its own templates
    assert d.decode(ipfix(ipfix_set(300, biflow_record("10.0.0.1", 1)), domain=8), "e1", 1.0).held == 1
    assert d.decode(data, "e1", 101.0).held == 1  # not refreshed within the timeout: expired
    d.decode(ipfix(ipfix_set(2, template(300, BIFLOW))), "e1", 102.0)
    d.decode(ipfix(ipfix_set(2, struct.pack(">HH", 300, 0))), "e1", 103.0)  # withdrawal
    assert d.decode(data, "e1", 104.0).held == 1


def test_options_sampling_scales_counters_and_second_and_ntp_times() -> None:
    d = PacketDecoder()
    opt = template(400, [(149, 4, 0), (34, 4, 0)], scope=1)
    flow_tpl = template(301, [(8, 4, 0), (12, 4, 0), (4, 1, 0), (1, 4, 0), (2, 4, 0), (150, 4, 0), (155, 8, 0)])
    ntp_end = ((EXPORT + 2_208_988_800) << 32) | (1 << 31)  # export time + 0.5 s, NTP format
    rec = IP("10.1.1.1") + IP("10.2.2.2") + struct.pack(">BIIIQ", 17, 100, 2, EXPORT - 10, ntp_end)
    pkt = ipfix(
        ipfix_set(3, opt), ipfix_set(2, flow_tpl), ipfix_set(400, struct.pack(">II", 7, 100)), ipfix_set(301, rec)
    )
    result = d.decode(pkt, "e1", 0.0)
    [flow] = result.flows
    assert result.options == 1
    assert (flow["bytes"], flow["packets"], flow["sampling_interval"]) == (10000, 200, 100)
    assert (flow["first_seen"], flow["last_seen"]) == (EXPORT - 10, EXPORT + 0.5)


def test_hostile_field_widths_still_fit_the_flow_schema() -> None:
    """A template may give any IE any length: 8-byte ports and protocol, a 2**32-1 sampling interval and
    2**64-1 counters come out within the Flow schema's int and long."""
    tpl = template(302, [(8, 4, 0), (12, 4, 0), (7, 8, 0), (4, 8, 0), (1, 8, 0), (34, 4, 0)])
    rec = IP("10.0.0.1") + IP("10.0.0.2") + struct.pack(">QQQI", 2**40 + 80, 2**63 + 6, 2**64 - 1, 2**32 - 1)
    [flow] = PacketDecoder().decode(ipfix(ipfix_set(2, tpl), ipfix_set(302, rec)), "e", 0.0).flows
    got = (flow["src_port"], flow["protocol"], flow["bytes"], flow["sampling_interval"])
    assert got == (80, 6, 2**63 - 1, 2**31 - 1)
    serde.encode("Flow", flow)


def test_v9_uptime_times_and_bad_headers() -> None:
    d = PacketDecoder()
    tpl = struct.pack(">HH", 260, 5) + struct.pack(">HHHHHHHHHH", 8, 4, 12, 4, 1, 4, 22, 4, 21, 4)
    rec = IP("10.0.0.1") + IP("10.0.0.2") + struct.pack(">III", 99, 50_000, 59_000)
    sets = struct.pack(">HH", 0, 4 + len(tpl)) + tpl + struct.pack(">HH", 260, 4 + len(rec)) + rec
    pkt = struct.pack(">HHIIII", 9, 2, 60_000, EXPORT, 1, 0) + sets
    [flow] = d.decode(pkt, "e", 0.0).flows
    assert (flow["first_seen"], flow["last_seen"], flow["bytes"]) == (EXPORT - 10.0, EXPORT - 1.0, 99)
    for bad, reason in ((pkt[:10], "truncated"), (pkt[:-3], "truncated"), (b"\x00\x07" + pkt[2:], "bad_version")):
        with pytest.raises(DecodeError) as exc:
            d.decode(bad, "e", 0.0)
        assert exc.value.reason == reason


def _vector_datagrams() -> list[bytes]:
    base = REPO / "tests" / "vectors"
    return [
        dg.payload
        for path in sorted(base.rglob("*"))
        if path.suffix in (".dat", ".bin", ".pcap")
        for dg in read_datagrams(path, "fuzz")
    ]


DATAGRAMS = _vector_datagrams()
FUZZ = settings(max_examples=400, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip


def _decode_all(decoder: PacketDecoder, packets: list[bytes]) -> None:
    """Every packet decodes or raises DecodeError, and every flow it yields fits the Flow schema."""
    for i, pkt in enumerate(packets):
        try:
            flows = decoder.decode(pkt, "fuzz", float(i)).flows
        except DecodeError as exc:
            assert exc.reason
            continue
        for flow in flows:
            serde.encode("Flow", flow)


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_garbage_never_escapes(data: bytes) -> None:
    _decode_all(PacketDecoder(), [data, b"\x00\x09" + data, b"\x00\x0a" + data, b"\x00\x05" + data])


@FUZZ
@given(st.data())
def test_fuzz_mutated_real_packets_never_escape(data: st.DataObject) -> None:
    """Real datagrams (templates first, so data sets reach the record decoders) with bytes flipped, cut
    or inserted: the decoder returns flows or raises DecodeError, nothing else."""
    packets = data.draw(st.lists(st.sampled_from(DATAGRAMS), min_size=1, max_size=6))
    mutated = []
    for pkt in packets:
        buf = bytearray(pkt)
        for _ in range(data.draw(st.integers(0, 6))):
            pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
            op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip" and buf:
                buf[pos] = data.draw(st.integers(0, 255))
            elif op == "cut":
                del buf[pos:]
            else:
                buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        mutated.append(bytes(buf))
    decoder = PacketDecoder(TemplateCache(max_templates=8, max_held=4))
    _decode_all(decoder, packets[:1] + mutated)
    decoder.expire(float("inf"))


def test_every_truncation_of_real_packets_is_an_error_or_fewer_flows() -> None:
    for pkt in DATAGRAMS:
        if pkt[:2] not in (b"\x00\x05", b"\x00\x0a"):
            continue  # v9 headers carry no length: a cut at a set boundary is a shorter valid packet
        for cut in range(0, len(pkt), max(1, len(pkt) // 40)):
            with pytest.raises(DecodeError):
                PacketDecoder().decode(pkt[:cut], "e", 0.0)


def _as_pcapng(pcap: bytes) -> bytes:
    """The same frames as a pcapng file: section header, one interface, an enhanced packet block each."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    linktype = struct.unpack_from("<I", pcap, 20)[0]
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + block(1, struct.pack("<HHI", linktype, 0, 0))
    off = 24
    while off + 16 <= len(pcap):
        incl = struct.unpack_from("<I", pcap, off + 8)[0]
        frame = pcap[off + 16 : off + 16 + incl]
        out += block(6, struct.pack("<IIIII", 0, 0, 0, incl, incl) + frame)
        off += 16 + incl
    return out


def test_pcapng_gives_the_same_datagrams_as_pcap(tmp_path: Path) -> None:
    pcap = REPO / "tests/vectors/pmacct-test-automation/100-IPFIXv10-CISCO/traffic-00.pcap"
    ng = tmp_path / "traffic.pcapng"
    ng.write_bytes(_as_pcapng(pcap.read_bytes()))
    expected = [(d.exporter, d.payload) for d in read_datagrams(pcap, "raw")]
    assert len(expected) == 6
    assert [(d.exporter, d.payload) for d in read_datagrams(ng, "raw")] == expected
