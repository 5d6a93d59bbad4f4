"""Human-readable tables for the review tools (the ``--json`` forms are each object's ``to_json``).

Column widths count East Asian wide characters (Chinese agency names) as two cells, so tables
stay aligned in a terminal. Subject identifiers are masked unless ``full_ids`` is asked for.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from audit.entry import Access, ConsentChange
from audit.review import EntryRef, LocatedEntry, ShreddedEntry, shredded_sentence
from audit.review.export import VerifiedExport
from audit.review.report import Report
from audit.review.subject_report import Language, SubjectReport, mask_identifier

__all__ = [
    "entry_row",
    "render_entries",
    "render_report",
    "render_subject_report",
    "render_verified_export",
    "short_log_names",
    "table",
    "text_width",
]


def text_width(text: str) -> int:
    """Terminal cells ``text`` takes (wide and full-width characters count two)."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - text_width(text))
    return fill + text if right else text + fill


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Sequence[int] = ()) -> str:
    """A plain-text table: a header line, a rule, then one line per row. Columns whose numbers are
    in ``right`` are right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [text_width(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], text_width(cell))

    def line(row: Sequence[str]) -> str:
        return "  ".join(_pad(c, widths[i], i in right) for i, c in enumerate(row)).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def entry_row(item: LocatedEntry, zone: ZoneInfo, *, full_ids: bool = False) -> list[str]:
    entry = item.entry
    body = entry.body
    subject = ""
    if entry.subject is not None:
        ident = entry.subject.id if full_ids else mask_identifier(entry.subject.id)
        subject = f"{entry.subject.kind.value}:{ident}"
    if isinstance(body, Access):
        what = f"{body.provider.value} {body.decision.value}"
        extra = body.legal_basis.kind.value + (f" {body.reason}" if body.reason else "")
    elif isinstance(body, ConsentChange):
        what = f"consent {body.action.value}"
        extra = body.consent_id
    else:
        what = f"push {body.outcome.value}"
        extra = body.policy_id
    return [
        item.origin,
        str(item.index),
        entry.time.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        entry.caller.value if entry.caller else "",
        entry.operator,
        subject,
        entry.purpose or "",
        what,
        extra,
    ]


def render_entries(
    items: Sequence[LocatedEntry],
    *,
    timezone: str = "Asia/Shanghai",
    full_ids: bool = False,
    shredded: Sequence[ShreddedEntry] = (),
) -> str:
    """Search results, one line per entry, then a line per retention period of the matching
    entries that were shredded (they cannot be shown)."""
    zone = ZoneInfo(timezone)
    headers = [
        "log",
        "index",
        f"time ({timezone})",
        "caller",
        "operator",
        "subject",
        "purpose",
        "what",
        "basis",
    ]
    body = table(headers, (entry_row(i, zone, full_ids=full_ids) for i in items), right=(1,))
    out = f"{body}\n{len(items)} entr{'y' if len(items) == 1 else 'ies'}"
    if shredded:
        out += f" shown, {len(shredded)} more shredded\n{shredded_sentence(shredded)}"
    return out


def short_log_names(origins: Iterable[str]) -> dict[str, str]:
    """A short name for each log origin: its node (``dsgw.audit/<node>/<uuid>``) when no other of
    ``origins`` has the same, else the whole origin."""
    unique = sorted(set(origins))
    node = {}
    for origin in unique:
        parts = origin.split("/")
        node[origin] = parts[1] if len(parts) >= 3 and parts[1] else origin
    counts = Counter(node.values())
    return {origin: node[origin] if counts[node[origin]] == 1 else origin for origin in unique}


def _runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive indices as (first, last) runs, ascending."""
    runs: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _refs(refs: Sequence[EntryRef], names: Mapping[str, str], limit: int = 5) -> str:
    """The entries compactly, e.g. ``gw1 #0-#4, #17; gw2 #3 (+203 more)``: each log once (by its
    short name), consecutive indices as ranges, at most ``limit`` runs (the full list is in --json)."""
    by_log: dict[str, list[int]] = {}
    for ref in refs:
        by_log.setdefault(ref.origin, []).append(ref.index)
    parts = []
    room = limit
    shown = 0
    for origin, indices in by_log.items():
        runs = _runs(indices)[:room]
        if not runs:
            break
        room -= len(runs)
        shown += sum(last - first + 1 for first, last in runs)
        text = ", ".join(f"#{a}" if a == b else f"#{a}-#{b}" for a, b in runs)
        parts.append(f"{names.get(origin, origin)} {text}")
    rest = len(set(refs)) - shown
    return "; ".join(parts) + (f" (+{rest} more)" if rest else "")


def _period(report: Report) -> str:
    """The report's days: those asked for, an open end shown as the first or last day of the
    entries (``all`` when there is neither a bound nor an entry)."""
    first_day, last_day = report.first_and_last_day()
    first = report.since or first_day
    last = report.until or last_day
    if first is None and last is None:
        return "all"
    if first is None or last is None:
        return f"from {first}" if first is not None else f"until {last}"
    return f"{first.isoformat()} .. {last.isoformat()}"


def render_report(report: Report) -> str:
    """The review report: period, volumes, denials, anomalies."""
    head = f"Audit report {_period(report)} ({report.config.timezone}): {report.entries} entries"
    if report.shredded:
        head += f", {len(report.shredded)} of them shredded at retention"
    parts = [head]
    if report.shredded:
        parts.append(shredded_sentence(report.shredded))
    parts.append("\nVolumes (access requests per day, caller, purpose, decision)")
    parts.append(
        table(
            ["day", "caller", "purpose", "decision", "count"],
            ([r.day.isoformat(), r.caller, r.purpose or "-", r.decision, r.count] for r in report.volumes),
            right=(4,),
        )
        if report.volumes
        else "(none)"
    )
    other = [
        (day, kind, count)
        for day, kinds in sorted(report.kinds.items())
        for kind, count in sorted(kinds.items())
        if kind != "access"
    ]
    if other:
        parts.append("\nOther entries (per day and kind)")
        parts.append(
            table(["day", "kind", "count"], ([d.isoformat(), k, c] for d, k, c in other), right=(2,))
        )
    parts.append("\nDenials")
    if report.denials:
        parts.append(
            table(
                ["day", "caller", "provider", "purpose", "reason", "count"],
                (
                    [r.day.isoformat(), r.caller, r.provider, r.purpose or "-", r.reason, r.count]
                    for r in report.denials
                ),
                right=(5,),
            )
        )
        totals = ", ".join(f"{reason} {count}" for reason, count in sorted(report.denial_reasons.items()))
        parts.append(f"by reason: {totals}")
    else:
        parts.append("(none)")
    parts.append(f"\nAnomalies ({len(report.anomalies)})")
    if report.anomalies:
        names = short_log_names(ref.origin for a in report.anomalies for ref in a.refs)
        parts.append(
            table(
                ["day", "rule", "caller", "operator", "count", "finding", "entries"],
                (
                    [
                        a.day.isoformat(),
                        a.rule,
                        a.caller,
                        a.operator or "-",
                        a.count,
                        a.message,
                        _refs(a.refs, names),
                    ]
                    for a in report.anomalies
                ),
                right=(4,),
            )
        )
        legend = [f"{short} = {origin}" for origin, short in names.items() if short != origin]
        if legend:
            parts.append(f"logs: {', '.join(legend)}")
    else:
        parts.append("(none)")
    if report.shredded:
        parts.append(
            "\nShredded at retention (per UTC day and kind; in no section above: their details are gone)"
        )
        parts.append(
            table(
                ["day (UTC)", "kind", "count"],
                (
                    [day.isoformat(), kind, count]
                    for day, kinds in report.shredded_per_day().items()
                    for kind, count in kinds.items()
                ),
                right=(2,),
            )
        )
    return "\n".join(parts)


def render_subject_report(report: SubjectReport, *, languages: Sequence[Language] = ("en", "zh")) -> str:
    """A citizen's report as numbered paragraphs, in the languages asked for."""
    reads = sum(report.readers.values())
    failed = sum(report.failed.values())
    head = {
        "en": (
            f"Access report for {report.subject_kind} {report.subject_masked}: "
            f"{len(report.items)} event(s), {reads} allowed read(s), "
            + (f"{failed} failed request(s) (no data given), " if failed else "")
            + f"{report.denied} refused request(s). Times are {report.timezone}."
        ),
        "zh": (
            f"{report.subject_masked} 的数据使用记录：共 {len(report.items)} 条，"
            f"允许查询 {reads} 次，"
            + (f"查询失败 {failed} 次（未提供数据），" if failed else "")
            + f"拒绝 {report.denied} 次。时间为 {report.timezone} 时间。"
        ),
    }
    lines = [head[lang] for lang in languages]
    lines += [report.shredded_text[lang] for lang in languages if report.shredded_text.get(lang)]
    if not report.items and not report.shredded:
        lines.append(
            {
                "en": "No agency accessed your data in the logs searched.",
                "zh": "所查日志中没有部门使用您的数据。",
            }[languages[0]]
        )
    for number, item in enumerate(report.items, start=1):
        lines.append("")
        for lang in languages:
            lines.append(f"{number}. {item.text[lang]}")
        if item.reference:
            lines.append(f"   ref: {item.reference}")
    return "\n".join(lines)


def render_verified_export(result: VerifiedExport) -> str:
    """A verified bundle: signer, logs and counts."""
    lines = [
        f"bundle verified: signed by {', '.join(result.signed_by)}, created {result.created}",
    ]
    if result.note:
        lines.append(f"note: {result.note}")
    lines.append(
        table(
            ["log", "tree size", "entries", "decrypted", "content checked", "shredded"],
            (
                [v.origin, v.tree_size, v.entries, v.decrypted, v.content_checked, len(v.shredded)]
                for v in result.logs
            ),
            right=(1, 2, 3, 4, 5),
        )
    )
    shredded = sum(len(v.shredded) for v in result.logs)
    if shredded:
        lines.append(
            f"{shredded} entr{'y was' if shredded == 1 else 'ies were'} shredded at retention: "
            "proved to be in the log, their details are gone"
        )
    return "\n".join(lines)
