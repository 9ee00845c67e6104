"""Pure NetFlow v5, v9 and IPFIX decoders: datagram bytes and the exporter's address in, Flow dicts out.

No sockets, no Kafka, no clock: the caller passes the receive time, which only ages templates and the
data sets held for a template not seen yet. `PacketDecoder` is the one entry point; it keeps the
template cache shared by v9 and IPFIX.
"""

from services.collector.decoders.errors import DecodeError
from services.collector.decoders.packet import DecodeResult, PacketDecoder
from services.collector.decoders.templates import Undecodable

__all__ = ["DecodeError", "DecodeResult", "PacketDecoder", "Undecodable"]
