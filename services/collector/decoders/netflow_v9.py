"""NetFlow v9 (RFC 3954): a 20-byte header, then flowsets: 0 templates, 1 options templates, >= 256 data.

The header's record count is not trusted (exporters get it wrong); the packet's length bounds the walk.
"""

from __future__ import annotations

import struct

from services.collector.decoders.errors import DecodeError
from services.collector.decoders.fields import FieldSpec, Header
from services.collector.decoders.templates import SetOutcome, TemplateCache, iter_sets

HEADER = struct.Struct(">HHIIII")  # version, count, sysUpTime ms, unix secs, sequence, source id


def decode_v9(data: bytes, exporter: str, cache: TemplateCache, now: float) -> SetOutcome:
    if len(data) < HEADER.size:
        raise DecodeError("truncated", f"v9 header needs {HEADER.size} bytes, got {len(data)}")
    version, _count, uptime, secs, _seq, source_id = HEADER.unpack_from(data)
    if version != 9:
        raise DecodeError("bad_version", f"expected 9, got {version}")
    h = Header(exporter, 9, source_id, secs, uptime)
    out = SetOutcome()
    for set_id, body in iter_sets(data, HEADER.size, len(data)):
        if set_id == 0:
            _templates(h, body, cache, now, out)
        elif set_id == 1:
            _options_templates(h, body, cache, now, out)
        elif set_id >= 256:
            cache.data_set(h, set_id, body, now, out)
        # 2..255 are reserved: skipped
    return out


def _fields(body: memoryview, off: int, count: int) -> list[FieldSpec]:
    if off + 4 * count > len(body):
        raise DecodeError("truncated_template", f"{count} fields do not fit in the flowset")
    return [FieldSpec(*struct.unpack_from(">HH", body, off + 4 * i)) for i in range(count)]


def _templates(h: Header, body: memoryview, cache: TemplateCache, now: float, out: SetOutcome) -> None:
    off = 0
    while len(body) - off >= 4:
        template_id, count = struct.unpack_from(">HH", body, off)
        if template_id == 0 and count == 0:  # padding to a 4-byte boundary
            break
        if template_id < 256:
            raise DecodeError("bad_template", f"template id {template_id} is below 256")
        known = cache.refresh(h, template_id, body, off, now, out)
        if known >= 0:
            off = known
            continue
        fields = _fields(body, off + 4, count)
        end = off + 4 + 4 * count
        cache.learn_fields(h, template_id, fields, 0, bytes(body[off:end]), now, out)
        off = end


def _options_templates(h: Header, body: memoryview, cache: TemplateCache, now: float, out: SetOutcome) -> None:
    off = 0
    while len(body) - off >= 6:
        template_id, scope_len, option_len = struct.unpack_from(">HHH", body, off)
        if template_id < 256:  # the rest is padding (or garbage an exporter left): nothing more to learn
            break
        known = cache.refresh(h, template_id, body, off, now, out)
        if known >= 0:
            off = known
            continue
        if scope_len % 4 or option_len % 4:
            raise DecodeError("bad_template", f"options template {template_id}: lengths {scope_len}/{option_len}")
        n_scope, n_option = scope_len // 4, option_len // 4
        # Scope field types (system, interface, line card, cache, template) are not IANA IEs; keep interface
        # scope readable as ingressInterface (10), the key interface names are kept under.
        scopes = [FieldSpec(10 if f.ie == 2 else 0x7F00 + f.ie, f.length) for f in _fields(body, off + 6, n_scope)]
        options = _fields(body, off + 6 + scope_len, n_option)
        end = off + 6 + scope_len + option_len
        cache.learn_fields(h, template_id, scopes + options, max(1, n_scope), bytes(body[off:end]), now, out)
        off = end
