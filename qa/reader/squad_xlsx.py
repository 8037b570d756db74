"""Rebuild SQuAD 2.0 dev in SQuAD JSON from pragyakatyayan/SQuAD_v2.0_Dataset's xlsx (one row per question).

    python -m qa.reader.squad_xlsx squad_2.0_dev_complete_11873.xlsx ~/.cache/qa/reader/raw/squad2_dev.json

No stored public repository holds the full official `dev-v2.0.json` (docs/reader.md says which were
tried); this spreadsheet copy has all 11,873 questions, and the JSON it gives matches the CS224n half
of the official file on every question it holds.

Columns: title, context, question, ids, answers, answer_start, plausible_answers,
plausible_answers_start, is_impossible. Contexts, answers and starts are Python list literals; the
xlsx split the few contexts that hold a line break at it, so the pieces are joined with "\n" (every
answer offset then points at its text). Standard library only.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from typing import Any

M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def rows(path: str) -> Iterator[dict[str, str]]:
    z = zipfile.ZipFile(path)
    shared = [
        "".join(t.text or "" for t in si.iter(M + "t"))
        for si in ET.fromstring(z.read("xl/sharedStrings.xml")).findall(M + "si")
    ]
    for row in ET.fromstring(z.read("xl/worksheets/sheet1.xml")).iter(M + "row"):
        cells: dict[str, str] = {}
        for c in row.findall(M + "c"):
            v = c.find(M + "v")
            value = (v.text or "") if v is not None else ""
            col = re.sub(r"[0-9]+$", "", c.get("r", ""))  # "B12" -> "B"
            if c.get("t") == "s":
                cells[col] = shared[int(value)]
            elif c.get("t") == "inlineStr":
                cells[col] = "".join(t.text or "" for t in c.iter(M + "t"))
            else:
                cells[col] = value
        yield cells


def main(src: str, dst: str) -> None:
    data: list[dict[str, Any]] = []
    titles: dict[str, dict[str, Any]] = {}
    bad = 0
    for r in list(rows(src))[1:]:
        context = "\n".join(ast.literal_eval(r["B"]))
        impossible = r["I"] == "1"
        qa = {"question": r["C"], "id": r["D"], "answers": [], "is_impossible": impossible}
        if impossible:
            if r["G"] not in ("No answer", "", "--"):
                qa["plausible_answers"] = [{"text": r["G"], "answer_start": int(r["H"])}]
        else:
            if r["E"].startswith("["):
                texts, starts = ast.literal_eval(r["E"]), ast.literal_eval(r["F"])
            else:  # one row holds its single answer as a bare string
                texts, starts = [r["E"]], [int(r["F"])]
            qa["answers"] = [{"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)]
            bad += any(context[s : s + len(t)] != t for t, s in zip(texts, starts, strict=True))
        if r["A"] not in titles:
            titles[r["A"]] = {"title": r["A"], "paragraphs": []}
            data.append(titles[r["A"]])
        paragraphs = titles[r["A"]]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != context:
            paragraphs.append({"qas": [], "context": context})
        paragraphs[-1]["qas"].append(qa)
    print(f"answers whose offset misses their text: {bad}", file=sys.stderr)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump({"version": "v2.0", "data": data}, f, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
