"""Late chunking: can sentence vectors be pooled from their passage's token states instead of
embedding every sentence again? (issue 16, indexing at peer speed)

    python bench/late_chunking.py [--docs seeds] [--queries tests/data/dev.jsonl]

Builds two seed indexes with the same torch model (sentence-transformers, float32):
- "separate": today's recipe, every unit (the passage and each of its sentences) embedded alone;
- "late": one encoder pass per passage; each sentence's vector is the mean of the passage's
  token states inside the sentence, normalized (the passage's own vector stays the model's).
Prints the build time of each (embedding only, units per second) and hit@5 / MRR@10 on the
development questions. Choose on dev only. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class LateChunkEncoder:
    """A torch encoder whose sentence vectors come from their passage's token states: it is told
    the passages first (`prepare`), then answers `encode_passages` for their units from a table."""

    def __init__(self, base: Any) -> None:
        self.base = base  # qa.embed.SentenceTransformerEncoder
        self.name, self.backend, self.calls = base.name, base.backend, 0
        self.table: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    @property
    def dimension(self) -> int:
        return int(self.base.dimension)

    @property
    def source(self) -> str:
        return f"{self.base.source}, late chunking"

    def prepare(self, passages: list[Any]) -> None:
        import torch

        from qa.split import sentence_units

        model = self.base.model
        prompt = model.prompts.get("passage", "passage: ")
        t = time.perf_counter()
        texts = [p.text for p in passages]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), 16):
            chunk = [passages[i] for i in order[start : start + 16]]
            batch = model.tokenizer(
                [prompt + p.text for p in chunk], return_offsets_mapping=True, padding=True, truncation=True,
                max_length=512, return_tensors="pt",
            )  # fmt: skip
            offsets = batch.pop("offset_mapping")
            with torch.inference_mode():
                states = model[0].auto_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            whole = (states * mask).sum(1) / mask.sum(1)
            for j, p in enumerate(chunk):
                self.table.setdefault(p.text, _unit(whole[j].numpy()))
                for u in sentence_units(p)[1:]:
                    lo, hi = u.start + len(prompt), u.end + len(prompt)
                    inside = [(s >= lo and e <= hi and e > s) for s, e in offsets[j].tolist()]
                    idx = [k for k, ok in enumerate(inside) if ok]
                    if idx:
                        self.table.setdefault(p.text[u.start : u.end], _unit(states[j, idx].mean(0).numpy()))
        self.seconds += time.perf_counter() - t

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        missing = [t for t in texts if t not in self.table]
        if missing:  # the probe text, or a unit not prepared
            t = time.perf_counter()
            for text, vector in zip(missing, self.base.encode_passages(missing), strict=True):
                self.table[text] = vector
            self.seconds += time.perf_counter() - t
        self.calls += len(texts)
        return np.stack([self.table[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, 384), np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.base.encode_query(text)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / (np.linalg.norm(v) + 1e-12)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=ROOT / "seeds")
    parser.add_argument("--queries", type=Path, default=ROOT / "tests" / "data" / "dev.jsonl")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from qa.documents import read_documents
    from qa.embed import SentenceTransformerEncoder
    from qa.evaluate import evaluate, load_queries
    from qa.index import build_index
    from qa.search import Retriever
    from qa.split import collapse_duplicates, split_document

    queries = load_queries(args.queries)
    base = SentenceTransformerEncoder(backend="torch")
    base.warm_up()
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in ("separate", "late"):
            encoder: Any = base
            if recipe == "late":
                late = LateChunkEncoder(base)
                docs = read_documents(args.docs)
                late.prepare(collapse_duplicates([p for d in docs for p in split_document(d)], 0.9))
                encoder = late
            t = time.perf_counter()
            report = build_index(args.docs, Path(tmp) / recipe, encoder=encoder, force=True)
            build = time.perf_counter() - t + (encoder.seconds if recipe == "late" else 0.0)
            base._cache.clear()
            result = evaluate(Retriever.load(Path(tmp) / recipe, encoder=base), queries, k=10)
            m = result.metrics
            print(f"{recipe:9s} build {build:6.1f} s ({report.embedded} units)  "
                  f"hit@5 {m.get('hit@5', float('nan')):.4f}  mrr@10 {m.get('mrr@10', m.get('mrr', float('nan'))):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
