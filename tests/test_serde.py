from services.common import serde
from tests.paths import SAMPLE
from training.datasets import load_flows


def test_flow_round_trips_real_rows() -> None:
    flows, _ = load_flows([SAMPLE / "CTU-Honeypot-Capture-7-1-labeled.csv.gz"])
    for flow in flows:
        data = serde.encode("Flow", flow)
        assert data[:2] == b"\xc3\x01"
        assert serde.decode(data) == ("Flow", flow)


def test_decode_names_what_is_wrong() -> None:
    flow, _ = load_flows([SAMPLE / "CTU-Honeypot-Capture-7-1-labeled.csv.gz"])
    good = serde.encode("Flow", flow[0])
    cases = {
        b"": "too short",
        b'{"json": 1}': "not Avro single-object",
        b"\xc3\x01" + b"\x00" * 8 + b"x": "unknown schema fingerprint",
        good[:-3]: "corrupt Flow body",
        good + b"\x00": "trailing bytes",
    }
    for data, reason in cases.items():
        try:
            serde.decode(data)
        except serde.DecodeError as exc:
            assert reason in str(exc)
        else:
            raise AssertionError(f"{data!r} decoded")
    try:
        serde.decode_as(good, "HostWindow")
    except serde.DecodeError as exc:
        assert "expected a HostWindow record, got Flow" in str(exc)


def test_fingerprints_differ_per_schema() -> None:
    fps = {serde.fingerprint_of(name) for name in serde.SCHEMA_ORDER}
    assert len(fps) == len(serde.SCHEMA_ORDER)


def test_outbox_frame_round_trip() -> None:
    frame = serde.pack_frame("host-windows", b"10.0.0.1", b"\x00\xc3\x01value")
    assert serde.unpack_frame(frame) == ("host-windows", b"10.0.0.1", b"\x00\xc3\x01value")
