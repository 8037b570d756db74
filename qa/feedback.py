"""The chat's 👍/👎 log, and turning it into query-set lines (`qa feedback export`).

The chat appends one JSON line per vote to `feedback/feedback.jsonl` beside the index
folder: the question, the ids of the passages it showed (best first), the best sentence
of the top passage, the verdict, and the vote ("up", "down", or "cleared" when a thumb
is clicked again). The export closes the loop:

- the last vote on a question is 👍: a question whose answer is the top passage (its
  best sentence as the answer, its id as the gold passage);
- the last vote is 👎: a candidate unanswerable question, marked `"review": true`, since
  a 👎 may also mean the answer was there but badly ranked.

Then `qa eval exported.jsonl --calibrate` fits the "no answer" policy to the user's own
questions.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qa.errors import QuerySetError


def default_feedback_path(index_dir: str | Path) -> Path:
    """feedback/feedback.jsonl beside the index folder."""
    return Path(index_dir).resolve().parent / "feedback" / "feedback.jsonl"


class FeedbackLog:
    """Votes appended to a JSONL file, one line per vote (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"), **record}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")


def read_votes(path: str | Path) -> list[dict[str, Any]]:
    """The votes of a feedback log; lines that are not votes are skipped."""
    p = Path(path)
    if not p.is_file():
        raise QuerySetError(f"No feedback log at {p}. Votes are recorded by the chat (qa serve) with 👍/👎.")
    votes = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and isinstance(d.get("query"), str) and d.get("vote") in ("up", "down", "cleared"):
            votes.append(d)
    return votes


def export_queries(votes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Query-set lines from votes: the last vote on each question counts (a cleared vote drops it)."""
    last: dict[str, dict[str, Any]] = {}
    for v in votes:
        last[v["query"].strip()] = v
    out = []
    for query, v in last.items():
        qid = "fb-" + hashlib.sha256(query.encode("utf-8")).hexdigest()[:10]
        hits = [h for h in v.get("hits", []) if isinstance(h, str)]
        if v["vote"] == "up" and hits:
            answer = str(v.get("evidence") or v.get("top_text") or "").strip()
            line: dict[str, Any] = {"id": qid, "query": query, "answers": [answer] if answer else [],
                                    "passages": hits[:1], "kind": "feedback"}  # fmt: skip
        elif v["vote"] == "down":
            line = {"id": qid, "query": query, "answers": [], "kind": "unanswerable", "review": True}
        else:
            continue
        out.append(line)
    return out


def write_queries(lines: list[dict[str, Any]], path: str | Path | None) -> str:
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
