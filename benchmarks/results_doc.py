"""Write a measured table between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` in every page
that holds those markers: docs/results.md holds every table, the README its one summary (bench:models)."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "docs" / "results.md", ROOT / "README.md")


def add_write_flag(parser: argparse.ArgumentParser) -> None:
    """``--write-results`` (``--write-readme`` is its older name, kept so existing commands still work)."""
    parser.add_argument(
        "--write-results",
        "--write-readme",
        dest="write_results",
        action="store_true",
        help="write the table into docs/results.md (and the README's summary when it is the summary)",
    )


def write_section(name: str, body: str, heading: str | None = None) -> list[Path]:
    """Replace the block ``name`` in every page that has it. A block no page has yet fails, or with a
    ``heading`` starts a new section at the end of docs/results.md (a newly registered model's first table)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    written = []
    for page in PAGES:
        text = page.read_text()
        if start not in text or end not in text:
            continue
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        page.write_text(f"{head}{start}\n{body}\n{end}{tail}")
        written.append(page)
    if not written and heading:
        results = PAGES[0]
        results.write_text(results.read_text().rstrip("\n") + f"\n\n## {heading}\n\n{start}\n{body}\n{end}\n")
        written.append(results)
    if not written:
        raise SystemExit(f"no page among {', '.join(p.name for p in PAGES)} has {start} ... {end} markers")
    return written
