"""HTML for the chat: answers, passages, citations. Pure functions, no Gradio.

Every piece of text that comes from the corpus or the user (passage text, titles, file
names, questions) goes through `html.escape` here and nowhere else: highlight and
evidence spans are applied to the raw text, and each piece between two span boundaries
is escaped on its own, so a `<script>` in a document is shown as text, never run.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from qa.search import Hit, SearchResult
from qa.split import Passage, Source

NOT_FOUND = "知识库中没有找到与问题直接相关的内容"
UNCERTAIN = "可能相关"
# The three verdicts read differently at a glance: a coloured badge before the lead sentence.
VERDICT_BADGES = {
    "found": '<span class="qa-badge qa-badge-found">✓ 已找到</span>',
    "uncertain": '<span class="qa-badge qa-badge-uncertain">? 可能相关</span>',
    "none": '<span class="qa-badge qa-badge-none">✗ 未找到</span>',
}
LOW_CONFIDENCE = "低置信度"
MAX_NEIGHBOUR_SOURCES = 3
BAR_CELLS = 5

# What a reply shows around its passages: `Retriever.context(hits)`, gathered before rendering.
Context = Mapping[tuple[str, int], tuple[Passage | None, Passage | None]]

# Styles for the classes below, passed to `launch(css=...)`; the HTML reads well without them.
CSS = """
.qa-answer { line-height: 1.65; }
.qa-lead { margin: 0 0 .5em 0; font-weight: 600; }
.qa-hit { border-left: 3px solid #3b82f6; padding: .35em .75em; margin: .6em 0; }
.qa-hit.qa-low { border-left-color: #9ca3af; }
.qa-head { font-size: .9em; color: #4b5563; margin-bottom: .2em; }
.qa-rank { font-weight: 700; color: #1f2937; margin-right: .5em; }
.qa-bar { letter-spacing: 1px; color: #2563eb; }
.qa-low .qa-bar { color: #9ca3af; }
.qa-lowtag { margin-left: .5em; padding: 0 .4em; border-radius: 4px; background: #fef3c7; color: #92400e; }
.qa-text mark { background: #fde68a; color: inherit; padding: 0 1px; border-radius: 2px; }
.qa-evidence { font-weight: 600; text-decoration: underline; text-decoration-color: #3b82f6;
               text-underline-offset: 3px; }
.qa-cite { font-size: .85em; color: #6b7280; }
.qa-ctx summary { cursor: pointer; font-size: .85em; color: #2563eb; }
.qa-ctx p { font-size: .9em; color: #4b5563; margin: .3em 0; }
.qa-ctx .qa-self { color: #111827; }
.qa-warn { font-size: .85em; color: #92400e; }
.qa-answerline { margin: .3em 0 .1em 0; font-size: 1.05em; }
.qa-da { font-weight: 700; color: #1d4ed8; }
.qa-context { font-size: .85em; color: #4b5563; font-style: italic; }
.qa-more summary { cursor: pointer; color: #2563eb; margin: .4em 0; }
.qa-cite-link { color: inherit; text-decoration: underline dotted; cursor: pointer; }
.qa-src { line-height: 1.8; }
.qa-src-head { position: sticky; top: 0; background: var(--background-fill-primary, #fff); padding: .3em 0; }
.qa-src-text { white-space: normal; }
.qa-src mark.qa-here { background: #fde68a; }
.qa-badge { display: inline-block; margin-right: .5em; padding: 0 .45em; border-radius: 4px; font-size: .9em; }
.qa-badge-found { background: #dcfce7; color: #166534; }
.qa-badge-uncertain { background: #fef3c7; color: #92400e; }
.qa-badge-none { background: #f3f4f6; color: #4b5563; }
"""


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(spans: Sequence[Sequence[int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """`spans` cut to [lo, hi), sorted, empty and overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for span in sorted((int(s), int(e)) for s, e in spans):
        s, e = max(span[0], lo), min(span[1], hi)
        if s >= e:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


def _marked(text: str, lo: int, hi: int, highlights: Sequence[Sequence[int]]) -> str:
    """text[lo:hi], escaped, with the highlighted spans in <mark>."""
    out, pos = [], lo
    for s, e in _clip(highlights, lo, hi):
        out += [esc(text[pos:s]), "<mark>", esc(text[s:e]), "</mark>"]
        pos = e
    out.append(esc(text[pos:hi]))
    return "".join(out)


def passage_html(text: str, highlights: Sequence[Sequence[int]] = (), evidence: Sequence[int] | None = None) -> str:
    """A passage with the query's terms in <mark> and its best sentence emphasized."""
    n = len(text)
    ev = _clip([evidence], 0, n) if evidence else []
    if not ev:
        return _marked(text, 0, n, highlights)
    s, e = ev[0]
    return (
        _marked(text, 0, s, highlights)
        + '<strong class="qa-evidence" title="最相关的句子">'
        + _marked(text, s, e, highlights)
        + "</strong>"
        + _marked(text, e, n, highlights)
    )


def citation_text(source: Source, at: int | None = None) -> str:
    """The plain-text citation of one source, e.g. 来源：标题 · a.txt · 第3段 (· 第2页 in a PDF;
    in a deck or a workbook the slide or the sheet and row instead of the paragraph)."""
    return f"来源：{source.title} · {source.file}{source.paragraph_label}{page_text(source, at)}"


def page_text(source: Source, at: int | None = None) -> str:
    """· 第N页 (· 第3张幻灯片, · 工作表 名单 · 第12行): the place of character `at` of the passage
    (its answer sentence), or, for the passage shown whole, its places (第1–2页 when it crosses a
    page); "" without pages."""
    place = source.place if at is None else source.place_at(at)
    return f" · {place}" if place else ""


def source_link(source: Source, evidence: Sequence[int] | None) -> str:
    """The fragment a citation links to: `#qa-src=` and the file, passage span and best sentence
    (relative to the passage), URL-encoded; the page's script opens the source viewer with it."""
    ev = list(evidence) if evidence else [-1, -1]
    return "#qa-src=" + quote(f"{source.start}|{source.end}|{ev[0]}|{ev[1]}|{source.file}", safe="")


def citation_html(source: Source, evidence: Sequence[int] | None = None, *, of_evidence: bool = False) -> str:
    """A citation that opens the source viewer at the passage when clicked; `of_evidence` cites
    the page of the best sentence rather than the passage's pages."""
    at = int(evidence[0]) if of_evidence and evidence else None
    return (
        f'<div class="qa-cite"><a class="qa-cite-link" href="{esc(source_link(source, evidence))}" '
        f'title="在原文中查看">{esc(citation_text(source, at))}</a></div>'
    )


def relevance_html(confidence: float) -> str:
    c = min(max(float(confidence), 0.0), 1.0)
    full = round(c * BAR_CELLS)
    bar = "●" * full + "○" * (BAR_CELLS - full)
    return f'<span class="qa-rel" title="相关度（校准后的置信度）">相关度 <span class="qa-bar">{bar}</span> {round(c * 100)}%</span>'


def _context_html(hit: Hit, context: Context) -> str:
    """A collapsed <details> with the passages before and after each source of the hit."""
    parts = []
    seen: set[tuple[str | None, str | None]] = set()
    for src in hit.sources[:MAX_NEIGHBOUR_SOURCES]:
        before, after = context.get((src.file, src.order), (None, None))
        key = (before.id if before else None, after.id if after else None)
        if key == (None, None) or key in seen:
            continue
        seen.add(key)
        if len(hit.sources) > 1:
            parts.append(f'<p class="qa-cite">{esc(src.file)}{src.paragraph_label}{page_text(src)}</p>')
        if before is not None:
            parts.append(f"<p>上文：{esc(before.text)}</p>")
        parts.append(f'<p class="qa-self">本段：{esc(hit.text)}</p>')
        if after is not None:
            parts.append(f"<p>下文：{esc(after.text)}</p>")
    if not parts:
        return ""
    return '<details class="qa-ctx"><summary>展开上下文</summary>' + "".join(parts) + "</details>"


def hit_html(hit: Hit, context: Context | None = None, relevance: float | None = None) -> str:
    """One passage: rank, relevance (`relevance`, default its confidence), text, every citation."""
    low = f'<span class="qa-lowtag">{LOW_CONFIDENCE}</span>' if hit.low_confidence else ""
    cites = "".join(citation_html(s, hit.evidence) for s in hit.sources)
    around = _context_html(hit, context) if context is not None else ""
    shown = hit.confidence if relevance is None else relevance
    return (
        f'<div class="qa-hit{" qa-low" if hit.low_confidence else ""}">'
        f'<div class="qa-head"><span class="qa-rank">#{hit.rank}</span>{relevance_html(shown)}{low}</div>'
        f'<div class="qa-text">{passage_html(hit.text, hit.highlights, hit.evidence)}</div>'
        f"{cites}{around}</div>"
    )


def answer_line_html(hit: Hit) -> str:
    """答：the top passage's best sentence, with the query terms marked, and where it stands."""
    start, end = hit.evidence or (0, len(hit.text))
    return (
        f'<p class="qa-answerline"><span class="qa-da">答：</span>{_marked(hit.text, start, end, hit.highlights)}</p>'
        + citation_html(hit.sources[0], hit.evidence, of_evidence=True)
    )


def answer_html(result: SearchResult, context: Context | None = None) -> str:
    """The whole reply: verdict and lead, the answer line, the best passage in full, and the
    other passages collapsed under 更多相关段落."""
    if result.verdict == "answered":
        lead, kind = f"找到 {len(result.hits)} 个相关段落。", "found"
    elif result.verdict == "uncertain":
        lead, kind = f"{UNCERTAIN}：以下段落可能回答了这个问题，但把握不大，请对照原文核实。", "uncertain"
    elif result.hits:
        lead, kind = f"{NOT_FOUND}。以下是最接近的段落（{LOW_CONFIDENCE}），仅供参考：", "none"
    else:
        lead, kind = f"{NOT_FOUND}。", "none"
    parts = [f'<p class="qa-lead">{VERDICT_BADGES[kind]}{lead}</p>']
    if result.interpreted_as:
        parts.append(f'<p class="qa-context">按上文理解为：{esc(result.interpreted_as)}</p>')
    parts += [f'<p class="qa-warn">提示：{esc(w)}</p>' for w in result.warnings]
    if result.hits and result.verdict != "not_found":
        parts.append(answer_line_html(result.hits[0]))
    hits = [hit_html(h, context, h.confidence) for h in result.hits]
    parts += hits[:1]
    if len(hits) > 1:
        parts.append(
            f'<details class="qa-more"><summary>更多相关段落（{len(hits) - 1}）</summary>{"".join(hits[1:])}</details>'
        )
    return f'<div class="qa-answer qa-verdict-{kind}">{"".join(parts)}</div>'


def source_view_html(title: str, file: str, text: str, span: tuple[int, int], evidence: tuple[int, int] | None,
                     place: str | None = None) -> str:  # fmt: skip
    """The whole document in the viewer: the passage marked (id qa-here, for scrolling to it),
    its best sentence emphasized; every piece escaped."""
    start, end = max(0, min(span[0], len(text))), max(0, min(span[1], len(text)))
    head = (
        f'<div class="qa-src-head"><b>{esc(title)}</b> · {esc(file)}' + (f" · {esc(place)}" if place else "") + "</div>"
    )
    inner = passage_html(text[start:end], (), evidence)
    body = (esc(text[:start]) + f'<mark class="qa-here" id="qa-here">{inner}</mark>' + esc(text[end:])).replace(
        "\n", "<br>"
    )
    return f'<div class="qa-src">{head}<div class="qa-src-text">{body}</div></div>'


def question_html(question: str) -> str:
    """The user's question as shown in the chat (the chat renders HTML, so it is escaped)."""
    return f'<span class="qa-question">{esc(question)}</span>'
