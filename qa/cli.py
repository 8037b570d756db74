"""The `qa` command: build and inspect the index, ask questions, evaluate, serve the chat."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qa import DEFAULT_DOCS, DEFAULT_INDEX
from qa.errors import QAError, QueryError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mark(text: str, spans: Sequence[Sequence[int]], color: bool) -> str:
    """The text with highlighted spans marked (ANSI on a terminal, 【】 otherwise)."""
    open_, close = ("\033[1;33m", "\033[0m") if color else ("【", "】")
    out, pos = [], 0
    for s, e in spans:
        out += [text[pos:s], open_, text[s:e], close]
        pos = e
    out.append(text[pos:])
    return "".join(out)


def cmd_build(args: argparse.Namespace) -> int:
    from qa.index import build_index

    report = build_index(
        args.docs, args.index, model=args.model, dense=not args.no_dense, max_chars=args.max_chars,
        force=args.force, progress=not args.quiet, on_stage=None if args.quiet else _say,
    )  # fmt: skip
    if report.up_to_date:
        print(f"Index {report.index_dir} is up to date ({report.documents} documents, {report.passages} passages). "
              f"Use --force to rebuild.")  # fmt: skip
        return 0
    if report.full_rebuild_reason and report.full_rebuild_reason not in ("no index yet",):
        print(f"Full rebuild: {report.full_rebuild_reason}.")
    print(
        f"Built {report.index_dir}: {report.documents} documents, {report.passages} passages "
        f"({report.duplicates_collapsed} duplicates collapsed), {report.units} vectors "
        f"({report.embedded} embedded, {report.reused} reused), {report.seconds:.1f} s."
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from qa.index import read_manifest, stale_documents, verify_files

    manifest = read_manifest(args.index)
    verify_files(Path(args.index), manifest)
    if args.json:
        print(json.dumps(manifest, ensure_ascii=False, indent=2))
        return 0
    model = manifest.get("model")
    cal = manifest.get("calibration", {})
    print(
        f"Index:       {args.index} (format {manifest['format_version']}, built {manifest['created']} by qa {manifest['qa_version']})"
    )
    print(f"Documents:   {len(manifest['documents'])} from {manifest['docs_dir']}")
    for d in manifest["documents"]:
        print(f"  - {d['file']}: {d['title']} ({d['passages']} passages)")
    print(f"Passages:    {manifest['passage_count']} ({manifest['duplicates_collapsed']} duplicates collapsed)")
    if model:
        store = manifest["vector_store"]
        print(
            f"Model:       {model['name']} (dim {model['dimension']}, {model['source']}, fingerprint {model['fingerprint']})"
        )
        print(f"Vectors:     {store['count']} in {store['kind']}")
    else:
        print("Model:       none (keyword search only)")
    print(
        f"Splitter:    max {manifest['splitter']['max_chars']} characters, near-duplicates at Jaccard {manifest['splitter']['near_dup']}"
    )
    print(
        f"Threshold:   {cal.get('threshold')} ({'fitted on ' + cal['fitted_on'] if cal.get('fitted_on') else 'default'})"
    )
    changes = stale_documents(manifest)
    print("Status:      " + ("stale: " + "; ".join(changes) + "; run qa index build" if changes else "up to date"))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from qa.search import Retriever

    retriever = Retriever.load(args.index, model=args.model, fusion=args.fusion)
    try:
        result = retriever.search(args.question, k=args.k, mode=args.mode, threshold=args.threshold)
    except QueryError as exc:
        _say(f"qa: error: {exc}")
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if not result.answered:
        print("知识库中没有找到与问题直接相关的内容。" + (" 最接近的段落（低置信度）：" if result.hits else ""))
    for h in result.hits:
        flag = " (low confidence)" if h.low_confidence else ""
        print(f"\n#{h.rank}  score {h.score:.4f}  confidence {h.confidence:.2f}{flag}")
        for s in h.sources:
            page = f" · 第{s.page}页" if s.page else ""
            print(f"    来源：{s.title} · {s.file} · 第{s.paragraph}段{page} [{s.start}:{s.end}]")
        print("    " + _mark(h.text, h.highlights, color))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from qa.evaluate import run_eval_command

    return run_eval_command(args)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ui.app import serve
    except ImportError as exc:
        raise QAError(f"The web app cannot start ({exc}). Install the project: make install") from exc
    return serve(docs_dir=args.docs, index_dir=args.index, host=args.host, port=args.port, share=args.share,
                 model=args.model)  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from qa import __version__

    parser = argparse.ArgumentParser(prog="qa", description="Ask questions of a folder of Chinese documents.")
    parser.add_argument("--version", action="version", version=f"qa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="build or inspect the index").add_subparsers(
        dest="index_command", required=True
    )
    build = index.add_parser("build", help="build or update the index of a documents folder")
    build.add_argument("--docs", default=DEFAULT_DOCS, help="documents folder (default: seeds)")
    build.add_argument("--index", default=DEFAULT_INDEX, help="index folder (default: vectors/default)")
    build.add_argument(
        "--model",
        default=None,
        help="embedding model name or folder (default: $QA_MODEL or intfloat/multilingual-e5-small)",
    )
    build.add_argument("--no-dense", action="store_true", help="keyword (BM25) index only, no embedding model")
    build.add_argument("--max-chars", type=_positive_int, default=None, help="passage size limit in characters")
    build.add_argument("--force", action="store_true", help="rebuild everything, re-embedding all passages")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    build.set_defaults(func=cmd_build)
    info = index.add_parser("info", help="describe an index")
    info.add_argument("--index", default=DEFAULT_INDEX)
    info.add_argument("--json", action="store_true", help="print the manifest")
    info.set_defaults(func=cmd_info)

    ask = sub.add_parser("ask", help="search the index for a question")
    ask.add_argument("question")
    ask.add_argument("-k", type=_positive_int, default=5, help="number of passages (default 5)")
    ask.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")
    ask.add_argument(
        "--fusion",
        choices=["weighted", "rrf", "dense-first"],
        default="weighted",
        help="how hybrid mode fuses the two rankings (default weighted)",
    )
    ask.add_argument("--threshold", type=float, default=None, help="override the index's confidence threshold")
    ask.add_argument("--index", default=DEFAULT_INDEX)
    ask.add_argument("--model", default=None, help="embedding model (must match the index)")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.set_defaults(func=cmd_ask)

    ev = sub.add_parser("eval", help="score retrieval on a labelled query set (JSONL)")
    ev.add_argument("file", type=Path)
    ev.add_argument("--index", default=DEFAULT_INDEX)
    ev.add_argument("--mode", choices=["all", "hybrid", "dense", "lexical"], default="all")
    ev.add_argument(
        "--fusion",
        choices=["weighted", "rrf", "dense-first"],
        default="weighted",
        help="how hybrid mode fuses the two rankings (default weighted)",
    )
    ev.add_argument("-k", type=_positive_int, default=10)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--report", type=Path, default=None, help="write a Markdown report")
    ev.add_argument("--plot", type=Path, default=None, help="write a PNG plot")
    ev.add_argument("--calibrate", action="store_true", help="fit the no-answer threshold and save it in the index")
    ev.add_argument(
        "--precision", type=float, default=None, help="with --calibrate: target precision of answered questions"
    )
    ev.set_defaults(func=cmd_eval)

    serve = sub.add_parser("serve", help="start the web chat")
    serve.add_argument("--docs", default=DEFAULT_DOCS)
    serve.add_argument("--index", default=DEFAULT_INDEX)
    serve.add_argument("--model", default=None)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="qa: %(levelname)s: %(message)s"
    )
    for noisy in ("faiss", "faiss.loader", "bm25s", "jieba", "sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    if getattr(args, "max_chars", "absent") is None:
        from qa.split import DEFAULT_MAX_CHARS

        args.max_chars = DEFAULT_MAX_CHARS
    try:
        result: Any = args.func(args)
        return int(result or 0)
    except QueryError as exc:
        _say(f"qa: error: {exc}")
        return 2
    except QAError as exc:
        _say(f"qa: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("qa: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
