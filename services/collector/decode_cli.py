"""`flowsentinel decode FILE...`: the operator's tool for troubleshooting an exporter. Decodes export
datagrams from pcap/pcapng captures or raw payload files with the same decoder as the listener, and
prints flow counts per file, exporter, version and template, errors by reason, and (--json) one JSON
line per flow. Files share one template cache in the order given, so a template file followed by a
data file of the same exporter decodes as it would on the wire."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.collector.capture import CaptureError, read_datagrams
from services.collector.decoders import DecodeError, PacketDecoder
from services.collector.decoders.fields import Flow


@dataclass
class FileReport:
    path: Path
    datagrams: int = 0
    flows: int = 0
    options: int = 0
    templates: int = 0
    by_source: Counter[tuple[str, int, int]] = field(default_factory=Counter)  # (exporter, version, template)
    errors: Counter[str] = field(default_factory=Counter)


def decode_files(
    paths: list[Path],
    raw_exporter: str = "raw",
    on_flow: Callable[[Flow], None] | None = None,
    decoder: PacketDecoder | None = None,
) -> tuple[list[FileReport], list[Flow]]:
    """Decode files in order with one decoder; returns a report per file and every flow. A data set whose
    template never came is counted (`no_template`) where it is given up: the last file's report."""
    decoder = decoder or PacketDecoder()
    reports: list[FileReport] = []
    flows: list[Flow] = []
    for path in paths:
        report = FileReport(path)
        reports.append(report)
        try:
            for n, dgram in enumerate(read_datagrams(path, raw_exporter)):
                report.datagrams += 1
                try:
                    result = decoder.decode(dgram.payload, dgram.exporter, float(n))
                except DecodeError as exc:
                    report.errors[exc.reason] += 1
                    continue
                report.options += result.options
                report.templates += result.templates
                report.flows += len(result.flows)
                for template_id, count in result.per_template.items():
                    report.by_source[(dgram.exporter, result.version, template_id)] += count
                if result.version == 5:
                    report.by_source[(dgram.exporter, 5, 0)] += len(result.flows)
                for gone in result.undecodable:
                    report.errors[gone.reason] += 1
                flows.extend(result.flows)
                if on_flow:
                    for flow in result.flows:
                        on_flow(flow)
        except (OSError, CaptureError) as exc:
            report.errors[f"unreadable file: {exc}"] += 1
    for gone in decoder.expire(float("inf")):
        reports[-1].errors[gone.reason] += 1
    return reports, flows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path, help="pcap/pcapng captures or raw datagram files, in order")
    p.add_argument("--json", action="store_true", help="print one JSON line per flow on stdout")
    p.add_argument("--exporter", default="raw", help="exporter name for raw files (pcaps carry their own)")


def run(args: argparse.Namespace) -> int:
    def emit(flow: Flow) -> None:
        print(json.dumps(flow, separators=(",", ":")))

    decoder = PacketDecoder()
    reports, _ = decode_files(args.files, args.exporter, emit if args.json else None, decoder)
    out = sys.stderr if args.json else sys.stdout
    console = Console(file=out, width=None if out.isatty() else 200)  # piped: keep rows whole for grep
    table = Table("file", "datagrams", "flows", "options", "templates", "exporter/version/template: flows", "errors")
    for r in reports:
        sources = ", ".join(f"{e} v{v}" + (f" t{t}" if t else "") + f": {n}" for (e, v, t), n in r.by_source.items())
        errors = ", ".join(f"{reason}: {n}" for reason, n in r.errors.items())
        table.add_row(r.path.name, str(r.datagrams), str(r.flows), str(r.options), str(r.templates), sources, errors)
    console.print(table)
    exporters = Table("exporter", "version", "domain", "sampling", "samplers (id: 1 in N)", "interfaces", "init time")
    for (exporter, version, domain), st in decoder.cache.exporters.items():
        samplers = ", ".join(f"{k}: {v}" for k, v in st.samplers.items())
        interfaces = ", ".join(f"{k}={v}" for k, v in list(st.interfaces.items())[:4])
        more = len(st.interfaces) - 4
        exporters.add_row(
            exporter,
            str(version),
            str(domain),
            f"1 in {st.sampling_default}" if st.sampling_default else "-",
            samplers or "-",
            (interfaces + (f" (+{more})" if more > 0 else "")) or "-",
            str(st.init_ms / 1000) if st.init_ms is not None else "-",
        )
    if decoder.cache.exporters:
        console.print(exporters)
    total, bad = sum(r.flows for r in reports), sum(sum(r.errors.values()) for r in reports)
    console.print(f"{total} flows from {len(reports)} files; {bad} errors")
    return 1 if bad and not total else 0
