"""Stage 3a: jieba tokenization and a BM25 index (bm25s), built once and saved as plain arrays."""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import opencc

from qa.cache import cache_root

with warnings.catch_warnings():
    # jieba imports pkg_resources when setuptools has it (< 81, pinned by the [milvus] extra),
    # which warns on every run.
    warnings.simplefilter("ignore", UserWarning)
    import jieba

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import

BM25_PARAMS = {"k1": 1.2, "b": 0.75, "method": "lucene"}

# Function words and question words: they carry no topic, and in a question they would
# only pull in passages that happen to use the same particles.
STOPWORDS = frozenset(
    [
        "的",
        "地",
        "得",
        "了",
        "着",
        "过",
        "是",
        "在",
        "和",
        "与",
        "及",
        "或",
        "而",
        "并",
        "也",
        "都",
        "就",
        "又",
        "还",
        "把",
        "被",
        "让",
        "给",
        "对",
        "从",
        "向",
        "于",
        "以",
        "之",
        "其",
        "这",
        "那",
        "这个",
        "那个",
        "这些",
        "那些",
        "这样",
        "那样",
        "这里",
        "那里",
        "此",
        "该",
        "各",
        "每",
        "某",
        "个",
        "之一",
        "等",
        "等等",
        "们",
        "我",
        "你",
        "他",
        "她",
        "它",
        "我们",
        "你们",
        "他们",
        "咱们",
        "自己",
        "吗",
        "呢",
        "吧",
        "啊",
        "呀",
        "哦",
        "么",
        "嘛",
        "啦",
        "什么",
        "怎么",
        "怎样",
        "怎么样",
        "如何",
        "为什么",
        "为何",
        "哪",
        "哪些",
        "哪个",
        "哪里",
        "哪儿",
        "几",
        "多少",
        "多久",
        "谁",
        "何",
        "何时",
        "什么时候",
        "是否",
        "是不是",
        "有没有",
        "能否",
        "可以",
        "能",
        "会",
        "要",
        "请问",
        "请",
        "一下",
        "一个",
        "有",
        "没有",
        "没",
        "不",
        "很",
        "吗？",
        "啥",
        "咋",
        "嗯",
        "呢？",
        "所",
        "所以",
        "因为",
        "如果",
        "但",
        "但是",
        "然后",
        "以及",
        "关于",
        "通过",
        "进行",
        "对于",
        "由于",
        "还是",
        "或者",
        "及其",
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "many",
        "much",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "as",
        "into",
        "about",
        "than",
        "then",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
    ]
)

_WORD = re.compile(r"\w", re.UNICODE)
_jieba_lock = threading.Lock()
_jieba: jieba.Tokenizer | None = None


def _tokenizer() -> jieba.Tokenizer:
    """One jieba tokenizer per process, initialized once, its cache in a private folder."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                tk = jieba.Tokenizer()
                private = cache_root() / "jieba"
                private.mkdir(parents=True, exist_ok=True, mode=0o700)
                tk.tmp_dir = str(private)
                jieba.setLogLevel(logging.WARNING)
                tk.initialize()
                _jieba = tk
    return _jieba


def warm_up() -> None:
    """Load jieba's dictionary and its list of nouns now rather than on the first question."""
    _noun_words()


_t2s = opencc.OpenCC("t2s")


_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """`text` with each lone surrogate (an undecodable byte of a command line argument) replaced
    by U+FFFD, so that it can be encoded as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def fold(text: str) -> str:
    """The form keywords are compared in: NFKC, lower case, traditional characters as simplified."""
    return str(_t2s.convert(replace_surrogates(unicodedata.normalize("NFKC", text).lower())))


def tokenize(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """jieba search-mode tokens of `fold(text)`, punctuation and stopwords dropped."""
    norm = fold(text)
    tokens = []
    for tok in _tokenizer().cut_for_search(norm):
        tok = tok.strip()
        if not tok or not _WORD.search(tok):
            continue
        if not keep_stopwords and tok in STOPWORDS:
            continue
        tokens.append(tok)
    return tokens


_nouns: frozenset[str] | None = None


def _noun_words() -> frozenset[str]:
    """The words of two characters or more that jieba's dictionary tags as nouns (n, nr, ns, nt,
    nz…), read once from the dictionary file: about 230k words, 31 MB, where jieba's own
    part-of-speech tagger would hold every word's tag (97 MB)."""
    global _nouns
    if _nouns is None:
        tk = _tokenizer()
        with _jieba_lock:
            if _nouns is None:
                with tk.get_dict_file() as f:
                    rows = (line.decode("utf-8").split() for line in f)
                    _nouns = frozenset(r[0] for r in rows if len(r) == 3 and r[2].startswith("n") and len(r[0]) >= 2)
    return _nouns


def leading_noun(text: str) -> str | None:
    """The word `text` begins with (in `fold`ed form), if jieba's dictionary has it as a noun of
    two characters or more: 药剂师 in 药剂师？, None in 之内完成流调 or 参加的."""
    for word in _tokenizer().cut(fold(text)):
        if word.strip():
            return word if word in _noun_words() else None
    return None


_CJK_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]{2,}")
_LATIN_WORD = re.compile(r"[a-z]+")


def pinyin_terms(tokens: list[str]) -> list[str]:
    """Toneless pinyin of the multi-character Chinese words among `tokens`: 钟南山 -> zhongnanshan.

    They let the Latin words of an English question (names, places: "Zhong Nanshan",
    "Tongji", "Wuhan") meet the Chinese text they stand for."""
    return [_pinyin(t) for t in tokens if _CJK_WORD.fullmatch(t)]


@functools.lru_cache(maxsize=1 << 16)
def _pinyin(word: str) -> str:
    # Words repeat: caching them halves the time of indexing the seeds (pypinyin is the slow part).
    from pypinyin import lazy_pinyin  # only indexing needs it (its dictionaries take a while to import)

    return "".join(lazy_pinyin(word))


def latin_terms(query: str) -> list[str]:
    """The Latin words of a query, alone and run together in twos and threes, stopwords dropped."""
    words = _LATIN_WORD.findall(fold(query))
    runs = [*words, *("".join(words[i : i + n]) for n in (2, 3) for i in range(len(words) - n + 1))]
    return [w for w in runs if len(w) >= 4 and w not in STOPWORDS]


def _bm25(corpus: list[list[str]]) -> bm25s.BM25:
    bm25 = bm25s.BM25(**BM25_PARAMS)  # type: ignore[arg-type]
    bm25.index([tokens or ["\u2205"] for tokens in corpus], show_progress=False)
    return bm25


def _bm25_scores(bm25: bm25s.BM25, tokens: list[str]) -> np.ndarray:
    ids = [bm25.vocab_dict[t] for t in tokens if t in bm25.vocab_dict]
    if not ids:
        return np.zeros(bm25.scores["num_docs"], dtype=np.float32)
    return np.asarray(bm25.get_scores_from_ids(ids), dtype=np.float32)


def _postings(bm25: bm25s.BM25, tokens: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(document positions, BM25 contributions) of each query token the index knows; a token
    given twice counts twice, as in bm25s. bm25s keeps one column per term of a CSC matrix
    whose row indices ascend within each column (scipy's canonical form, and the numpy
    builder's counting sort over documents in order): `_score_at` relies on that."""
    s = bm25.scores
    indptr, indices, data = s["indptr"], s["indices"], s["data"]
    out = []
    for t in tokens:
        tid = bm25.vocab_dict.get(t)
        if tid is not None:
            start, end = int(indptr[tid]), int(indptr[tid + 1])
            out.append((indices[start:end], data[start:end]))
    return out


def _score_at(postings: list[tuple[np.ndarray, np.ndarray]], positions: np.ndarray) -> np.ndarray:
    """The summed BM25 contributions at these document positions: a binary search in each
    term's postings, so the cost grows with the candidates, not with the corpus."""
    out = np.zeros(len(positions), dtype=np.float64)
    for docs, scores in postings:
        if not len(docs):
            continue
        j = np.minimum(np.searchsorted(docs, positions), len(docs) - 1)
        found = docs[j] == positions
        out[found] += scores[j[found]]
    return out.astype(np.float32)


# Below this share of the corpus among the query's postings, the scores are summed over the
# matching documents only (sorting the postings); above it, over a corpus-long array.
SPARSE_SHARE = 0.125


def _top_k(postings: list[tuple[np.ndarray, np.ndarray]], num_docs: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best documents by summed contribution, best first, ties by position; only
    documents that match at all. argpartition selects them: nothing sorts the corpus."""
    if not postings or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    docs = np.concatenate([d for d, _ in postings])
    contributions = np.concatenate([s for _, s in postings])
    if len(docs) < SPARSE_SHARE * num_docs:
        matched, where = np.unique(docs, return_inverse=True)
        totals = np.bincount(where, weights=contributions).astype(np.float32)
    else:
        matched = None
        totals = np.bincount(docs, weights=contributions, minlength=num_docs).astype(np.float32)
    k = min(k, len(totals))
    top = np.argpartition(-totals, k - 1)[:k]
    top = top[np.lexsort((top, -totals[top]))]  # `matched` ascends, so this also orders ties by position
    top = top[totals[top] > 0]
    positions = matched[top] if matched is not None else top
    return positions.astype(np.int64), totals[top]


@dataclass
class LexicalIndex:
    """BM25 over the passages' words, and over the pinyin of their Chinese words, in the
    order of the index's passage list."""

    bm25: bm25s.BM25
    pinyin: bm25s.BM25

    @classmethod
    def build(cls, texts: list[str]) -> LexicalIndex:
        return cls.from_tokens([tokenize(t) for t in texts])

    @classmethod
    def from_tokens(cls, corpus: list[list[str]], pinyin: list[list[str]] | None = None) -> LexicalIndex:
        """The index of passages already tokenized (by `tokenize`; `pinyin`: by `pinyin_terms`)."""
        if pinyin is None:
            pinyin = [pinyin_terms(tokens) for tokens in corpus]
        return cls(_bm25(corpus), _bm25(pinyin))

    def save(self, folder: Path) -> None:
        self.bm25.save(str(folder), allow_pickle=False, show_progress=False)
        self.pinyin.save(str(folder / "pinyin"), allow_pickle=False, show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        def one(path: Path) -> bm25s.BM25:  # the postings memory-mapped: a query reads only its terms'
            return bm25s.BM25.load(str(path), allow_pickle=False, show_progress=False, mmap=True)

        return cls(one(folder), one(folder / "pinyin"))

    def scores(self, tokens: list[str], latin: list[str] | None = None) -> np.ndarray:
        """BM25 score of every passage: the query tokens against the words, plus the query's
        Latin words (see `latin_terms`) against the pinyin. Zeros when nothing is known."""
        scores = _bm25_scores(self.bm25, tokens)
        if latin:
            scores = scores + _bm25_scores(self.pinyin, latin)
        return scores

    @property
    def num_docs(self) -> int:
        return int(self.bm25.scores["num_docs"])

    def _postings(self, tokens: list[str], latin: list[str] | None) -> list[tuple[np.ndarray, np.ndarray]]:
        return _postings(self.bm25, tokens) + (_postings(self.pinyin, latin) if latin else [])

    def top_k(self, tokens: list[str], latin: list[str] | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the `k` best passages (the same score as `scores`), best
        first, ties by position; passages scoring 0 are left out.

        bm25s's own `retrieve` selects the top k of one BM25 index; the score here is the sum
        of two (words and pinyin), so the top k is selected from the query's postings: their
        contributions summed (over the matching passages alone when they are few) and the
        best k picked by argpartition."""
        return _top_k(self._postings(tokens, latin), self.num_docs, k)

    def scores_at(self, tokens: list[str], latin: list[str] | None, positions: np.ndarray) -> np.ndarray:
        """The same score for the passages at these positions only."""
        return _score_at(self._postings(tokens, latin), np.asarray(positions, dtype=np.int64))

    def idf(self, tokens: list[str]) -> np.ndarray:
        """Inverse document frequency of each token. A token the corpus never uses gets the
        highest possible value: a question about something absent is probably unanswerable."""
        n = self.bm25.scores["num_docs"]
        indptr = self.bm25.scores["indptr"]
        out = np.full(len(tokens), np.log(1 + (n + 0.5) / 0.5), dtype=np.float32)
        for i, t in enumerate(tokens):
            tid = self.bm25.vocab_dict.get(t)
            if tid is not None:
                df = int(indptr[tid + 1] - indptr[tid])
                out[i] = np.log(1 + (n - df + 0.5) / (df + 0.5))
        return out
