"""Avro single-object encoding of the schemas in schemas/: a consumer knows which schema wrote a record
from the 10-byte header (0xC3 0x01 + CRC-64-AVRO fingerprint) without a schema registry."""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from services.common.settings import REPO_ROOT

MARKER = b"\xc3\x01"
HEADER_LEN = 10
# Referenced types first: Anomaly names Score.
SCHEMA_ORDER = ("Flow", "HostWindow", "Score", "Anomaly", "Alert")


class DecodeError(ValueError):
    """A message that is not a record this project can read; the reason goes to the DLQ."""


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian as the spec puts it on the wire


def schemas_dir() -> Path:
    return Path(os.environ.get("FLOWSENTINEL_SCHEMAS_DIR", REPO_ROOT / "schemas"))


def _load() -> dict[str, Schema]:
    named: dict[str, Any] = {}
    out: dict[str, Schema] = {}
    for name in SCHEMA_ORDER:
        raw = json.loads((schemas_dir() / f"{name}.avsc").read_text())
        parsed = parse_schema(raw, named_schemas=named)
        canonical = to_parsing_canonical_form(parsed)
        fp = int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
        out[name] = Schema(name, parsed, fp)
    return out


SCHEMAS = _load()
_BY_FINGERPRINT = {s.fingerprint: s for s in SCHEMAS.values()}


def encode(schema_name: str, record: dict[str, Any]) -> bytes:
    schema = SCHEMAS[schema_name]
    buf = io.BytesIO()
    buf.write(MARKER)
    buf.write(schema.fingerprint)
    schemaless_writer(buf, schema.parsed, record)
    return buf.getvalue()


def decode(data: bytes | None, expect: str | None = None) -> tuple[str, dict[str, Any]]:
    """Return (schema name, record); raise DecodeError saying why not."""
    if data is None or len(data) < HEADER_LEN:
        raise DecodeError(f"too short for Avro single-object encoding ({0 if data is None else len(data)} bytes)")
    if data[:2] != MARKER:
        raise DecodeError(f"not Avro single-object encoding (starts with {data[:2].hex()})")
    schema = _BY_FINGERPRINT.get(data[2:HEADER_LEN])
    if schema is None:
        raise DecodeError(f"unknown schema fingerprint {data[2:HEADER_LEN].hex()}")
    if expect is not None and schema.name != expect:
        raise DecodeError(f"expected a {expect} record, got {schema.name}")
    buf = io.BytesIO(data)
    buf.seek(HEADER_LEN)
    try:
        record = schemaless_reader(buf, schema.parsed, None)
    except Exception as exc:  # fastavro raises several types on corrupt bodies
        raise DecodeError(f"corrupt {schema.name} body: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the {schema.name} record")
    return schema.name, record


def decode_as(data: bytes | None, schema_name: str) -> dict[str, Any]:
    return decode(data, expect=schema_name)[1]


def fingerprint_of(schema_name: str) -> str:
    return SCHEMAS[schema_name].fingerprint.hex()


def pack_frame(topic: str, key: bytes, value: bytes) -> bytes:
    """One outbox entry: a message to produce later, kept in Redis until it is delivered."""
    t = topic.encode()
    return struct.pack("!HI", len(t), len(key)) + t + key + value


def unpack_frame(frame: bytes) -> tuple[str, bytes, bytes]:
    tlen, klen = struct.unpack_from("!HI", frame)
    start = 6
    topic = frame[start : start + tlen].decode()
    key = frame[start + tlen : start + tlen + klen]
    return topic, key, frame[start + tlen + klen :]
