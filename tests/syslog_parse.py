"""Independent parsers of RFC 5424 messages and CEF records for the tests (written from the RFCs and
the CEF spec, not from the formatter they check)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

HEADER = re.compile(r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) ")
PARAM = re.compile(r'([^\s=\]"]+)="((?:[^"\\\]]|\\.)*)"')


@dataclass
class Syslog5424:
    pri: int
    timestamp: datetime
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str


def parse_5424(line: str) -> Syslog5424:
    m = HEADER.match(line)
    if not m:
        raise ValueError(f"not an RFC 5424 header: {line[:80]!r}")
    rest = line[m.end() :]
    sd: dict[str, dict[str, str]] = {}
    if rest.startswith("-"):
        rest = rest[1:]
    else:
        while rest.startswith("["):
            end, i = None, 1
            while i < len(rest):  # the element ends at the first unescaped ']' outside a quoted value
                if rest[i] == "\\":
                    i += 2
                    continue
                if rest[i] == "]":
                    end = i
                    break
                i += 1
            if end is None:
                raise ValueError("unterminated structured data")
            body = rest[1:end]
            sd_id, _, params = body.partition(" ")
            sd[sd_id] = {k: re.sub(r"\\(.)", r"\1", v) for k, v in PARAM.findall(params)}
            rest = rest[end + 1 :]
    if rest and not rest.startswith(" "):
        raise ValueError("no space between structured data and message")
    return Syslog5424(
        pri=int(m["pri"]),
        timestamp=datetime.fromisoformat(m["ts"].replace("Z", "+00:00")),
        hostname=m["host"],
        app_name=m["app"],
        procid=m["proc"],
        msgid=m["msgid"],
        sd=sd,
        msg=rest[1:],
    )


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """The 7 header fields (unescaped) and the extension's key=value pairs (unescaped)."""
    fields, cur, i = [], [], 0
    while len(fields) < 7:
        c = text[i]
        if c == "\\":
            cur.append(text[i + 1])
            i += 2
        elif c == "|":
            fields.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    ext = text[i:]
    keys = []  # (start of key, position of its '=')
    j = 0
    while j < len(ext):
        if ext[j] == "\\":
            j += 2
            continue
        if ext[j] == "=":
            keys.append((ext.rfind(" ", 0, j) + 1, j))
        j += 1
    pairs = {}
    for n, (k_start, eq) in enumerate(keys):
        v_end = keys[n + 1][0] - 1 if n + 1 < len(keys) else len(ext)
        raw = ext[eq + 1 : v_end]
        pairs[ext[k_start:eq]] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), raw)
    return fields, pairs
