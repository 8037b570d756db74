"""Check the labelled question sets in tests/data: dev.jsonl, test.jsonl, dialogues*.jsonl.

    python3 tests/data/check_queries.py            # from the repository root
    python3 tests/data/check_queries.py --quiet    # only problems and the verdict

What it verifies (exit status 1 if anything fails):
  * every line is a JSON object with the expected fields; kinds are known; "answers": [] exactly
    for the kinds "unanswerable" (far off topic) and "near_topic" (COVID-era, not in the corpus);
  * every answer, NFKC-normalized with whitespace removed and lower-cased (as in qa.split.normalize),
    is a substring of a seed document, and lies inside one passage of the default split
    (otherwise no passage can be relevant and the question is silently unanswerable);
  * dialogues (dialogues.jsonl: development; dialogues_test.jsonl and dialogues_heldout.jsonl:
    held out) have a context,
    a query, the query asked in full and answers; kind "followup" (elliptical) or "new" (a full
    new question: searched alone); their optional "context_answers" are checked like answers;
  * ids are unique across dev, test and dialogues; while tests/data/queries.jsonl exists,
    every one of its questions is in dev or test with the same text and answers;
  * paraphrases do not straddle the split: two questions are linked when an answer of one is a
    substring of an answer of the other, or when their answers fall in the same source sentence
    (sentences as qa.split cuts them; identical sentences in several places count as one);
    linked questions must carry the same "group", and a group must lie in one file;
  * the test file keeps every kind, at least 30 unanswerable questions (at least 15 near-topic)
    and at least 20 English ones.
It prints counts per kind and per file. Documents are read with the project's own reader
(qa.documents, qa.split) when importable; otherwise with a stdlib fallback (front matter and
HTML tags stripped), which cannot check passage boundaries.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEEDS = ROOT / "seeds"
FILES = {"dev": HERE / "dev.jsonl", "test": HERE / "test.jsonl"}
DIALOGUES = HERE / "dialogues.jsonl"
DIALOGUES_TEST = HERE / "dialogues_test.jsonl"  # held out: written before the follow-up rule was tuned
DIALOGUES_HELDOUT = HERE / "dialogues_heldout.jsonl"  # a second held-out set, written blind
DIALOGUE_KINDS = {"followup", "new"}
LEGACY = HERE / "queries.jsonl"

ANSWERABLE_KINDS = {
    "fact", "why", "how", "keyword", "english", "mixed", "typo",  # the original set
    "colloquial", "long", "quoted", "traditional",  # added with the dev/test split
}  # fmt: skip
UNANSWERABLE_KINDS = {"unanswerable", "near_topic"}
LANGS = {"zh", "en", "mixed"}
MIN_TEST = {"unanswerable": 30, "near_topic": 15, "english": 20}

sys.path.insert(0, str(ROOT))


def normalize(text: str) -> str:
    """NFKC, whitespace removed, lower case: the same key as qa.split.normalize."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def language(query: str) -> str:
    """Language of a query: "en" without any CJK character, "mixed" with CJK and a Latin word, else "zh"."""
    cjk = re.search(r"[\u3400-\u9fff\uf900-\ufaff]", query)
    latin = re.search(r"[A-Za-z]{2,}", query)
    if not cjk:
        return "en"
    return "mixed" if latin else "zh"


# ---------------------------------------------------------------- corpus


class Corpus:
    """Normalized documents, sentences and (if qa is importable) passages of the seeds."""

    def __init__(self, seeds: Path = SEEDS) -> None:
        self.passages: list[str] | None = None
        try:
            from qa.documents import read_documents
            from qa.split import collapse_duplicates, split_document, split_sentences
        except ImportError:
            texts = [_fallback_text(p) for p in sorted(seeds.iterdir()) if p.is_file()]
            paragraphs = [line for t in texts for line in t.splitlines() if line.strip()]
            sentences = [s for para in paragraphs for s in _fallback_sentences(para)]
        else:
            docs = read_documents(seeds)
            texts = [d.text for d in docs]
            sentences = []
            for d in docs:
                for start, end in d.paragraphs:
                    para = d.text[start:end]
                    sentences.extend(para[s:e] for s, e in split_sentences(para))
            passages = collapse_duplicates([p for d in docs for p in split_document(d)])
            self.passages = [normalize(p.text) for p in passages]
        self.documents = [normalize(t) for t in texts]
        # Sentences in reading order; `flat` is their concatenation, to place an answer that
        # crosses a sentence end. A sentence is named by its normalized text.
        self.sentences = [s for s in (normalize(x) for x in sentences) if s]
        self.starts: list[int] = []
        pos = 0
        for s in self.sentences:
            self.starts.append(pos)
            pos += len(s)
        self.flat = "".join(self.sentences)

    def in_documents(self, answer: str) -> bool:
        a = normalize(answer)
        return any(a in d for d in self.documents)

    def in_one_passage(self, answer: str) -> bool | None:
        if self.passages is None:
            return None
        a = normalize(answer)
        return any(a in p for p in self.passages)

    def source_sentences(self, answer: str) -> set[str]:
        """The normalized sentences an answer occurs in (all its occurrences)."""
        a = normalize(answer)
        found: set[str] = set()
        if not a:
            return found
        for m in re.finditer(re.escape(a), self.flat):
            i = _bisect_right(self.starts, m.start()) - 1
            while i < len(self.sentences) and self.starts[i] < m.end():
                found.add(self.sentences[i])
                i += 1
        return found


def _bisect_right(xs: list[int], x: int) -> int:
    lo, hi = 0, len(xs)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < xs[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _fallback_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    text = re.sub(r"\A\s*---\s*\n.*?\n---\s*\n", "", text, flags=re.S)  # YAML front matter
    text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S | re.I)
    text = re.sub(r"<(?:br|p|div|li|h\d)\b[^>]*>", "\n", text, flags=re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _fallback_sentences(text: str) -> list[str]:
    """Sentences as qa.split cuts them (the same pattern)."""
    return re.findall(r"[^。！？；!?…;]*?(?:[。！？；!?;]+|…+|\.(?=\s)|$)[”’」』\"')）】]*", text)


# ---------------------------------------------------------------- grouping


def link_groups(rows: list[dict], corpus: Corpus) -> list[list[str]]:
    """Connected components of questions linked by a shared source sentence or by one answer
    containing another (normalized). Unanswerable questions are linked only by their "group"."""
    parent = {r["id"]: r["id"] for r in rows}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    by_sentence: dict[str, list[str]] = defaultdict(list)
    answers: list[tuple[str, str]] = []
    for r in rows:
        for a in r["answers"]:
            answers.append((r["id"], normalize(a)))
            for s in corpus.source_sentences(a):
                by_sentence[s].append(r["id"])
    for ids in by_sentence.values():
        for other in ids[1:]:
            union(ids[0], other)
    for i, (qa_id, a) in enumerate(answers):
        for qb_id, b in answers[i + 1 :]:
            if qa_id != qb_id and (a in b or b in a):
                union(qa_id, qb_id)
    by_group: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if not r["answers"] and r.get("group"):
            by_group[r["group"]].append(r["id"])
    for ids in by_group.values():
        for other in ids[1:]:
            union(ids[0], other)
    components: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        components[root(r["id"])].append(r["id"])
    return list(components.values())


# ---------------------------------------------------------------- checks


def read_jsonl(path: Path, problems: list[str]) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}:{lineno}: not JSON ({exc.msg})")
            continue
        if not isinstance(d, dict):
            problems.append(f"{path.name}:{lineno}: not a JSON object")
            continue
        d["_where"] = f"{path.name}:{lineno}"
        rows.append(d)
    return rows


def check_answers(rows: Iterable[dict], corpus: Corpus, problems: list[str], key: str = "answers") -> None:
    for r in rows:
        for a in r.get(key, []):
            if not isinstance(a, str) or not normalize(a):
                problems.append(f"{r['_where']} {r.get('id')}: empty or non-string answer {a!r}")
            elif not corpus.in_documents(a):
                problems.append(f"{r['_where']} {r.get('id')}: answer not in the seeds: {a!r}")
            elif corpus.in_one_passage(a) is False:
                problems.append(f"{r['_where']} {r.get('id')}: answer crosses a passage boundary: {a!r}")


def check_rows(rows: list[dict], problems: list[str]) -> None:
    for r in rows:
        where = f"{r['_where']} {r.get('id')}"
        for field in ("id", "query", "kind", "group", "lang"):
            if not isinstance(r.get(field), str) or not r[field].strip():
                problems.append(f"{where}: missing or empty {field!r}")
        if not isinstance(r.get("answers"), list):
            problems.append(f"{where}: 'answers' must be a list")
            r["answers"] = []
        kind = r.get("kind")
        if kind in UNANSWERABLE_KINDS and r["answers"]:
            problems.append(f"{where}: kind {kind} must have no answers")
        elif kind in ANSWERABLE_KINDS and not r["answers"]:
            problems.append(f"{where}: kind {kind} needs answers (use 'unanswerable' or 'near_topic')")
        elif kind not in ANSWERABLE_KINDS | UNANSWERABLE_KINDS:
            problems.append(f"{where}: unknown kind {kind!r}")
        if r.get("lang") not in LANGS:
            problems.append(f"{where}: lang must be one of {sorted(LANGS)}")
        elif isinstance(r.get("query"), str) and r["lang"] != language(r["query"]):
            problems.append(f"{where}: lang {r['lang']!r} but the query reads as {language(r['query'])!r}")


def check_dialogues(rows: list[dict], problems: list[str]) -> None:
    for r in rows:
        where = f"{r['_where']} {r.get('id')}"
        for field in ("id", "context", "query", "full", "kind"):
            if not isinstance(r.get(field), str) or not r[field].strip():
                problems.append(f"{where}: missing or empty {field!r}")
        if not isinstance(r.get("answers"), list) or not r["answers"]:
            problems.append(f"{where}: a dialogue needs answers")
            r["answers"] = []
        if r.get("kind") not in DIALOGUE_KINDS:
            problems.append(f"{where}: kind must be one of {sorted(DIALOGUE_KINDS)}")
        if not isinstance(r.get("context_answers", []), list):
            problems.append(f"{where}: 'context_answers' must be a list")
            r["context_answers"] = []


def table(sets: dict[str, list[dict]]) -> str:
    kinds = sorted({r["kind"] for rows in sets.values() for r in rows}, key=lambda k: (k in UNANSWERABLE_KINDS, k))
    names = list(sets)
    lines = [f"{'kind':<14}" + "".join(f"{n:>8}" for n in names) + f"{'all':>8}"]
    lines.append("-" * len(lines[0]))

    def row(label: str, pred) -> str:
        counts = [sum(1 for r in sets[n] if pred(r)) for n in names]
        return f"{label:<14}" + "".join(f"{c:>8}" for c in counts) + f"{sum(counts):>8}"

    for k in kinds:
        lines.append(row(k, lambda r, k=k: r["kind"] == k))
    lines.append("-" * len(lines[0]))
    lines.append(row("answerable", lambda r: bool(r["answers"])))
    lines.append(row("unanswerable*", lambda r: not r["answers"]))
    for lang in ("zh", "en", "mixed"):
        lines.append(row(f"lang {lang}", lambda r, lang=lang: r.get("lang") == lang))
    lines.append(row("total", lambda r: True))
    lines.append(f"{'groups':<14}" + "".join(f"{len({r['group'] for r in sets[n]}):>8}" for n in names))
    lines.append("* unanswerable = kinds unanswerable + near_topic ('answers': [])")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print only problems and the verdict")
    args = parser.parse_args(argv)

    problems: list[str] = []
    corpus = Corpus()
    sets = {name: read_jsonl(path, problems) for name, path in FILES.items()}
    dialogue_files = (DIALOGUES, DIALOGUES_TEST, DIALOGUES_HELDOUT)
    dialogues = [r for path in dialogue_files if path.exists() for r in read_jsonl(path, problems)]
    rows = [r for rs in sets.values() for r in rs]

    check_rows(rows, problems)
    check_answers(rows, corpus, problems)
    check_dialogues(dialogues, problems)
    check_answers(dialogues, corpus, problems)
    check_answers(dialogues, corpus, problems, key="context_answers")

    ids = Counter(r.get("id") for r in rows + dialogues)
    problems += [f"duplicate id {i!r} ({n} times)" for i, n in ids.items() if n > 1]

    if LEGACY.exists():
        by_id = {r.get("id"): r for r in rows}
        for r in read_jsonl(LEGACY, problems):
            mine = by_id.get(r.get("id"))
            if mine is None:
                problems.append(f"{r['_where']}: {r.get('id')} is in neither dev nor test")
            elif (mine["query"], mine["answers"]) != (r.get("query"), r.get("answers")):
                problems.append(f"{r['_where']}: {r.get('id')} differs from its copy in {mine['_where']}")

    side = {r["id"]: name for name, rs in sets.items() for r in rs}
    group_sides: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        group_sides[str(r.get("group"))].add(side[r["id"]])
    problems += [f"group {g!r} is in both files" for g, s in group_sides.items() if len(s) > 1]
    group_of = {r["id"]: r.get("group") for r in rows}
    for component in link_groups(rows, corpus):
        if len({group_of[i] for i in component}) > 1:
            problems.append(f"linked questions carry different groups: {sorted(component)}")

    test = sets["test"]
    missing = {r["kind"] for r in rows} - {r["kind"] for r in test}
    problems += [f"kind {k!r} has no question in test" for k in sorted(missing)]
    missing = {r["kind"] for r in rows} - {r["kind"] for r in sets["dev"]}
    problems += [f"kind {k!r} has no question in dev" for k in sorted(missing)]
    counts = {
        "unanswerable": sum(1 for r in test if not r["answers"]),
        "near_topic": sum(1 for r in test if r["kind"] == "near_topic"),
        "english": sum(1 for r in test if r.get("lang") == "en"),
    }
    problems += [f"test has {counts[k]} {k} questions, needs >= {n}" for k, n in MIN_TEST.items() if counts[k] < n]

    if not args.quiet:
        print(table(sets))
        sizes = Counter(len(c) for c in link_groups(rows, corpus))
        print("linked components by size: " + ", ".join(f"{n}x{k}" for k, n in sorted(sizes.items())))
        print(f"dialogues: {len(dialogues)}")
        if corpus.passages is None:
            print("note: qa not importable; passage boundaries were not checked")
    for p in problems:
        print("PROBLEM:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
