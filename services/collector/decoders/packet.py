"""`PacketDecoder`: the version byte picks the decoder; v9 and IPFIX share one template cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.collector.decoders.errors import DecodeError
from services.collector.decoders.fields import Flow
from services.collector.decoders.ipfix import decode_ipfix
from services.collector.decoders.netflow_v5 import decode_v5
from services.collector.decoders.netflow_v9 import decode_v9
from services.collector.decoders.templates import SetOutcome, TemplateCache, Undecodable


@dataclass(slots=True)
class DecodeResult:
    version: int
    flows: list[Flow]
    options: int = 0  # option records applied (sampling, interfaces, exporter metadata)
    templates: int = 0  # templates learned or refreshed
    held: int = 0  # data sets held until their template arrives
    per_template: dict[int, int] = field(default_factory=dict)  # template id -> flows decoded
    undecodable: list[Undecodable] = field(default_factory=list)  # held sets given up (evicted)


class PacketDecoder:
    """Decodes datagrams of any supported version; keeps v9/IPFIX templates between calls."""

    def __init__(self, cache: TemplateCache | None = None) -> None:
        self.cache = cache or TemplateCache()

    def decode(self, data: bytes, exporter: str, now: float) -> DecodeResult:
        """Flows of one datagram from `exporter`, received at `now` (seconds, any monotonic origin).

        Raises DecodeError for a packet it cannot read; nothing else escapes for any input bytes.
        """
        if len(data) < 2:
            raise DecodeError("truncated", f"{len(data)} bytes: no version")
        version = (data[0] << 8) | data[1]
        try:
            if version == 5:
                return DecodeResult(5, decode_v5(data, exporter))
            if version == 9:
                return _result(9, decode_v9(data, exporter, self.cache, now))
            if version == 10:
                return _result(10, decode_ipfix(data, exporter, self.cache, now))
        except (IndexError, ValueError, OverflowError) as exc:  # a missed bound check: a bad packet, not a crash
            raise DecodeError("malformed", f"{type(exc).__name__}: {exc}") from exc
        raise DecodeError("bad_version", f"version {version} is not NetFlow v5, v9 or IPFIX")

    def expire(self, now: float) -> list[Undecodable]:
        """Held data sets whose template did not arrive within the hold time."""
        return self.cache.expire(now)


def _result(version: int, out: SetOutcome) -> DecodeResult:
    return DecodeResult(version, out.flows, out.options, out.templates, out.held, out.per_template, out.undecodable)
