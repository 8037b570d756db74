"""Train the reader's top layers and heads, validate them, export the best as a delta.

    python -m qa.reader.train --data ~/.cache/qa/reader/data --out qa/reader/weights \\
        [--frozen-layers 8] [--epochs 2] [--lr 2e-4] [--batch 16] [--seed 13] [--limit N] \\
        [--threads 2] [--eval-every STEPS] [--resume] [--device cpu|cuda]
    python -m qa.reader.train evaluate --weights qa/reader/weights --data ~/.cache/qa/reader/data/val.jsonl

The data folder holds train.jsonl and val.jsonl as `qa.reader.data` writes them. The states at
the input of the first trained layer are computed once per example and kept in
<cache>/reader/states (StateCache); a step then runs only the trained layers. The order of the
examples is a fixed function of the seed and the epoch, and a checkpoint (trained parameters,
AdamW moments, step, RNG state: safetensors + JSON, never pickle) is written every few minutes
under <cache>/reader/ckpt/<run>/, so `--resume` continues the same run exactly.

Validation: answerability AUROC; exact match and character F1 (the CMRC 2018 convention:
NFKC, lowercase, no punctuation or spaces, F1 over characters) of the best span on the
answerable examples; per source and per negative kind. The checkpoint with the best AUROC + F1
is exported with `save_delta` into --out.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from qa.cache import cache_root, write_atomic
from qa.errors import ModelError, QAError
from qa.index import sha256_file
from qa.reader.model import (
    MAX_LENGTH,
    MAX_QUESTION_TOKENS,
    ReaderNet,
    ReaderTokenizer,
    StateCache,
    Window,
    load_delta,
    read_card,
    read_windows,
    reader_loss,
    save_delta,
)

__all__ = [
    "Feature",
    "auroc",
    "char_f1",
    "evaluate",
    "featurize",
    "load_examples",
    "main",
    "metrics",
    "train",
    "training_step",
]

CKPT_FORMAT = 1
POSITIVE = "none"  # the `negative` kind of an answerable example


class Example(Protocol):
    """What the reader needs of a line of train.jsonl (qa.reader.data.ReaderExample)."""

    @property
    def id(self) -> str: ...

    @property
    def question(self) -> str: ...

    @property
    def context(self) -> str: ...

    @property
    def answerable(self) -> bool: ...

    @property
    def answer_text(self) -> str: ...

    @property
    def answer_start(self) -> int: ...

    @property
    def source(self) -> str: ...

    @property
    def negative(self) -> str: ...


# --------------------------------------------------------------------------- data


def load_examples(path: Path, *, limit: int | None = None) -> list[Any]:
    """The examples of a jsonl file in the reader's data format, checked; with `limit`, a
    fixed sample (the first by sha256 of the id), kept in file order."""
    from dataclasses import fields

    from qa.reader.data import ReaderExample

    path = Path(path).expanduser()
    names = [f.name for f in fields(ReaderExample)]
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QAError(
            f"Cannot read {path} ({exc}); write it with: python -m qa.reader.data --out {path.parent}"
        ) from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            ex = ReaderExample(**{n: raw[n] for n in names})
        except (ValueError, KeyError, TypeError) as exc:
            raise QAError(
                f"{path}:{number} is not a reader example ({exc}); regenerate it with qa.reader.data"
            ) from exc
        if ex.answerable and ex.context[ex.answer_start : ex.answer_start + len(ex.answer_text)] != ex.answer_text:
            raise QAError(f"{path}:{number}: answer_text is not at answer_start in the context; regenerate the data")
        out.append(ex)
    if limit is not None and limit < len(out):
        keep = set(sorted(range(len(out)), key=lambda i: hashlib.sha256(out[i].id.encode()).hexdigest())[:limit])
        out = [e for i, e in enumerate(out) if i in keep]
    return out


@dataclass(frozen=True, slots=True)
class Feature:
    """One window of one example, with its labels (positions in the input; 0 = <s> = no answer)."""

    example: int
    window: Window
    start: int
    end: int
    answerable: bool


def answer_chars(ex: Example) -> tuple[int, int]:
    """Characters [a, b) of the answer in the context, without surrounding whitespace."""
    a, b = ex.answer_start, ex.answer_start + len(ex.answer_text)
    while a < b and ex.context[a].isspace():
        a += 1
    while b > a and ex.context[b - 1].isspace():
        b -= 1
    return a, b


def featurize(tokenizer: ReaderTokenizer, examples: Sequence[Example], *, training: bool) -> list[Feature]:
    """Training: one window per example, picked by a hash of its id among the windows that hold
    the answer (any window for an unanswerable example, so that where a window starts says
    nothing about the label); an answerable example that no window holds whole is dropped.
    Evaluation: every window of every example."""
    windows = tokenizer.encode([(e.question, e.context) for e in examples])
    out: list[Feature] = []
    for i, (ex, ws) in enumerate(zip(examples, windows, strict=True)):
        spans = [w.token_span(*answer_chars(ex)) if ex.answerable else None for w in ws]
        if not training:
            out.extend(Feature(i, w, *(s or (0, 0)), ex.answerable) for w, s in zip(ws, spans, strict=True))
            continue
        pick = int(hashlib.sha256(ex.id.encode()).hexdigest()[:8], 16)
        if not ex.answerable:
            out.append(Feature(i, ws[pick % len(ws)], 0, 0, False))
            continue
        holding = [(w, s) for w, s in zip(ws, spans, strict=True) if s is not None]
        if holding:
            w, (first, last) = holding[pick % len(holding)]
            out.append(Feature(i, w, first, last, True))
    return out


# --------------------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """CMRC 2018's normalization: NFKC, lowercase, no punctuation, no whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))


def char_f1(prediction: str, gold: str) -> float:
    """F1 over the characters of the normalized strings (a multiset overlap)."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None without both classes."""
    n_pos = sum(1 for x in labels if x)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@dataclass(frozen=True, slots=True)
class Prediction:
    answerable: float
    text: str
    null_score_diff: float


def _group(examples: Sequence[Example], predictions: Sequence[Prediction], idx: Iterable[int]) -> dict[str, Any]:
    idx = list(idx)
    positives = [i for i in idx if examples[i].answerable]
    f1 = [char_f1(predictions[i].text, examples[i].answer_text) for i in positives]
    em = [float(normalize_answer(predictions[i].text) == normalize_answer(examples[i].answer_text)) for i in positives]
    auc = auroc([predictions[i].answerable for i in idx], [examples[i].answerable for i in idx])
    auc_null = auroc([-predictions[i].null_score_diff for i in idx], [examples[i].answerable for i in idx])
    correct = [(predictions[i].answerable >= 0.5) == examples[i].answerable for i in idx]
    return {
        "n": len(idx),
        "answerable": len(positives),
        "auroc": None if auc is None else round(auc, 4),
        "auroc_null": None if auc_null is None else round(auc_null, 4),  # the span heads' null score
        "accuracy@0.5": round(sum(correct) / len(idx), 4) if idx else None,
        "em": round(sum(em) / len(em), 4) if em else None,
        "f1": round(sum(f1) / len(f1), 4) if f1 else None,
        "mean_p": round(sum(predictions[i].answerable for i in idx) / len(idx), 4) if idx else None,
    }


def metrics(examples: Sequence[Example], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Overall, per source, and per negative kind (that kind against all the answerable examples)."""
    everything = range(len(examples))
    by_source: dict[str, list[int]] = defaultdict(list)
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_source[ex.source].append(i)
        by_kind[ex.negative if not ex.answerable else POSITIVE].append(i)
    positives = by_kind.get(POSITIVE, [])
    return {
        "all": _group(examples, predictions, everything),
        "by_source": {s: _group(examples, predictions, idx) for s, idx in sorted(by_source.items())},
        "by_negative": {
            k: _group(examples, predictions, idx if k == POSITIVE else [*positives, *idx])
            for k, idx in sorted(by_kind.items())
        },
    }


def score_of(m: dict[str, Any]) -> float:
    """What picks the best checkpoint: AUROC + span F1."""
    return (m["all"]["auroc"] or 0.0) + (m["all"]["f1"] or 0.0)


def format_metrics(m: dict[str, Any]) -> str:
    def row(name: str, g: dict[str, Any]) -> str:
        def f(x: Any) -> str:
            return "   -  " if x is None else f"{x:6.3f}"

        return (
            f"  {name:<22} n={g['n']:<6} auroc {f(g['auroc'])}  null {f(g['auroc_null'])}  acc@0.5 {f(g['accuracy@0.5'])}  "
            f"em {f(g['em'])}  f1 {f(g['f1'])}  mean p {f(g['mean_p'])}"
        )

    lines = [row("all", m["all"]), " by source:"]
    lines += [row(k, g) for k, g in m["by_source"].items()]
    lines += [" by negative kind (with all answerable):"]
    lines += [row(k, g) for k, g in m["by_negative"].items()]
    return "\n".join(lines)


def predict(
    net: ReaderNet,
    tokenizer: ReaderTokenizer,
    examples: Sequence[Example],
    features: Sequence[Feature],
    *,
    cache: StateCache | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    max_answer_tokens: int = 40,
) -> list[Prediction]:
    """Per example, the window the reader is surest answers (as `Reader.read` does)."""
    best = read_windows(
        net,
        tokenizer,
        [(f.example, f.window) for f in features],
        len(examples),
        batch_size=batch_size,
        device=device,
        max_answer_tokens=max_answer_tokens,
        cache=cache,
    )
    predictions = []
    for ex, found in zip(examples, best, strict=True):
        if found is None:
            predictions.append(Prediction(0.0, "", 0.0))
            continue
        d, w = found
        text = "" if d.start < 0 else ex.context[slice(*w.char_span(d.start, d.end, ex.context))]
        predictions.append(Prediction(d.answerable, text, d.null_score_diff))
    return predictions


# --------------------------------------------------------------------------- training


def training_step(
    net: ReaderNet,
    optimizer: torch.optim.Optimizer,
    tokenizer: ReaderTokenizer,
    batch: Sequence[Feature],
    *,
    cache: StateCache | None = None,
    device: torch.device | str = "cpu",
    answerable_weight: float = 1.0,
    clip: float = 1.0,
) -> dict[str, float]:
    """One optimizer step on a batch; returns the loss parts (before the step)."""
    net.train(True)
    windows = [f.window for f in batch]
    ids, attention, passage = tokenizer.collate(windows, device)
    states = cache.load(windows, device) if cache is not None else net.lower(ids, attention)
    out = net.upper(states, attention)
    start = torch.tensor([f.start for f in batch], device=device)
    end = torch.tensor([f.end for f in batch], device=device)
    answerable = torch.tensor([f.answerable for f in batch], device=device)
    loss, parts = reader_loss(out, passage, start, end, answerable, answerable_weight=answerable_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], clip)
    optimizer.step()
    return parts


def make_optimizer(net: ReaderNet, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    decay = [p for p in net.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def lr_factor(step: int, total: int, warmup: float = 0.06) -> float:
    """Linear warm-up over the first `warmup` share of the steps, then linear decay to 0."""
    n_warm = max(1, int(total * warmup))
    if step < n_warm:
        return (step + 1) / n_warm
    return max(0.0, (total - step) / max(1, total - n_warm))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class Log:
    """Progress lines to stdout and to the run's train.log."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")


# --------------------------------------------------------------------------- checkpoints


def _write_checkpoint(run: Path, net: ReaderNet, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    """run/step-NNNNNNN/{state.safetensors,state.json} built in a temporary folder and renamed;
    then latest.json (tmp + os.replace) points at it; older ones are removed."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    params = dict(net.named_parameters())
    for name in net.delta_names():
        tensors[f"param.{name}"] = params[name].detach().to("cpu", torch.float32).contiguous()
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    names = {id(p): n for n, p in params.items()}
    opt_state: dict[str, Any] = {}
    for p, s in optimizer.state.items():
        key = names[id(p)]
        for k, v in s.items():
            if torch.is_tensor(v):
                tensors[f"opt.{key}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                opt_state[f"{key}.{k}"] = v
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    state = {**state, "format": CKPT_FORMAT, "optimizer_scalars": opt_state, "n_params": len(index)}
    name = f"step-{state['step']:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=run))
    try:
        save_file(tensors, str(tmp / "state.safetensors"))
        state["sha256"] = sha256_file(tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        target = run / name
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(run / "latest.json", (json.dumps({"checkpoint": name, "step": state["step"]}) + "\n").encode())
    for old in run.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _read_checkpoint(run: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    from safetensors.torch import load_file

    try:
        name = json.loads((run / "latest.json").read_text(encoding="utf-8"))["checkpoint"]
    except (OSError, ValueError, KeyError):
        return None
    folder = run / name
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if sha256_file(folder / "state.safetensors") != state["sha256"]:
            raise ValueError("checksum mismatch")
        return state, load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError, KeyError) as exc:
        raise QAError(
            f"The checkpoint {folder} is unreadable ({exc}); delete {run} and start again without --resume"
        ) from exc


def _restore(
    net: ReaderNet, optimizer: torch.optim.Optimizer, state: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name in net.delta_names():
            params[name].copy_(tensors[f"param.{name}"])
    for name in net.delta_names():
        p = params[name]
        s: dict[str, Any] = {}
        for k in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"opt.{name}.{k}")
            if t is not None:
                s[k] = t.to(p.device) if k != "step" else t
        for k, v in state["optimizer_scalars"].items():
            if k.startswith(name + "."):
                s[k[len(name) + 1 :]] = v
        if s:
            optimizer.state[p] = s
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


# --------------------------------------------------------------------------- the run


def _data_summary(data: Path, train_ex: Sequence[Example], val_ex: Sequence[Example]) -> dict[str, Any]:
    def counts(examples: Sequence[Example]) -> dict[str, Any]:
        return {
            "n": len(examples),
            "answerable": sum(1 for e in examples if e.answerable),
            "by_source": dict(sorted(Counter(e.source for e in examples).items())),
            "by_negative": dict(sorted(Counter(e.negative for e in examples).items())),
        }

    out: dict[str, Any] = {
        "folder": str(data),
        "train": {"sha256": sha256_file(data / "train.jsonl"), **counts(train_ex)},
        "val": {"sha256": sha256_file(data / "val.jsonl"), **counts(val_ex)},
    }
    # provenance and licences, where the data folder has them
    for extra in ("stats.json", "manifest.json", "SOURCES.md"):
        with contextlib.suppress(OSError, ValueError):
            text = (data / extra).read_text(encoding="utf-8")
            out[extra] = json.loads(text) if extra.endswith(".json") else text
    return out


def train(args: argparse.Namespace) -> dict[str, Any]:
    """The training run that `python -m qa.reader.train` starts; returns the best validation metrics."""
    from qa import e5_bundle

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise QAError("--device cuda, but torch sees no CUDA device; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = True
    data = Path(args.data).expanduser()
    out_dir = Path(args.out).expanduser()
    run_name = args.run_name or f"{out_dir.resolve().name}-k{args.frozen_layers}-s{args.seed}"
    run = cache_root() / "reader" / "ckpt" / run_name
    if run.exists() and not args.resume and (run / "latest.json").exists():
        raise QAError(f"{run} already holds a run: add --resume to continue it, or delete the folder to start again")
    run.mkdir(parents=True, exist_ok=True)
    say = Log(run / "train.log")
    say(f"run {run_name}: {shlex.join(sys.argv)}")

    train_ex = load_examples(data / "train.jsonl", limit=args.limit)
    val_limit = args.val_limit if args.val_limit is not None else args.limit
    val_ex = load_examples(data / "val.jsonl", limit=val_limit)
    say(f"data: {len(train_ex)} training and {len(val_ex)} validation examples from {data}")

    folder = e5_bundle.materialize()
    torch.manual_seed(args.seed)
    net = ReaderNet.from_base(folder, frozen_layers=args.frozen_layers).to(device)
    tokenizer = ReaderTokenizer.from_folder(
        folder, max_length=args.max_length, max_question_tokens=args.max_question_tokens
    )
    train_f = featurize(tokenizer, train_ex, training=True)
    val_f = featurize(tokenizer, val_ex, training=False)
    dropped = len(train_ex) - len(train_f)
    say(
        f"features: {len(train_f)} training windows ({dropped} answers beyond {args.max_length} tokens dropped), {len(val_f)} validation windows"
    )
    if not train_f:
        raise QAError("No training example fits; check the data folder")

    cache = StateCache(net) if args.cache else None
    if cache is not None:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if time.monotonic() - last[0] > 30 or done == total:
                last[0] = time.monotonic()
                say(f"caching layer-{args.frozen_layers} states: {done}/{total}")

        n, seconds = cache.fill([f.window for f in (*train_f, *val_f)], batch_size=32, device=device, progress=progress)
        if n:
            say(f"cached {n} states in {seconds:.1f}s ({1000 * seconds / n:.1f} ms each) under {cache.folder}")

    optimizer = make_optimizer(net, args.lr)
    steps_per_epoch = math.ceil(len(train_f) / args.batch)
    total = steps_per_epoch * args.epochs
    fingerprint = {
        "train_sha256": sha256_file(data / "train.jsonl"),
        "limit": args.limit,
        "frozen_layers": args.frozen_layers,
        "batch": args.batch,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "max_length": args.max_length,
    }
    step, best_score, best_metrics, history = 0, -math.inf, None, []
    if args.resume:
        found = _read_checkpoint(run)
        if found is None:
            say("no checkpoint to resume from: starting at step 0")
        else:
            state, tensors = found
            if state["fingerprint"] != fingerprint:
                raise QAError(
                    f"The checkpoint in {run} was made with other data or settings ({state['fingerprint']}); "
                    "use the same options, or another --run-name"
                )
            _restore(net, optimizer, state, tensors)
            step, best_score, best_metrics, history = (
                state["step"],
                state["best_score"],
                state["best_metrics"],
                state["history"],
            )
            best_score = -math.inf if best_score is None else best_score
            say(f"resumed at step {step}/{total}")
    for group in optimizer.param_groups:  # the schedule at `step` (LambdaLR sets it from last_epoch)
        group.setdefault("initial_lr", args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total), last_epoch=step - 1)

    def checkpoint() -> None:
        _write_checkpoint(
            run,
            net,
            optimizer,
            {
                "step": step,
                "fingerprint": fingerprint,
                "best_score": None if best_score == -math.inf else best_score,
                "best_metrics": best_metrics,
                "history": history,
            },
        )

    started = time.monotonic()
    summary_base = {
        "command": shlex.join(["python", "-m", "qa.reader.train", *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items() if k != "command"},
        "max_length": args.max_length,
        "max_question_tokens": args.max_question_tokens,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {args.device}",
        "data": _data_summary(data, train_ex, val_ex),
    }

    def validate() -> None:
        nonlocal best_score, best_metrics
        t0 = time.monotonic()
        preds = predict(net, tokenizer, val_ex, val_f, cache=cache, batch_size=32, device=device)
        m = metrics(val_ex, preds)
        score = score_of(m)
        history.append({"step": step, "score": round(score, 4), "all": m["all"]})
        say(f"validation at step {step} ({time.monotonic() - t0:.1f}s): AUROC + F1 = {score:.4f}\n{format_metrics(m)}")
        if score > best_score:
            best_score, best_metrics = score, m
            card = save_delta(
                net, out_dir, training={**summary_base, "step": step, "epoch": step / steps_per_epoch, "metrics": m}
            )
            say(f"best so far: exported to {out_dir} (sha256 {card.weights_sha256[:12]})")

    last_ckpt = time.monotonic()
    last_log = time.monotonic()
    window_loss: list[float] = []
    first_step = step
    say(
        f"training {len(train_f)} windows x {args.epochs} epochs = {total} steps of {args.batch} on {device} ({args.threads} threads)"
    )
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        order = epoch_order(len(train_f), args.seed, epoch)
        batch = [train_f[i] for i in order[position * args.batch : (position + 1) * args.batch]]
        parts = training_step(
            net, optimizer, tokenizer, batch, cache=cache, device=device, answerable_weight=args.answerable_weight
        )
        scheduler.step()
        step += 1
        window_loss.append(parts["loss"])
        now = time.monotonic()
        if now - last_log >= args.log_seconds or step == total:
            rate = (step - first_step) / (now - started)
            eta = (total - step) / rate if rate else 0.0
            say(
                f"step {step}/{total} epoch {step / steps_per_epoch:.2f} loss {sum(window_loss) / len(window_loss):.4f} "
                f"(span {parts['span']:.3f} answerable {parts['answerable']:.3f}) lr {scheduler.get_last_lr()[0]:.2e} "
                f"{rate:.2f} steps/s ETA {eta / 60:.1f} min"
            )
            window_loss.clear()
            last_log = now
        end_of_epoch = step % steps_per_epoch == 0
        if (args.eval_every and step % args.eval_every == 0) or end_of_epoch:
            validate()
        if end_of_epoch or now - last_ckpt >= args.checkpoint_minutes * 60 or step == total:
            checkpoint()
            last_ckpt = time.monotonic()
    if best_metrics is None:
        validate()
    say(f"done: best AUROC + F1 = {best_score:.4f}, weights in {out_dir}")
    return best_metrics or {}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Metrics of shipped weights on any jsonl in the data format."""
    from qa import e5_bundle

    torch.set_num_threads(args.threads)
    weights = Path(args.weights).expanduser()
    card = read_card(weights)
    folder = e5_bundle.materialize()
    net = load_delta(weights, base=folder, device=args.device)
    tokenizer = ReaderTokenizer.from_folder(
        folder, max_length=card.max_length, max_question_tokens=card.max_question_tokens
    )
    examples = load_examples(Path(args.data), limit=args.limit)
    features = featurize(tokenizer, examples, training=False)
    t0 = time.monotonic()
    preds = predict(
        net,
        tokenizer,
        examples,
        features,
        batch_size=args.batch,
        device=args.device,
        max_answer_tokens=card.max_answer_tokens,
    )
    m = metrics(examples, preds)
    print(f"{args.data}: {len(examples)} examples, {len(features)} windows, {time.monotonic() - t0:.1f}s")
    print(format_metrics(m))
    if args.json:
        print(json.dumps(m, ensure_ascii=False))
    return m


# --------------------------------------------------------------------------- command line


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive(int), default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--limit", type=_positive(int), help="use a fixed sample of N examples")


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    t = argparse.ArgumentParser(prog="python -m qa.reader.train", description=__doc__.split("\n\n")[0])
    t.add_argument("--data", required=True, help="folder with train.jsonl and val.jsonl")
    t.add_argument("--out", required=True, help="folder the best weights are exported to")
    t.add_argument("--frozen-layers", type=int, default=8, help="embeddings + this many layers keep the base weights")
    t.add_argument("--epochs", type=_positive(int), default=2)
    t.add_argument("--lr", type=_positive(float), default=2e-4)
    t.add_argument("--batch", type=_positive(int), default=16)
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--val-limit", type=_positive(int), help="validation sample (default: all, or --limit)")
    t.add_argument("--eval-every", type=_positive(int), help="also validate every N steps (always after each epoch)")
    t.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    t.add_argument("--run-name", help="checkpoint folder name (default from --out, frozen layers and seed)")
    t.add_argument("--answerable-weight", type=float, default=1.0, help="weight of the answerability loss")
    t.add_argument("--max-length", type=_positive(int), default=MAX_LENGTH)
    t.add_argument("--max-question-tokens", type=_positive(int), default=MAX_QUESTION_TOKENS)
    t.add_argument("--checkpoint-minutes", type=_positive(float), default=5.0)
    t.add_argument("--log-seconds", type=_positive(float), default=30.0)
    t.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True, help="cache the frozen states")
    _common(t)
    e = argparse.ArgumentParser(
        prog="python -m qa.reader.train evaluate", description="Metrics of reader weights on a jsonl file."
    )
    e.add_argument("--weights", required=True, help="folder written by the training (reader.json + reader.safetensors)")
    e.add_argument("--data", required=True, help="a jsonl file in the reader data format")
    e.add_argument("--batch", type=_positive(int), default=32)
    e.add_argument("--json", action="store_true", help="also print the metrics as one JSON line")
    _common(e)
    return t, e


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train_parser, eval_parser = build_parser()
    try:
        if argv[:1] == ["evaluate"]:
            evaluate(eval_parser.parse_args(argv[1:]))
        else:
            args = train_parser.parse_args(argv)
            if not 0 <= args.frozen_layers < 12:
                train_parser.error("--frozen-layers must be between 0 and 11")
            train(args)
    except (QAError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
