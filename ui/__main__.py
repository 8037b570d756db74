"""`python -m ui`: the chat server that `qa serve` starts (same options)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qa import DEFAULT_DOCS, DEFAULT_INDEX, QAError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qa serve", description="Start the web chat.")
    parser.add_argument("--docs", default=DEFAULT_DOCS)
    parser.add_argument("--index", default=DEFAULT_INDEX)
    parser.add_argument(
        "--kb", action="append", default=[], metavar="NAME=FOLDER", help="a knowledge base (repeatable)"
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    parser.add_argument(
        "--auth", default=None, help="users file (qa users add): everyone logs in, editors change documents"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="qa: %(levelname)s: %(message)s")
    for noisy in ("faiss", "faiss.loader", "bm25s", "jieba", "sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from qa.kb import parse_spec
    from ui.serve import serve

    try:
        kbs = [parse_spec(spec) for spec in args.kb]
        return serve(docs_dir=args.docs, index_dir=args.index, host=args.host, port=args.port, share=args.share,
                     model=args.model, auth_file=args.auth, kbs=kbs)  # fmt: skip
    except QAError as exc:
        print(f"qa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
