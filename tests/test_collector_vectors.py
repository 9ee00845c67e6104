"""Other people's real export packets decode as their INDEX.md and their own projects say.

Each scenario lists its files in the order the peer project's test feeds them (templates first) and the
flow / option-record counts from ../shared/vectors/INDEX.md: the peer's own `expect` where it counts flows,
otherwise the count netflume and the netflow library agree on. Where a scenario's `expect` counts option
records as events (YAF 3 = 2 flows + 1 option, Fortigate 2 = 1 + 1, nProbe 9 = 8 + 1), flows and options
are checked apart. The copies in tests/vectors run everywhere; the whole set runs where ../shared is.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.collector.decode_cli import decode_files
from services.collector.decoders import PacketDecoder
from tests.paths import REPO, SHARED, needs_shared

BUNDLED = REPO / "tests" / "vectors"
L, P, G, S = "logstash-codec-netflow/", "python-netflow-v9-softflowd/", "goflow2/", "softflowd-local/"
PM = "pmacct-test-automation/"

# (files, flows, option records, errors by reason)
SCENARIOS: list[tuple[list[str], int, int, dict[str, int]]] = [
    ([G + "nfv5_data.bin"], 6, 0, {}),
    ([G + "nfv9_template.bin", G + "nfv9_data.bin"], 21, 0, {}),
    ([L + "ipfix.dat"], 12, 1, {}),
    ([L + "ipfix_test_barracuda_tpl.dat", L + "ipfix_test_barracuda_data256.dat"], 8, 0, {}),
    (
        [
            L + "ipfix_test_barracuda_extended_uniflow_tpl256.dat",
            L + "ipfix_test_barracuda_extended_uniflow_data256.dat",
        ],
        2,
        0,
        {},
    ),
    ([L + "ipfix_test_ixia_tpldata256.dat"], 1, 0, {}),
    ([L + "ipfix_test_ixia_tpldata271.dat"], 2, 0, {}),
    (
        [
            L + "ipfix_test_juniper_mx240_junos151r6s3_opttpl512.dat",
            L + "ipfix_test_juniper_mx240_junos151r6s3_data512.dat",
        ],
        0,
        1,
        {},
    ),
    (
        [
            L + "ipfix_test_mikrotik_tpl.dat",
            L + "ipfix_test_mikrotik_data258.dat",
            L + "ipfix_test_mikrotik_data259.dat",
        ],
        46,
        0,
        {},
    ),
    # The data file also carries a set of a template the template file does not define.
    ([L + "ipfix_test_netscaler_tpl.dat", L + "ipfix_test_netscaler_data.dat"], 3, 0, {"no_template": 1}),
    ([L + "ipfix_test_openbsd_pflow_tpl.dat", L + "ipfix_test_openbsd_pflow_data.dat"], 26, 0, {}),
    ([L + "ipfix_test_viptela_tpl257.dat", L + "ipfix_test_viptela_data257.dat"], 1, 0, {}),
    (
        [
            L + f
            for f in (
                "ipfix_test_yaf_tpls_option_tpl.dat",
                "ipfix_test_yaf_tpl45841.dat",
                "ipfix_test_yaf_data45841.dat",
                "ipfix_test_yaf_data45873.dat",
                "ipfix_test_yaf_data53248.dat",
            )
        ],
        2,
        1,
        {},
    ),
    ([L + "netflow5.dat"], 30, 0, {}),
    ([L + "netflow5_test_invalid01.dat"], 0, 0, {"bad_count": 1}),  # header count 55582: corrupt, rejected
    ([L + "netflow5_test_invalid02.dat"], 0, 0, {"bad_count": 1}),  # header count 163
    ([L + "netflow5_test_juniper_mx80.dat"], 29, 0, {}),
    ([L + "netflow5_test_microtik.dat"], 30, 0, {}),
    ([L + "netflow9_cisco_asr1001x_tpl259.dat"], 25, 0, {}),
    ([L + "netflow9_test_0length_fields_tpl_data.dat"], 10, 0, {}),
    ([L + "netflow9_test_cisco_1941K9.dat"], 29, 0, {}),
    ([L + "netflow9_test_cisco_aci_tpl256-258.dat", L + "netflow9_test_cisco_aci_data256.dat"], 3, 0, {}),
    ([L + "netflow9_test_cisco_asa_1_tpl.dat", L + "netflow9_test_cisco_asa_1_data.dat"], 14, 0, {}),
    (
        [
            L + "netflow9_test_cisco_asa_2_tpl_26x.dat",
            L + "netflow9_test_cisco_asa_2_tpl_27x.dat",
            L + "netflow9_test_cisco_asa_2_data.dat",
        ],
        19,
        0,
        {},
    ),
    ([L + "netflow9_test_cisco_asr9k_opttpl256.dat", L + "netflow9_test_cisco_asr9k_data256.dat"], 0, 19, {}),
    ([L + "netflow9_test_cisco_asr9k_tpl260.dat", L + "netflow9_test_cisco_asr9k_data260.dat"], 21, 0, {}),
    ([L + "netflow9_test_cisco_asr9k_opttpl257.dat"], 0, 0, {}),
    ([L + "netflow9_test_cisco_asr9k_opttpl334.dat"], 0, 0, {}),
    ([L + "netflow9_test_cisco_asr9k_tpl266.dat"], 0, 0, {}),
    ([L + "netflow9_test_cisco_nbar_opttpl260.dat"], 0, 15, {}),
    ([L + "netflow9_test_cisco_nbar_tpl262.dat", L + "netflow9_test_cisco_nbar_data262.dat"], 5, 0, {}),
    ([L + "netflow9_test_field_layer2segmentid_tpl.dat", L + "netflow9_test_field_layer2segmentid_data.dat"], 1, 0, {}),
    (
        [
            L + "netflow9_test_fortigate_fortios_521_tpl.dat",
            L + "netflow9_test_fortigate_fortios_521_data256.dat",
            L + "netflow9_test_fortigate_fortios_521_data257.dat",
        ],
        1,
        1,
        {},
    ),
    ([L + "netflow9_test_h3c_tpl3281.dat", L + "netflow9_test_h3c_data3281.dat"], 16, 0, {}),
    # v9 with a variable-length string: netflume and netflow fail here; logstash expects 1.
    (
        [
            L + "netflow9_test_h3c_netstream_varstring_tpl3281.dat",
            L + "netflow9_test_h3c_netstream_varstring_data3281.dat",
        ],
        1,
        0,
        {},
    ),
    ([L + "netflow9_test_huawei_netstream_tpl.dat", L + "netflow9_test_huawei_netstream_data.dat"], 1, 0, {}),
    ([L + "netflow9_test_invalid01.dat"], 2, 1, {}),
    # 3- and 6-byte counters (reduced-size encoding); the datagram also carries 6 sets of templates it lacks.
    ([L + "netflow9_test_iptnetflow_reduced_size_encoding_tpldata260.dat"], 12, 0, {"no_template": 6}),
    ([L + "netflow9_test_juniper_srx_tplopt.dat"], 0, 1, {}),
    ([L + "netflow9_test_macaddr_tpl.dat", L + "netflow9_test_macaddr_data.dat"], 29, 1, {}),
    (
        [
            L + "netflow9_test_softflowd_tpl_data.dat",
            L + "netflow9_test_nprobe_tpl.dat",
            L + "netflow9_test_nprobe_data.dat",
        ],
        8,
        1,
        {},
    ),
    ([L + "netflow9_test_nprobe_dpi.dat"], 1, 0, {}),
    ([L + "netflow9_test_streamcore_tpl_data256.dat", L + "netflow9_test_streamcore_tpl_data260.dat"], 4, 0, {}),
    ([L + "netflow9_test_unknown_tpl266_292_data.dat"], 2, 0, {}),
    ([L + "netflow9_test_valid01.dat"], 7, 0, {}),
    (
        [P + f for f in ("PACKET_V9_TEMPLATE.bin", "PACKETS_V9_0.bin", "PACKETS_V9_1.bin", "PACKETS_V9_2.bin")],
        44,
        0,
        {},
    ),
    # Data sets of template 260, which PACKET_V9_TEMPLATE does not define: held, then given up.
    ([P + "PACKET_V9_TEMPLATE.bin", P + "PACKET_V9_WITH_ZEROS.bin"], 8, 0, {"no_template": 5}),
    ([P + "PACKET_V9_TEMPLATE_MIXED.bin"], 8, 0, {}),  # a data set before its template in one datagram
    ([P + "PACKET_INVALID.bin"], 0, 0, {"bad_version": 1}),
    ([P + "PACKET_V1.bin"], 0, 0, {"bad_version": 1}),  # NetFlow v1 is not supported
    ([P + "PACKET_V5.bin"], 3, 0, {}),
    ([P + "PACKET_IPFIX_TEMPLATE.bin", P + "PACKET_IPFIX.bin"], 22, 1, {}),
    ([P + "PACKET_IPFIX_TEMPLATE_ETHER.bin", P + "PACKET_IPFIX_ETHER.bin"], 22, 1, {}),
    ([P + "PACKET_IPFIX_PADDING.bin"], 2, 1, {}),
    ([PM + "100-IPFIXv10-CISCO/traffic-00.pcap"], 12, 0, {}),
    ([PM + "101-NFv9-CISCO-cust_primitives/traffic-00.pcap"], 51, 0, {}),
    ([PM + "102-NFv9-CISCO-f2rd-pretag-sampling-reload/traffic-00.pcap"], 35, 0, {}),
    ([PM + "104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap"], 3, 1, {}),
    (
        [
            PM + "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources/traffic-00.pcap",
            PM + "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources/traffic-01.pcap",
        ],
        24,
        0,
        {},
    ),
    ([S + "softflowd-v5.pcap"], 14, 0, {}),
    ([S + "softflowd-v9-abs.pcap"], 16, 1, {}),
    ([S + "softflowd-ipfix-abs.pcap"], 16, 1, {}),
]


def _run(base: Path, files: list[str], flows: int, options: int, errors: dict[str, int]) -> None:
    reports, decoded = decode_files([base / f for f in files])
    got_errors: Counter[str] = Counter()
    for r in reports:
        got_errors.update(r.errors)
    assert (len(decoded), sum(r.options for r in reports), dict(got_errors)) == (flows, options, errors)
    for flow in decoded:
        assert flow["src_addr"] and flow["dst_addr"] and flow["last_seen"] >= flow["first_seen"] > 0


BUNDLED_SCENARIOS = [s for s in SCENARIOS if all((BUNDLED / f).is_file() for f in s[0])]


@pytest.mark.parametrize(("files", "flows", "options", "errors"), BUNDLED_SCENARIOS, ids=lambda v: str(v)[:60])
def test_bundled_vectors(files: list[str], flows: int, options: int, errors: dict[str, int]) -> None:
    _run(BUNDLED, files, flows, options, errors)


@needs_shared
def test_every_shared_vector_file_is_covered_and_decodes() -> None:
    """All packet files of ../shared/vectors (but softflowd's own input capture) are in a scenario, and all
    scenarios give their INDEX.md counts."""
    base = SHARED / "vectors"
    listed = {f for s in SCENARIOS for f in s[0]}
    present = {
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.suffix in (".dat", ".bin", ".pcap") and p.name != "input-lo.pcap"
    }
    assert present == listed
    for files, flows, options, errors in SCENARIOS:
        _run(base, files, flows, options, errors)


def _pmacct_case(base: Path, case: str) -> tuple[Counter[tuple], Counter[tuple]]:
    _, flows = decode_files(sorted((base / PM / case).glob("traffic-*.pcap")))
    ours = Counter(
        (f["src_addr"], f["dst_addr"], f["src_port"], f["dst_port"], f["packets"], f["bytes"]) for f in flows
    )
    gold: Counter[tuple] = Counter()
    for line in (base / PM / case / "output-flow-00.json").read_text().splitlines():
        g = json.loads(line)
        gold[(g["ip_src"], g["ip_dst"], g["port_src"], g["port_dst"], g["packets"], g["bytes"])] += 1
    return ours, gold


@pytest.mark.parametrize("case", ["100-IPFIXv10-CISCO", "104-IPFIXv10-IPv6-CISCO-sampling_option"])
def test_field_values_match_pmacct(case: str) -> None:
    """Addresses, ports, packets and bytes equal pmacct's own decoding of the same packets; in 104 the
    counters are scaled by the sampling interval of an options record (1 packet -> 256)."""
    ours, gold = _pmacct_case(BUNDLED, case)
    assert ours == gold


@needs_shared
@pytest.mark.parametrize(
    "case",
    [
        "101-NFv9-CISCO-cust_primitives",
        "102-NFv9-CISCO-f2rd-pretag-sampling-reload",
        "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources",
    ],
)
def test_field_values_match_pmacct_shared(case: str) -> None:
    ours, gold = _pmacct_case(SHARED / "vectors", case)
    assert ours == gold


def test_sampled_v5_and_ipv6_values() -> None:
    """Juniper MX80 v5 announces 1-in-N sampling in its header: counters come scaled and say so."""
    _, flows = decode_files([BUNDLED / L / "netflow5_test_juniper_mx80.dat"])
    assert {f["sampling_interval"] for f in flows} == {1000}
    assert all(f["packets"] % 1000 == 0 and f["packets"] > 0 for f in flows)
    _, flows = decode_files([BUNDLED / PM / "104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap"])
    assert {f["exporter"] for f in flows} == {"2a02:a90:4007:700::54"}
    assert all(":" in f["src_addr"] and f["sampling_interval"] == 256 for f in flows)


def test_option_records_keep_interface_names_and_samplers() -> None:
    """Cisco ASR9k's interface table (v9 options, interface scope) and 104's IPFIX selector -> 1 in 256."""
    decoder = PacketDecoder()
    files = [L + "netflow9_test_cisco_asr9k_opttpl256.dat", L + "netflow9_test_cisco_asr9k_data256.dat"]
    decode_files([BUNDLED / f for f in files], decoder=decoder)
    [state] = decoder.cache.exporters.values()
    assert len(state.interfaces) == 19 and state.interfaces[74] == "TenGigE0_0_1_0"
    decoder = PacketDecoder()
    decode_files([BUNDLED / PM / "104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap"], decoder=decoder)
    [state] = decoder.cache.exporters.values()
    assert state.samplers == {1: 256}
