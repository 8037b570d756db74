"""The Gradio chat app: ask questions, read cited passages, manage the documents.

    create_app(retriever, docs)   the gr.Blocks, for tests and embedding (users: logins and roles)
    launch_app(app, host, port)   queue limits and safe launch options
    ui.serve.serve(docs, index)   what `qa serve` runs: update the index, warm up, launch

Documents change through `qa.library.Library`; the page's scripts are in `ui.scripts`, its
words in `ui.texts` and the progress bar's labels in `ui.progress`.

The app imports `qa`; `qa` never imports Gradio. All HTML comes from `ui.render`,
which escapes every piece of corpus and user text; toasts (which Gradio renders as
HTML) get file names and error messages escaped too.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# After every event Gradio rebuilds a pandas summary of its last 10,000 events for a monitoring
# page that launch_app turns off (enable_monitoring=False): 10 ms of CPU per request at first,
# 40 ms after 10,000 requests (measured on 2 cores). Never rebuild it.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**9))

import gradio as gr

from qa import (
    MAX_K,
    MAX_QUERY_CHARS,
    MODES,
    Encoder,
    FeedbackLog,
    Mode,
    QAError,
    QueryError,
    Retriever,
    SearchResult,
    default_feedback_path,
    parse_document,
)
from qa.auth import Users
from qa.kb import DEFAULT_KB
from qa.library import MAX_UPLOAD_BYTES, Library
from ui import texts
from ui.progress import _reporter
from ui.render import CSS, MAX_NEIGHBOUR_SOURCES, answer_html, esc, question_html, source_view_html
from ui.scripts import BUSY_JS, CITATION_CLICK_JS, SCROLL_TO_REPLY_JS, SCROLL_TO_SOURCE_JS

DEFAULT_K = 5
# The queue. A search costs ~15 ms of CPU once its question's embedding is cached and ~100 ms
# when the question is new (the model); `make stress` (50 clients × 10 questions, 2 shared
# cores) measured 13-23 answers a second. QUEUE_CONCURRENCY searches run at once (the model
# releases the GIL, so a few overlap on 2 cores); up to QUEUE_MAX_SIZE more wait, which at
# ~15 a second is at most ~4 s of waiting: 50 users with a question each fit. Past that a
# request is turned away at once (HTTP 503; gradio_client raises QueueError "Queue is full"),
# and the page says BUSY_MESSAGE; nothing waits without bound. Index updates run one at a
# time (their own concurrency group) and wait in the same queue.
QUEUE_CONCURRENCY = 4
QUEUE_MAX_SIZE = 64

# ---------------------------------------------------------------- feedback


def _top_evidence(result: SearchResult) -> dict[str, str]:
    """The top passage's best sentence (or its text), for `qa feedback export`."""
    if not result.hits:
        return {}
    top = result.hits[0]
    s, e = top.evidence or (0, len(top.text))
    return {"evidence": top.text[s:e]}


def _vote(liked: Any) -> str:
    if liked is True:
        return "up"
    if liked is False:
        return "down"
    return str(liked) if liked else "cleared"  # "" when a thumb is clicked again to take the vote back


# ---------------------------------------------------------------- the app


@dataclass(frozen=True)
class _LaunchOptions:
    protected: tuple[str, ...]
    max_upload_bytes: int
    users: Users | None = None


_LAUNCH: weakref.WeakKeyDictionary[gr.Blocks, _LaunchOptions] = weakref.WeakKeyDictionary()


def _doc_rows(library: Library) -> list[list[Any]]:
    return [[d["title"], d["file"], d["passages"]] for d in library.documents()]


def _doc_choices(library: Library) -> list[str]:
    return [d["file"] for d in library.documents()]


def create_app(
    source: Retriever | str | Path | Mapping[str, Retriever],
    docs_dir: str | Path | None = None,
    *,
    encoder: Encoder | None = None,
    feedback_path: str | Path | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    examples: Sequence[str] = texts.EXAMPLES,
    users: Users | None = None,
    editable: bool = True,
) -> gr.Blocks:
    """The chat app over a loaded `Retriever` (or an index folder), its documents in `docs_dir`
    (default: the folder the index was built from); or over several knowledge bases, `source`
    mapping each name to its retriever (each with the documents folder its index was built
    from, its own feedback log, and a picker in the page). With `users`, everyone logs in and
    only editors may upload or remove documents; without, `editable` decides for everyone."""
    if isinstance(source, Mapping):
        examples = () if examples is texts.EXAMPLES else examples
        bases = {name: Library(r, r.manifest.docs_dir, max_upload_bytes=max_upload_bytes) for name, r in source.items()}
    else:
        one = source if isinstance(source, Retriever) else Retriever.load(source, encoder=encoder)
        docs = Path(docs_dir) if docs_dir is not None else Path(one.manifest.docs_dir)
        bases = {DEFAULT_KB: Library(one, docs, max_upload_bytes=max_upload_bytes)}
    if not bases:
        raise ValueError("create_app needs at least one knowledge base")
    names, first = list(bases), next(iter(bases.values()))
    feedbacks = {
        name: FeedbackLog(feedback_path if feedback_path and len(bases) == 1 else default_feedback_path(b.index_dir))
        for name, b in bases.items()
    }
    retriever = first.retriever
    dense = all(b.retriever.has_dense for b in bases.values())
    modes = texts.MODE_CHOICES if dense else [c for c in texts.MODE_CHOICES if c[1] == "lexical"]
    limit_mb = f"{max_upload_bytes / 1048576:g}"

    def pick(kb: str | None) -> Library:
        """The chosen knowledge base (the first when none is named)."""
        if not kb:
            return first
        if kb not in bases:
            raise gr.Error(f"没有名为“{esc(kb)}”的知识库。可选：{esc('、'.join(names))}")
        return bases[kb]

    def respond(message: str, history: list[dict[str, Any]], k: float, mode: str, threshold: float,
                records: dict[int, dict[str, Any]], followups: bool = True, kb: str | None = None,
                ) -> tuple[list[dict[str, Any]], str, dict[int, dict[str, Any]]]:  # fmt: skip
        question = (message or "").strip()
        if not question:
            gr.Warning("请先输入问题。")
            return history, "", records
        r = pick(kb).retriever
        try:
            previous = records[max(records)]["searched"] if records and followups else None
            result = r.search(question, k=int(k), mode=mode, threshold=float(threshold), context=previous)  # type: ignore[arg-type]
        except (QAError, ValueError) as exc:
            raise gr.Error(f"无法搜索：{esc(str(exc))}") from exc
        history = [
            *history,
            {"role": "user", "content": question_html(result.query)},  # as searched: cut, invisible marks gone
            {"role": "assistant", "content": answer_html(result, r.context(result.hits, MAX_NEIGHBOUR_SOURCES))},
        ]
        record = {"query": result.query, "searched": result.interpreted_as or result.query,
                  "hits": [h.id for h in result.hits], "answered": result.answered,
                  "verdict": result.verdict, "mode": result.mode, "k": int(k), **_top_evidence(result)}  # fmt: skip
        return history, "", {**records, len(history) - 1: record}

    def on_like(records: dict[int, dict[str, Any]], kb: str | None, data: gr.LikeData) -> None:
        index = data.index[0] if isinstance(data.index, list | tuple) else data.index
        record = records.get(int(index))
        if record is None:
            return
        feedbacks[kb if kb in feedbacks else names[0]].append({"vote": _vote(data.liked), **record})
        gr.Info("已记录反馈，谢谢！")

    def search(
        question: str,
        k: int = DEFAULT_K,
        mode: Mode = "hybrid",
        threshold: float | None = None,
        kb: str | None = None,
    ) -> dict[str, Any]:
        """Search the documents of knowledge base `kb` (default: the first). Returns the result as
        JSON: answered, confidence, threshold, hits (rank, score, text, sources, highlights,
        evidence, confidence), `html`, the rendered answer as the chat shows it, and `kb`."""
        if mode not in MODES:
            raise gr.Error(f"mode 必须是 {' / '.join(MODES)} 之一")
        r = pick(kb).retriever
        try:
            result = r.search(question, k=int(k), mode=mode, threshold=threshold)
        except QueryError as exc:
            raise gr.Error("问题为空，请输入一个问题。") from exc
        except (QAError, ValueError) as exc:
            raise gr.Error(f"无法搜索：{esc(str(exc))}") from exc
        html = answer_html(result, r.context(result.hits, MAX_NEIGHBOUR_SOURCES))
        return {**result.to_dict(), "html": html, "kb": kb or names[0]}

    def open_source(request: str, kb: str | None = None) -> tuple[str, Any]:
        """The source viewer's HTML for a citation link (see ui.render.source_link), and the
        button that downloads the original file."""
        no_download = gr.DownloadButton(visible=False)
        try:
            start, end, ev_start, ev_end, file = unquote(request.removeprefix("#qa-src=")).split("|", 4)
            span, evidence = (int(start), int(end)), (int(ev_start), int(ev_end))
        except ValueError:
            return f'<p class="qa-src-empty">{texts.VIEWER_HINT}</p>', no_download
        try:
            library = pick(kb)
            raw = library.retriever.original(file)  # read and checked once, for the text and the download
            doc = parse_document(raw, file)
            original = library.original_copy(file, raw)
        except (QAError, OSError, gr.Error) as exc:
            return f'<p class="qa-warn">无法打开原文：{esc(str(exc))}</p>', no_download
        place = doc.place_at(span[0] + evidence[0] if evidence[0] >= 0 else span[0])  # the answer sentence's page
        html = source_view_html(doc.title, file, doc.text, span, evidence if evidence[0] >= 0 else None, place)
        return html, gr.DownloadButton(f"下载原文件：{original.name}", value=str(original), visible=True)

    def documents_view(kb: str | None = None) -> tuple[list[list[Any]], Any]:
        library = pick(kb)
        return _doc_rows(library), gr.Dropdown(choices=_doc_choices(library), value=None)

    def switch(kb: str) -> tuple[Any, ...]:
        """Another knowledge base: a new conversation, its threshold, its documents."""
        r = pick(kb).retriever
        info = f"最相关段落的置信度低于此值时，回答“没有找到”。索引的校准值：{r.threshold:.4g}"
        return [], {}, gr.Number(value=r.threshold, info=info), *documents_view(kb)

    def can_edit(request: gr.Request | None) -> bool:
        if users is None:
            return editable
        return users.role(getattr(request, "username", None)) == "editor"

    def read_only_reason() -> str:
        return texts.EDITORS_ONLY if users is not None else texts.READ_ONLY

    def edit_controls(request: gr.Request) -> tuple[Any, ...]:
        """Upload and remove shown to those who may use them; a note for the others."""
        allowed = can_edit(request)
        return (
            *(gr.update(visible=allowed) for _ in range(4)),
            gr.update(value=read_only_reason(), visible=not allowed),
        )

    def upload(
        files: list[str] | None,
        kb: str | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - how Gradio asks for a progress tracker
    ) -> tuple[str, list[list[Any]], Any, None]:
        if not can_edit(request):  # the API enforces what the page hides
            return read_only_reason(), *documents_view(kb), None
        if not files:
            return "请先选择要上传的文件。", *documents_view(kb), None

        progress(0.02, desc="检查文件")
        try:
            outcome = pick(kb).add_files(files, on_progress=_reporter(progress))
        except QAError as exc:
            raise gr.Error(esc(str(exc))) from exc
        if outcome.refused:
            gr.Warning("有文件未加入：" + esc("；".join(f"{name}（{why}）" for name, why in outcome.refused)))
        return outcome.summary(), *documents_view(kb), None

    def remove(
        file: str | None,
        kb: str | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str, list[list[Any]], Any]:
        if not can_edit(request):
            return read_only_reason(), *documents_view(kb)
        if not file:
            return "请先选择要删除的文档。", *documents_view(kb)
        progress(0.02, desc="删除文件")
        try:
            report = pick(kb).remove(file, on_progress=_reporter(progress))
        except QAError as exc:
            raise gr.Error(esc(str(exc))) from exc
        return f"已删除：{file}\n索引已更新：{report.documents} 个文档，{report.passages} 个段落。", *documents_view(kb)

    with gr.Blocks(title="文档问答") as app:
        gr.Markdown("## 文档问答\n根据知识库中的文档回答问题，每段答案都注明出处。")
        records = gr.State({})
        kb_picker = gr.Dropdown(names, value=names[0], label="知识库", visible=len(names) > 1, elem_id="qa-kb")
        with gr.Tabs():
            with gr.Tab("问答"), gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(
                        label="对话", height=620, elem_id="qa-chat", render_markdown=False, sanitize_html=True,
                        latex_delimiters=[], allow_tags=False, buttons=[], feedback_options=("Like", "Dislike"),
                        placeholder="在下方输入问题，答案会列出知识库中最相关的段落和来源。", autoscroll=False,
                    )  # fmt: skip
                    with gr.Row():
                        question = gr.Textbox(
                            label="问题", placeholder="输入问题，按回车发送", show_label=False, scale=8,
                            max_length=MAX_QUERY_CHARS, elem_id="qa-question", autofocus=True,
                        )  # fmt: skip
                        send = gr.Button("提问", variant="primary", scale=1, min_width=80, elem_id="qa-send")
                        clear = gr.Button("清空对话", scale=1, min_width=80, elem_id="qa-clear")
                    if examples:  # the seed corpus's; several knowledge bases get none unless given
                        gr.Examples([[q] for q in examples], inputs=[question], label="示例问题")
                    with gr.Accordion("设置", open=False):
                        k = gr.Slider(1, min(20, MAX_K), value=DEFAULT_K, step=1, label="返回段落数")
                        mode = gr.Radio(modes, value=modes[0][1], label="检索方式")
                        threshold = gr.Number(
                            value=retriever.threshold, minimum=0.0, maximum=1.0, step=0.01,
                            label="置信度阈值（0–1）",
                            info=f"最相关段落的置信度低于此值时，回答“没有找到”。索引的校准值：{retriever.threshold:.4g}",
                        )  # fmt: skip
                        followups = gr.Checkbox(
                            value=True, label="结合上文理解追问",
                            info="像“那上海呢？”这样简短的追问，连同上一个问题一起检索",
                        )  # fmt: skip
                with gr.Column(scale=2, min_width=320):
                    viewer = gr.HTML(
                        f'<p class="qa-src-empty">{texts.VIEWER_HINT}</p>', elem_id="qa-viewer", label="原文",
                        max_height=700, padding=True,
                    )  # fmt: skip
                    download = gr.DownloadButton("下载原文件", visible=False, elem_id="qa-download", size="sm")
                    source_request = gr.Textbox(elem_id="qa-src-request", elem_classes=["qa-hidden"], show_label=False)
                    source_open = gr.Button("打开原文", elem_id="qa-src-open", elem_classes=["qa-hidden"])
            with gr.Tab("文档"):
                table = gr.Dataframe(
                    value=_doc_rows(first), headers=texts.DOC_HEADERS, datatype=["str", "str", "number"], type="array",
                    interactive=False, label="已索引的文档", wrap=True,
                )  # fmt: skip
                files = gr.File(
                    file_count="multiple",
                    type="filepath",
                    label=f"上传文档（{texts.UPLOAD_FORMATS}，每个不超过 {limit_mb} MB）",
                )
                upload_btn = gr.Button("上传并更新索引", variant="primary")
                with gr.Row():
                    to_remove = gr.Dropdown(
                        choices=_doc_choices(first),
                        value=None,
                        label="选择要删除的文档",
                        scale=4,
                        allow_custom_value=True,  # the list changes with uploads; Library.remove checks the name
                    )
                    remove_btn = gr.Button("删除所选文档", variant="stop", scale=1)
                status = gr.Textbox(label="状态", interactive=False, lines=3)
                read_only = gr.Markdown(visible=False, elem_id="qa-read-only")

        inputs = [question, chatbot, k, mode, threshold, records, followups, kb_picker]
        outputs = [chatbot, question, records]
        question.submit(respond, inputs, outputs, api_name="chat").then(None, js=SCROLL_TO_REPLY_JS)
        send.click(respond, inputs, outputs, api_visibility="undocumented").then(None, js=SCROLL_TO_REPLY_JS)
        source_open.click(open_source, [source_request, kb_picker], [viewer, download], api_name="source").then(
            None, js=SCROLL_TO_SOURCE_JS
        )
        clear.click(lambda: ([], {}, ""), None, [chatbot, records, question], api_visibility="private")
        chatbot.clear(lambda: {}, None, records, api_visibility="private")
        chatbot.like(on_like, [records, kb_picker], None, api_visibility="private")
        kb_picker.change(switch, [kb_picker], [chatbot, records, threshold, table, to_remove], api_visibility="private")
        gr.api(search, api_name="search")
        upload_btn.click(upload, [files, kb_picker], [status, table, to_remove, files], api_name="upload",
                         concurrency_limit=1, concurrency_id="index-update")  # fmt: skip
        remove_btn.click(remove, [to_remove, kb_picker], [status, table, to_remove], api_name="remove",
                         concurrency_limit=1, concurrency_id="index-update")  # fmt: skip
        app.load(documents_view, [kb_picker], [table, to_remove], api_visibility="private")
        app.load(edit_controls, None, [files, upload_btn, to_remove, remove_btn, read_only], api_visibility="private")

    protected = [p for b, f in zip(bases.values(), feedbacks.values(), strict=True)
                 for p in (b.docs_dir, b.index_dir, f.path)]  # fmt: skip
    _LAUNCH[app] = _LaunchOptions(tuple(str(p.resolve()) for p in protected), max_upload_bytes, users)
    return app


def launch_app(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
               prevent_thread_lock: bool = True, quiet: bool = True, concurrency: int = QUEUE_CONCURRENCY,
               max_size: int = QUEUE_MAX_SIZE) -> str:  # fmt: skip
    """Enable the queue (`concurrency` events at once, up to `max_size` more waiting) and launch
    `app`; returns its URL. Nothing is added to Gradio's allowed paths, and the documents folder,
    the index folder and the feedback file are blocked."""
    options = _LAUNCH.get(app, _LaunchOptions((), MAX_UPLOAD_BYTES))
    app.queue(default_concurrency_limit=concurrency, max_size=max_size)
    _, local_url, share_url = app.launch(
        auth=options.users.check if options.users is not None else None, auth_message=texts.LOGIN_MESSAGE,
        server_name=host, server_port=port, share=share, inbrowser=False, prevent_thread_lock=prevent_thread_lock,
        quiet=quiet, show_error=False, blocked_paths=list(options.protected),
        # Hard ceiling for Gradio's upload route; the app refuses files above max_upload_bytes itself,
        # with a message that names the file.
        max_file_size=4 * options.max_upload_bytes,
        footer_links=["api", "settings"], run_history=False, enable_monitoring=False, ssr_mode=False,
        mcp_server=False, theme=gr.themes.Default(font=texts.FONTS, font_mono=["ui-monospace", "monospace"]),
        css=CSS + ".qa-hidden { display: none !important; }", head=CITATION_CLICK_JS + BUSY_JS,
    )  # fmt: skip
    return share_url or local_url
