"""The template engine NetFlow v9 and IPFIX share: compiled templates, the cache keyed by (exporter,
version, source id / observation domain, template id) with withdrawal and expiry, per-exporter option state
(sampling, interfaces, system init time), and the bounded hold of data sets that arrive before their
template.

A template is compiled once into a `struct.Struct` that unpacks only the fields a Flow needs (the rest
become pad bytes), so a data set of fixed-length records decodes with one `iter_unpack`. Templates with
variable-length fields walk each record instead, producing the same tuple.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from services.collector.decoders.errors import DecodeError
from services.collector.decoders.fields import (
    INT_CODES,
    INT_MAX,
    Builder,
    FieldSpec,
    Flow,
    Header,
    make_builder,
    option_value,
    plan_record,
)

VARLEN = 65535

TemplateKey = tuple[str, int, int, int]  # exporter, version, source id / observation domain, template id


@dataclass(slots=True)
class Template:
    template_id: int
    fields: list[FieldSpec]
    scope_count: int  # > 0: an options template
    min_length: int  # bytes of the shortest possible record (variable-length fields count 1)
    struct: struct.Struct | None  # fixed-length template: unpacks the used fields in one call
    used: list[tuple[int, str]]  # (position, kind) of the fields the builder reads
    build: Builder | None  # None for options templates
    sampling_index: int
    sampler_index: int
    updated: float = 0.0
    raw: bytes = b""  # the template record as sent: a re-sent, unchanged template is recognised by these bytes

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0


def compile_template(template_id: int, fields: list[FieldSpec], scope_count: int = 0) -> Template:
    if not fields:
        raise DecodeError("bad_template", f"template {template_id} has no fields")
    min_length = sum(1 if f.length == VARLEN else f.length for f in fields)
    if min_length == 0:  # records of zero bytes would never advance through a data set
        raise DecodeError("bad_template", f"template {template_id} describes empty records")
    if scope_count:
        return Template(template_id, fields, scope_count, min_length, None, [], None, -1, -1)
    plan = plan_record(fields)
    kinds = dict(plan.used)
    fmt = [">"]
    fixed = True
    for pos, f in enumerate(fields):
        if f.length == VARLEN:
            fixed = False
            break
        kind = kinds.get(pos)
        if kind is None:
            fmt.append(f"{f.length}x")
        elif kind == "int" and f.length in INT_CODES:
            fmt.append(INT_CODES[f.length])
        elif kind == "int":  # reduced-size encoding (3, 5, 6, 7 bytes): not expressible in struct
            fixed = False
            break
        else:
            fmt.append(f"{f.length}s")
    compiled = struct.Struct("".join(fmt)) if fixed else None
    return Template(
        template_id,
        fields,
        0,
        min_length,
        compiled,
        plan.used,
        make_builder(plan),
        plan.index.get("sampling_interval", -1),
        plan.index.get("sampler_id", -1),
    )


def walk_records(t: Template, body: bytes | memoryview) -> Iterator[list[bytes]]:
    """Each record of a data set as raw field values; stops at padding (fewer bytes than a record)."""
    end = len(body)
    off = 0
    while end - off >= t.min_length:
        values: list[bytes] = []
        for f in t.fields:
            n = f.length
            if n == VARLEN:
                if off >= end:
                    raise DecodeError("truncated_record", f"template {t.template_id}: variable-length field cut")
                n = body[off]
                off += 1
                if n == 255:
                    if off + 2 > end:
                        raise DecodeError("truncated_record", f"template {t.template_id}: length cut")
                    n = (body[off] << 8) | body[off + 1]
                    off += 2
            if off + n > end:
                raise DecodeError("truncated_record", f"template {t.template_id}: field {f.ie} overruns its set")
            values.append(bytes(body[off : off + n]))
            off += n
        yield values


def unpack_records(t: Template, body: bytes | memoryview) -> list[tuple[Any, ...]]:
    """The used values of every record of a data set, as tuples the template's builder reads."""
    if t.struct is not None:
        size = t.struct.size
        return list(t.struct.iter_unpack(body[: len(body) - len(body) % size])) if size else []
    rows = []
    for values in walk_records(t, body):
        row: list[Any] = []
        for pos, kind in t.used:
            raw = values[pos]
            if kind == "int":
                row.append(int.from_bytes(raw, "big"))
            elif len(raw) == (4 if kind == "addr4" else 16):
                row.append(raw)
            else:  # a variable-length address field of the wrong size: unreadable, read as unspecified
                row.append(b"\0" * (4 if kind == "addr4" else 16))
        rows.append(tuple(row))
    return rows


@dataclass(slots=True)
class ExporterState:
    """What option records taught us about one exporter (and observation domain)."""

    sampling_default: int = 0  # 0: none announced
    samplers: dict[int, int] = field(default_factory=dict)  # sampler / selector id -> interval
    interfaces: dict[int, str] = field(default_factory=dict)  # ifIndex -> name or description
    init_ms: int | None = None  # systemInitTimeMilliseconds
    info: dict[str, int | str] = field(default_factory=dict)  # other exporter metadata, by IE number

    def apply_option(self, record: dict[int, int | str]) -> None:
        interval = _sampling_interval(record)
        if interval:
            sampler = record.get(48, record.get(302))
            if isinstance(sampler, int):
                self.samplers[sampler] = interval
            else:
                self.sampling_default = interval
        name = record.get(82, record.get(83))
        ifindex = record.get(10)
        if isinstance(name, str) and isinstance(ifindex, int):
            self.interfaces[ifindex] = name
        init = record.get(160)
        if isinstance(init, int):
            self.init_ms = init
        for ie in (130, 131, 144, 149, 173, 214, 215):  # exporter addresses, process id, domain, versions
            if ie in record:
                self.info[str(ie)] = record[ie]

    def sampling_for(self, values: tuple[Any, ...], t: Template) -> int:
        if t.sampling_index >= 0 and values[t.sampling_index] > 0:
            return min(int(values[t.sampling_index]), INT_MAX)
        if t.sampler_index >= 0:
            interval = self.samplers.get(values[t.sampler_index])
            if interval:
                return interval
        return self.sampling_default or 1


def _sampling_interval(record: dict[int, int | str]) -> int:
    """1 in N from whichever sampling IEs the option record carries (RFC 7270 and NetFlow v9 forms), at
    most what the Flow schema's int holds."""
    return min(_announced_interval(record), INT_MAX)


def _announced_interval(record: dict[int, int | str]) -> int:
    for ie in (34, 50):  # samplingInterval, samplerRandomInterval
        value = record.get(ie)
        if isinstance(value, int) and value > 0:
            return value
    interval, space = record.get(305), record.get(306)  # samplingPacketInterval / samplingPacketSpace
    if isinstance(interval, int) and isinstance(space, int) and interval > 0:
        return max(1, (interval + space) // interval)
    size, population = record.get(309), record.get(310)  # samplingSize / samplingPopulation
    if isinstance(size, int) and isinstance(population, int) and size > 0:
        return max(1, population // size)
    return 0


@dataclass(slots=True)
class Undecodable:
    """Bytes given up on: a held data set whose template never came, for the dead-letter topic."""

    exporter: str
    reason: str
    raw: bytes


@dataclass(slots=True)
class Held:
    header: Header
    body: bytes
    received: float


@dataclass(slots=True)
class SetOutcome:
    flows: list[Flow] = field(default_factory=list)
    options: int = 0
    templates: int = 0
    held: int = 0
    per_template: dict[int, int] = field(default_factory=dict)
    undecodable: list[Undecodable] = field(default_factory=list)


class TemplateCache:
    """Templates and option state per exporter, and data sets waiting for their template.

    Bounded against hostile or broken exporters: at most `max_templates` templates (least recently
    refreshed evicted first) and `max_held` held data sets (oldest given up first).
    """

    def __init__(
        self,
        template_timeout_s: float = 1800.0,
        hold_s: float = 10.0,
        max_templates: int = 65536,
        max_held: int = 4096,
    ) -> None:
        self.template_timeout_s = template_timeout_s
        self.hold_s = hold_s
        self.max_templates = max_templates
        self.max_held = max_held
        self.templates: OrderedDict[TemplateKey, Template] = OrderedDict()
        self.exporters: dict[tuple[str, int, int], ExporterState] = {}
        self.held: OrderedDict[int, tuple[TemplateKey, Held]] = OrderedDict()
        self._held_seq = 0

    def state(self, h: Header) -> ExporterState:
        key = (h.exporter, h.version, h.domain)
        st = self.exporters.get(key)
        if st is None:
            st = self.exporters[key] = ExporterState()
        return st

    def refresh(self, h: Header, template_id: int, body: memoryview, off: int, now: float, out: SetOutcome) -> int:
        """Most exporters re-send every template every few packets: when the record at `off` is byte for
        byte the cached one, refresh it and return the offset after it, skipping parsing; else -1."""
        cached = self.templates.get((h.exporter, h.version, h.domain, template_id))
        if cached is None or not cached.raw or body[off : off + len(cached.raw)] != cached.raw:
            return -1
        self.learn(h, cached, now, out)
        return off + len(cached.raw)

    def learn_fields(
        self, h: Header, template_id: int, fields: list[FieldSpec], scope_count: int, raw: bytes, now: float,
        out: SetOutcome,
    ) -> None:  # fmt: skip
        """Compile and cache a template sent as `raw`."""
        template = compile_template(template_id, fields, scope_count)
        template.raw = raw
        self.learn(h, template, now, out)

    def learn(self, h: Header, template: Template, now: float, out: SetOutcome) -> None:
        """Cache a template and decode what was held for it."""
        key = (h.exporter, h.version, h.domain, template.template_id)
        template.updated = now
        self.templates[key] = template
        self.templates.move_to_end(key)
        while len(self.templates) > self.max_templates:
            self.templates.popitem(last=False)
        out.templates += 1
        waiting = [seq for seq, (k, _) in self.held.items() if k == key] if self.held else []
        for seq in waiting:
            _, held = self.held.pop(seq)
            try:
                self.decode_data(held.header, template, held.body, out)
            except DecodeError as exc:
                out.undecodable.append(Undecodable(h.exporter, exc.reason, held.body))

    def withdraw(self, h: Header, template_id: int | None, options: bool | None = None) -> None:
        """IPFIX withdrawal: one template, or (template_id None) all of a kind for this domain."""
        if template_id is not None:
            self.templates.pop((h.exporter, h.version, h.domain, template_id), None)
            return
        scope = (h.exporter, h.version, h.domain)
        for key in [k for k, t in self.templates.items() if k[:3] == scope and t.is_options == options]:
            del self.templates[key]

    def lookup(self, h: Header, template_id: int, now: float) -> Template | None:
        key = (h.exporter, h.version, h.domain, template_id)
        template = self.templates.get(key)
        if template is not None and now - template.updated > self.template_timeout_s:
            del self.templates[key]  # not refreshed in time: the exporter may have restarted with other templates
            return None
        return template

    def data_set(self, h: Header, template_id: int, body: bytes, now: float, out: SetOutcome) -> None:
        template = self.lookup(h, template_id, now)
        if template is None:
            self._hold((h.exporter, h.version, h.domain, template_id), Held(h, bytes(body), now), out)
            return
        self.decode_data(h, template, body, out)

    def decode_data(self, h: Header, t: Template, body: bytes | memoryview, out: SetOutcome) -> None:
        st = self.state(h)
        if t.is_options:
            for values in walk_records(t, body):
                record = {
                    f.ie: option_value(f.ie, raw) for f, raw in zip(t.fields, values, strict=True) if not f.enterprise
                }
                st.apply_option(record)
                out.options += 1
            return
        rows = unpack_records(t, body)
        if not rows:
            return
        h.init_ms = st.init_ms
        build = t.build
        assert build is not None
        if t.sampling_index < 0 and t.sampler_index < 0:
            out.flows.extend(build(rows, h, st.sampling_default or 1))
        else:
            out.flows.extend(build(rows, h, [st.sampling_for(row, t) for row in rows]))
        out.per_template[t.template_id] = out.per_template.get(t.template_id, 0) + len(rows)

    def _hold(self, key: TemplateKey, held: Held, out: SetOutcome) -> None:
        self._held_seq += 1
        self.held[self._held_seq] = (key, held)
        out.held += 1
        while len(self.held) > self.max_held:
            _, (k, oldest) = self.held.popitem(last=False)
            out.undecodable.append(Undecodable(k[0], "no_template", oldest.body))

    def expire(self, now: float) -> list[Undecodable]:
        """Give up on held data sets older than the hold time (`now` = inf gives up on all)."""
        gone = []
        while self.held:
            seq, (key, held) = next(iter(self.held.items()))
            if now - held.received <= self.hold_s:
                break
            del self.held[seq]
            gone.append(Undecodable(key[0], "no_template", held.body))
        return gone


def iter_sets(data: bytes, offset: int, end: int) -> Iterator[tuple[int, memoryview]]:
    """(set id, set body) of each set / flowset of a v9 or IPFIX packet; both use the same 4-byte set header."""
    view = memoryview(data)
    while end - offset >= 4:
        set_id, length = struct.unpack_from(">HH", data, offset)
        if length < 4:
            if not any(view[offset:end]):  # trailing zero padding after the last set, as some exporters send
                return
            raise DecodeError("bad_set_length", f"set {set_id} at byte {offset} claims {length} bytes")
        if offset + length > end:
            raise DecodeError("truncated", f"set {set_id} at byte {offset} needs {length} bytes, {end - offset} left")
        yield set_id, view[offset + 4 : offset + length]
        offset += length
