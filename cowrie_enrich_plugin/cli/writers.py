"""Writing stored records out: JSON lines, and CSV that spreadsheets cannot be tricked by.

Strings from the whois server and the GeoIP files are data. They are stored as
received; JSON output escapes every control and non-ASCII character; CSV output
prefixes a text cell that a spreadsheet would take as a formula (``=``, ``+``,
``-``, ``@``, tab, carriage return) with ``'`` and escapes control characters.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from typing import IO, Any, Final

from ..ecs import to_ecs
from ..record import SECTION_KEYS, EnrichmentRecord

__all__ = ["CSV_COLUMNS", "csv_cell", "flatten", "printable", "write_csv", "write_jsonl"]

#: The CSV header's columns: the record's keys, its Cymru and MaxMind sections flattened
#: (``cymru_asn``...), and the feeds' kinds and providers (space-separated).
CSV_COLUMNS: Final = (
    "ip",
    "status",
    "asn",
    "as_name",
    "country",
    *(f"{section}_{key}" for section in ("cymru", "maxmind") for key in SECTION_KEYS[section]),
    "expires_at",
    "classification_kinds",
    "classification_providers",
)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def flatten(record: EnrichmentRecord) -> dict[str, Any]:
    """One record as a flat mapping of :data:`CSV_COLUMNS`."""
    data = record.to_dict()
    flat: dict[str, Any] = {key: data[key] for key in ("ip", "status", "asn", "as_name", "country")}
    for section in ("cymru", "maxmind"):
        values = data[section] or {}
        for column in CSV_COLUMNS:
            if column.startswith(section + "_"):
                flat[column] = values.get(column[len(section) + 1 :])
    flat["expires_at"] = data["expires_at"]
    labels = data["classification"] or {}
    # space-separated, like cymru_asns; empty when no feed lists the address or none is installed
    flat["classification_kinds"] = " ".join(labels.get("kinds", ()))
    flat["classification_providers"] = " ".join(
        sorted({str(label["provider"]) for label in labels.get("labels", ())})
    )
    if isinstance(flat["cymru_asns"], list):
        flat["cymru_asns"] = " ".join(str(asn) for asn in flat["cymru_asns"])
    return flat


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, newlines) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def csv_cell(value: Any) -> str:
    """Render one value for CSV; text that a spreadsheet would execute is neutralised."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)
    text = printable(value)
    if text.startswith(_FORMULA_START) or value.startswith(_FORMULA_START):
        return "'" + text
    return text


def write_jsonl(records: Iterable[EnrichmentRecord], stream: IO[str], *, ecs: bool = False) -> int:
    """Write records as JSON lines (ASCII-escaped), ECS-named with ``ecs``; return how many."""
    count = 0
    for record in records:
        data = record.to_dict()
        stream.write(json.dumps(to_ecs(data) if ecs else data) + "\n")
        count += 1
    return count


def write_csv(
    records: Iterable[EnrichmentRecord], stream: IO[str], sources: Sequence[str] = ()
) -> int:
    """Write records as CSV with a header row; return how many.

    Each network source adds one column under its name: its section as JSON (empty
    when the address was never asked, as for skipped addresses).
    """
    writer = csv.writer(stream)
    writer.writerow((*CSV_COLUMNS, *sources))
    count = 0
    for record in records:
        flat = flatten(record)
        sections = dict(record.sections)
        row = [csv_cell(flat[column]) for column in CSV_COLUMNS]
        row += [
            csv_cell(json.dumps(sections[name].to_dict(), sort_keys=True))
            if name in sections
            else ""
            for name in sources
        ]
        writer.writerow(row)
        count += 1
    return count
