"""One encoding of a passage's places, used by every store: a field added here reaches them all.

A `Source` becomes a plain dict (JSON in passages.jsonl, a JSON field in Milvus) and back. Rows
written before a field existed read it as its default (`page`: None, `page_starts` and `places`: none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qa.split import Source


def source_to_dict(s: Source) -> dict[str, Any]:
    row: dict[str, Any] = {"file": s.file, "title": s.title, "paragraph": s.paragraph, "span": [s.start, s.end],
                           "order": s.order, "page": s.page}  # fmt: skip
    if s.page_starts:  # only passages that cross a page
        row["page_starts"] = list(s.page_starts)
    if s.places:  # only documents that name their places (slides, worksheet rows, OCR'd pages)
        row["places"] = list(s.places)
    return row


def source_from_dict(d: Mapping[str, Any]) -> Source:
    page = d.get("page")
    return Source(str(d["file"]), str(d["title"]), int(d["paragraph"]), int(d["span"][0]), int(d["span"][1]),
                  int(d["order"]), int(page) if page is not None else None,
                  tuple(int(p) for p in d.get("page_starts") or ()),
                  tuple(str(p) for p in d.get("places") or ()))  # fmt: skip
