"""IPFIX (RFC 7011): a 16-byte header with the message length, then sets: 2 templates, 3 options
templates, >= 256 data. Enterprise-specific fields carry a 4-byte enterprise number; RFC 5103 reverse
IEs (enterprise 29305) feed the Flow's *_rev fields, other enterprise fields are skipped by length.
A template record with no fields withdraws the template (RFC 7011 section 8.1)."""

from __future__ import annotations

import struct

from services.collector.decoders.errors import DecodeError
from services.collector.decoders.fields import FieldSpec, Header
from services.collector.decoders.templates import SetOutcome, TemplateCache, iter_sets

HEADER = struct.Struct(">HHIII")  # version, length, export time, sequence, observation domain


def decode_ipfix(data: bytes, exporter: str, cache: TemplateCache, now: float) -> SetOutcome:
    if len(data) < HEADER.size:
        raise DecodeError("truncated", f"IPFIX header needs {HEADER.size} bytes, got {len(data)}")
    version, length, export_time, _seq, domain = HEADER.unpack_from(data)
    if version != 10:
        raise DecodeError("bad_version", f"expected 10, got {version}")
    if length < HEADER.size or length > len(data):
        raise DecodeError("bad_length", f"message length {length}, datagram {len(data)} bytes")
    h = Header(exporter, 10, domain, export_time)
    out = SetOutcome()
    for set_id, body in iter_sets(data, HEADER.size, length):
        if set_id in (2, 3):
            _templates(h, body, cache, now, out, options=set_id == 3)
        elif set_id >= 256:
            cache.data_set(h, set_id, body, now, out)
    return out


def _fields(body: memoryview, off: int, count: int) -> tuple[list[FieldSpec], int]:
    fields = []
    for _ in range(count):
        if off + 4 > len(body):
            raise DecodeError("truncated_template", "field specifier cut")
        ie, length = struct.unpack_from(">HH", body, off)
        off += 4
        enterprise = 0
        if ie & 0x8000:
            if off + 4 > len(body):
                raise DecodeError("truncated_template", "enterprise number cut")
            (enterprise,) = struct.unpack_from(">I", body, off)
            ie &= 0x7FFF
            off += 4
        fields.append(FieldSpec(ie, length, enterprise))
    return fields, off


def _templates(h: Header, body: memoryview, cache: TemplateCache, now: float, out: SetOutcome, options: bool) -> None:
    head = 6 if options else 4
    off = 0
    while len(body) - off >= 4:
        template_id, count = struct.unpack_from(">HH", body, off)
        if template_id == 0 and count == 0:  # padding
            break
        if count == 0:
            cache.withdraw(h, None if template_id in (2, 3) else template_id, options)
            off += 4
            continue
        if template_id < 256:
            raise DecodeError("bad_template", f"template id {template_id} is below 256")
        known = cache.refresh(h, template_id, body, off, now, out)
        if known >= 0:
            off = known
            continue
        if len(body) - off < head:
            raise DecodeError("truncated_template", f"options template {template_id} header cut")
        scope = struct.unpack_from(">H", body, off + 4)[0] if options else 0
        if options and not 0 < scope <= count:
            raise DecodeError("bad_template", f"options template {template_id}: scope count {scope} of {count}")
        fields, end = _fields(body, off + head, count)
        cache.learn_fields(h, template_id, fields, scope, bytes(body[off:end]), now, out)
        off = end
