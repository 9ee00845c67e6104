"""Loopback helpers shared by the tests that feed real NetFlow exports to a listener."""

from pathlib import Path


def udp_queue_bytes(port: int) -> int | None:
    """Bytes waiting on the UDP socket bound to 127.0.0.1:port (None: nothing bound). Read from /proc/net/udp:
    probing by binding the port could win the race and keep the process under test from binding it."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16)
    return None
