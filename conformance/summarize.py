"""Summarize Autobahn|Testsuite reports and gate on their verdicts.

Reads the ``index.json`` that ``wstest -m fuzzingclient`` writes for each
configuration (per_message_deflate off and on), prints one table per
configuration (case groups, counts by verdict, total duration), optionally
writes the same as reStructuredText (``--write docs/conformance.rst``), and
exits 1 listing every case whose verdict is not acceptable:

* deflate on: every case must be OK, NON-STRICT or INFORMATIONAL;
* deflate off: the same for groups 1-10, while the compression groups 12 and
  13 must be UNIMPLEMENTED (the server declined permessage-deflate).

A case's verdict is the suite's ``behavior``, made stricter by the closing
handshake (``behaviorClose``): a close that FAILED or was UNCLEAN makes an
otherwise passing case FAILED; a WRONG CODE or a TCP connection dropped by the
client (FAILED BY CLIENT) makes an OK case NON-STRICT.

Exit status: 0 all acceptable, 1 unacceptable verdicts, 2 a report is missing
or unreadable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal, TextIO

__all__ = [
    "ACCEPTABLE",
    "COMPRESSION_GROUPS",
    "GROUP_NAMES",
    "VERDICTS",
    "CaseResult",
    "Report",
    "acceptable",
    "load_report",
    "main",
    "render_document",
    "verdict",
]

Config = Literal["off", "on"]

OK: Final = "OK"
NON_STRICT: Final = "NON-STRICT"
INFORMATIONAL: Final = "INFORMATIONAL"
UNIMPLEMENTED: Final = "UNIMPLEMENTED"
FAILED: Final = "FAILED"
VERDICTS: Final = (OK, NON_STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED)
ACCEPTABLE: Final = frozenset({OK, NON_STRICT, INFORMATIONAL})
COMPRESSION_GROUPS: Final = frozenset({"12", "13"})

# Autobahn|Testsuite's CaseCategories (autobahntestsuite/case/__init__.py).
GROUP_NAMES: Final = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "WebSocket Compression (different payloads)",
    "13": "WebSocket Compression (different parameters)",
}
CONFIG_TITLES: Final[dict[Config, str]] = {
    "off": "per_message_deflate off",
    "on": "per_message_deflate on",
}
OPCODES: Final = {
    0: "continuation",
    1: "text",
    2: "binary",
    8: "close",
    9: "ping",
    10: "pong",
}
MAX_FRAMES_SHOWN: Final = 8
MAX_TEXT_SHOWN: Final = 300


class ReportError(Exception):
    """A report directory is missing, or its JSON is not what wstest writes."""


def verdict(behavior: str, behavior_close: str) -> str:
    """Return the verdict of one case from the suite's two behaviours.

    Args:
        behavior: the case's ``behavior`` (OK, NON-STRICT, FAILED, ...).
        behavior_close: the closing handshake's ``behaviorClose``.

    Returns:
        One of VERDICTS; any behaviour outside them counts as FAILED.
    """
    if behavior not in VERDICTS:
        return FAILED
    if behavior in ACCEPTABLE:
        if behavior_close in (FAILED, "UNCLEAN"):
            return FAILED
        if behavior == OK and behavior_close in ("WRONG CODE", "FAILED BY CLIENT"):
            return NON_STRICT
    return behavior


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key that puts 1.1.2 before 1.1.10."""
    return tuple(int(part) for part in case_id.split("."))


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case of one configuration, as listed in index.json."""

    case_id: str
    behavior: str
    behavior_close: str
    duration_ms: int
    remote_close_code: int | None
    report_file: Path

    @property
    def group(self) -> str:
        """The top-level case group: "6" for case 6.4.1."""
        return self.case_id.split(".", 1)[0]

    @property
    def verdict(self) -> str:
        """The case's verdict (see verdict())."""
        return verdict(self.behavior, self.behavior_close)

    def details(self) -> dict[str, Any]:
        """Load the case's own JSON report (description, wire log ...)."""
        try:
            data = json.loads(self.report_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return {"description": f"(no case report: {exc})"}
        return data if isinstance(data, dict) else {}


@dataclass(frozen=True, slots=True)
class Report:
    """All cases run against one agent (one configuration)."""

    config: Config
    directory: Path
    agent: str
    cases: tuple[CaseResult, ...]


def load_report(config: Config, directory: Path) -> Report:
    """Read ``directory/index.json`` as written by the fuzzing client.

    Raises:
        ReportError: the file is missing, unreadable, or holds no cases.
    """
    index = directory / "index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {index}: {exc}") from exc
    if not isinstance(data, dict) or len(data) != 1:
        raise ReportError(f"{index}: expected exactly one agent, got {len(data)}")
    ((agent, raw_cases),) = data.items()
    if not isinstance(raw_cases, dict) or not raw_cases:
        raise ReportError(f"{index}: agent {agent!r} has no cases")
    cases = []
    try:
        for case_id in sorted(raw_cases, key=case_key):
            raw = raw_cases[case_id]
            cases.append(
                CaseResult(
                    case_id=case_id,
                    behavior=str(raw["behavior"]),
                    behavior_close=str(raw["behaviorClose"]),
                    duration_ms=int(raw["duration"]),
                    remote_close_code=raw.get("remoteCloseCode"),
                    report_file=directory / str(raw["reportfile"]),
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{index}: unexpected case entry: {exc!r}") from exc
    return Report(config, directory, str(agent), tuple(cases))


def acceptable(config: Config, case: CaseResult) -> bool:
    """Whether ``case`` passes the gate of its configuration (see module doc)."""
    if config == "off" and case.group in COMPRESSION_GROUPS:
        return case.verdict == UNIMPLEMENTED
    return case.verdict in ACCEPTABLE


def expected_text(config: Config, case: CaseResult) -> str:
    """What the gate wanted for ``case``, for the failure listing."""
    if config == "off" and case.group in COMPRESSION_GROUPS:
        return "UNIMPLEMENTED (extension declined)"
    return "OK, NON-STRICT or INFORMATIONAL"


# --- Tables ---------------------------------------------------------------


def format_duration(ms: int) -> str:
    """Format milliseconds as seconds with one decimal: "12.3 s"."""
    return f"{ms / 1000:.1f} s"


def group_rows(cases: Iterable[CaseResult]) -> list[list[str]]:
    """One row per case group plus a total row: counts by verdict, duration."""
    groups: dict[str, list[CaseResult]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)

    def row(label: str, name: str, members: Sequence[CaseResult]) -> list[str]:
        counts = [sum(c.verdict == v for c in members) for v in VERDICTS]
        duration = sum(c.duration_ms for c in members)
        cells = [label, name, str(len(members)), *map(str, counts)]
        return [*cells, format_duration(duration)]

    rows = [
        row(group, GROUP_NAMES.get(group, "?"), members)
        for group, members in sorted(groups.items(), key=lambda kv: int(kv[0]))
    ]
    everything = [c for members in groups.values() for c in members]
    rows.append(row("Total", "", everything))
    return rows


def simple_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a reStructuredText simple table, numbers right-aligned."""
    widths = [
        max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)
    ]
    border = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=True):
            numeric = cell[:1].isdigit()
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join([border, line(header), border, *map(line, rows), border])


def summary_table(report: Report) -> str:
    """The per-group verdict table of one configuration."""
    header = ["Group", "Name", "Cases", *VERDICTS, "Duration"]
    return simple_table(header, group_rows(report.cases))


# --- Case details -----------------------------------------------------------


def shorten(value: object, limit: int = MAX_TEXT_SHOWN) -> str:
    """One line of text (HTML tags dropped) cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def logged_bytes(payload: object) -> bytes | None:
    """The bytes of a wire-log payload ("0x" + hex, or decoded text), if whole."""
    if not isinstance(payload, str) or payload.endswith(" ..."):
        return None
    if payload.startswith("0x"):
        try:
            return bytes.fromhex(payload[2:])
        except ValueError:
            return None
    return payload.encode("utf-8")


def describe_frame(entry: Sequence[Any]) -> str:
    """Describe one "RF" (frame received from the server) wire-log entry."""
    (length, payload), opcode, fin, rsv = entry[1], entry[2], entry[3], entry[4]
    name = OPCODES.get(opcode, f"opcode {opcode}")
    parts = [f"len={length}"]
    data = logged_bytes(payload)
    if name == "close" and data is not None and len(data) >= 2:
        parts.insert(0, f"code={int.from_bytes(data[:2], 'big')}")
        if len(data) > 2:
            parts.append(f"reason={data[2:].decode('utf-8', 'replace')!r}")
    if not fin:
        parts.append("fin=0")
    if rsv:
        parts.append(f"rsv={rsv}")
    return f"{name}({', '.join(parts)})"


def server_frames(details: dict[str, Any]) -> list[str]:
    """The last frames the server sent, from the case's wire log."""
    wirelog = details.get("wirelog") or []
    frames = [describe_frame(e) for e in wirelog if e and e[0] == "RF"]
    if len(frames) > MAX_FRAMES_SHOWN:
        skipped = len(frames) - MAX_FRAMES_SHOWN
        frames = [f"... {skipped} earlier", *frames[-MAX_FRAMES_SHOWN:]]
    return frames


def header_line(http: object, name: str) -> str | None:
    """The value of header ``name`` in a raw HTTP message, if present."""
    if not isinstance(http, str):
        return None
    match = re.search(rf"^{re.escape(name)}:\s*(.*?)\r?$", http, re.I | re.M)
    return match.group(1) if match else None


def describe_failure(config: Config, case: CaseResult) -> str:
    """Several lines saying what the case wanted and what the server did."""
    d = case.details()
    lines = [
        f"{case.case_id} [deflate {config}]: {case.verdict} "
        f"(behavior {case.behavior}, close {case.behavior_close}); "
        f"wanted {expected_text(config, case)}",
        f"    case:     {shorten(d.get('description', '?'))}",
        f"    expected: {shorten(d.get('expectation', '?'))}",
    ]
    results = dict.fromkeys([d.get("result", "?"), d.get("resultClose", "?")])
    lines.append(f"    result:   {' / '.join(shorten(r) for r in results)}")
    if "remoteCloseCode" in d:
        lines.append(
            f"    server:   close code {d.get('remoteCloseCode')} "
            f"reason {d.get('remoteCloseReason')!r}, clean={d.get('wasClean')}"
            + (f" ({d['wasNotCleanReason']})" if d.get("wasNotCleanReason") else "")
            + (", TCP dropped by the suite" if d.get("droppedByMe") else "")
        )
    extensions = header_line(d.get("httpResponse"), "Sec-WebSocket-Extensions")
    if extensions is not None:
        lines.append(f"    accepted: Sec-WebSocket-Extensions: {extensions}")
    frames = server_frames(d)
    if frames:
        lines.append(f"    frames:   {'; '.join(frames)}")
    if d.get("received"):
        lines.append(f"    received: {shorten(d['received'])}")
    lines.append(f"    report:   {case.report_file}")
    return "\n".join(lines)


def describe_briefly(case: CaseResult) -> str:
    """One rst list item for a non-OK case that the gate accepts."""
    d = case.details()
    result = shorten(d.get("result", ""))
    if case.behavior_close not in (OK, case.behavior):
        result = f"{result} {shorten(d.get('resultClose', ''))}".strip()
    description = rst_escape(shorten(d.get("description", "?")))
    expectation = rst_escape(shorten(d.get("expectation", "?")))
    return (
        f"- {case.case_id} **{case.verdict}**: {description}\n"
        f"  Expected: {expectation} Got: {rst_escape(result)}"
    )


# --- Document ---------------------------------------------------------------


def suite_versions(report: Report) -> tuple[str, str]:
    """(suite user agent, server header) from the first case's handshake."""
    d = report.cases[0].details()
    agent = header_line(d.get("httpRequest"), "User-Agent") or "?"
    server = header_line(d.get("httpResponse"), "Server") or "?"
    return agent, server


def package_version() -> str:
    """ "aiohttp-upgrade VERSION" as installed for this interpreter."""
    try:
        return f"aiohttp-upgrade {metadata.version('aiohttp-upgrade')}"
    except metadata.PackageNotFoundError:
        return "aiohttp-upgrade (version unknown)"


def run_date(report: Report) -> str:
    """The UTC date the first case started on, as YYYY-MM-DD."""
    started = report.cases[0].details().get("started")
    return str(started)[:10] if started else "?"


def rst_escape(text: str) -> str:
    """Escape characters that reStructuredText would read as markup."""
    return re.sub(r"([\\*`|_])", r"\\\1", text)


def render_document(reports: Sequence[Report]) -> str:
    """The whole docs/conformance.rst for ``reports``."""
    agent, server = suite_versions(reports[0])
    out = [
        ".. Generated by conformance/summarize.py from the reports of",
        "   `bash conformance/run.sh full` (make conformance). Do not edit by hand.",
        "",
        "Autobahn|Testsuite conformance",
        "==============================",
        "",
        "aiohttp-upgrade is checked against the `Autobahn|Testsuite`_ fuzzing client",
        "(``wstest -m fuzzingclient``) with ``conformance/echo_server.py``, an echo",
        "handler whose ``message`` hook calls ``ws.send(message)``, once with",
        "``per_message_deflate`` off and once on. ``make conformance`` runs every",
        "case and regenerates this page; ``make conformance-quick`` (run by CI) runs",
        "groups 1-7 and 10 plus a sample of 12 and 13 and only checks the verdicts.",
        "",
        ".. _Autobahn|Testsuite: https://github.com/crossbario/autobahn-testsuite",
        "",
        f"Last full run: {run_date(reports[0])}; {package_version()};",
        f"suite ``{rst_escape(agent)}``; server header ``{rst_escape(server)}``.",
        "The suite's own HTML and JSON reports of every case are left in",
        "``conformance/reports/MODE/deflate-{off,on}/`` (not committed).",
        "",
        "Verdicts",
        "--------",
        "",
        "A case's verdict is the suite's *behavior*, made stricter by its closing",
        "handshake: a close that failed or was unclean makes it FAILED, an",
        "unexpected close code or a connection the suite had to drop makes an OK",
        "case NON-STRICT. The run passes when",
        "",
        "- with ``per_message_deflate`` on, every case is OK, NON-STRICT (a SHOULD",
        "  of RFC 6455 not followed) or INFORMATIONAL (behaviour the RFC leaves",
        "  open);",
        "- with ``per_message_deflate`` off, the same holds for groups 1-10 and",
        "  every case of the compression groups 12 and 13 is UNIMPLEMENTED: the",
        "  server declined the extension and it was never negotiated.",
        "",
        "Durations are the sums of the cases' own durations.",
    ]
    for report in reports:
        title = CONFIG_TITLES[report.config]
        out += ["", title, "-" * len(title), "", summary_table(report), ""]
        noted = [
            c for c in report.cases if acceptable(report.config, c) and c.verdict != OK
        ]
        if report.config == "off":
            noted = [c for c in noted if c.group not in COMPRESSION_GROUPS]
        failed = [c for c in report.cases if not acceptable(report.config, c)]
        if failed:
            out += ["Cases that fail the gate:", ""]
            out += [describe_briefly(c) for c in failed]
            out.append("")
        if noted:
            out += ["Accepted cases that are not OK:", ""]
            out += [describe_briefly(c) for c in noted]
            out.append("")
        if not failed and not noted:
            out += ["Every case is OK.", ""]
    return "\n".join(out).rstrip() + "\n"


# --- Command line ---------------------------------------------------------


def print_summary(reports: Sequence[Report], stream: TextIO) -> None:
    """Print each configuration's table."""
    for report in reports:
        print(f"{CONFIG_TITLES[report.config]} ({report.directory})", file=stream)
        print(summary_table(report), file=stream)
        print(file=stream)


def main(argv: Sequence[str] | None = None) -> int:
    """Summarize the given reports; return the exit status (see module doc)."""
    parser = argparse.ArgumentParser(
        description="Summarize Autobahn|Testsuite reports and check the verdicts."
    )
    parser.add_argument(
        "--off", type=Path, help="report directory of the run with deflate off"
    )
    parser.add_argument(
        "--on", type=Path, help="report directory of the run with deflate on"
    )
    parser.add_argument(
        "--write", type=Path, metavar="RST", help="also write the summary here"
    )
    args = parser.parse_args(argv)
    directories: list[tuple[Config, Path]] = []
    if args.off is not None:
        directories.append(("off", args.off))
    if args.on is not None:
        directories.append(("on", args.on))
    if not directories:
        parser.error("give --off DIR, --on DIR or both")

    try:
        reports = [load_report(config, path) for config, path in directories]
    except ReportError as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 2

    print_summary(reports, sys.stdout)
    if args.write is not None:
        args.write.write_text(render_document(reports), encoding="utf-8")
        print(f"wrote {args.write}")

    failures = [
        (r.config, c) for r in reports for c in r.cases if not acceptable(r.config, c)
    ]
    if not failures:
        total = sum(len(r.cases) for r in reports)
        print(f"conformance: {total} cases, all verdicts acceptable")
        return 0
    print(f"conformance: {len(failures)} case(s) failed:", file=sys.stderr)
    for config, case in failures:
        print(describe_failure(config, case), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
