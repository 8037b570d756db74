"""The page's scripts: citation clicks open the source viewer, Gradio's busy text in Chinese, and
scrolling to a new reply or to the passage in the viewer. Plain strings, given to Gradio's `head`
and to events' `js`."""

from __future__ import annotations

import json

BUSY_MESSAGE = "服务繁忙，请稍后再试：同时提问的人太多，请过几秒钟再发送。"

# Clicking a citation (a link to #qa-src=…, see ui.render.source_link) hands it to the hidden
# textbox and button that open the source viewer; links never navigate.
CITATION_CLICK_JS = """
<script>
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a.qa-cite-link");
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  const box = document.querySelector("#qa-src-request textarea, #qa-src-request input");
  const button = document.querySelector("#qa-src-open");
  if (!box || !button) return;
  box.value = link.getAttribute("href");
  box.dispatchEvent(new Event("input", { bubbles: true }));
  setTimeout(() => button.click(), 50);
}, true);
</script>
"""
# Gradio's page shows its own English text when the queue turns a request away; say it in Chinese.
BUSY_JS = """
<script>
(() => {
  const english = "This application is currently busy";
  const chinese = __BUSY__;
  const translate = (root) => {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.nodeValue.includes(english)) node.nodeValue = chinese;
    }
  };
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === "characterData") translate(change.target.parentNode || change.target);
      for (const node of change.addedNodes) translate(node);
    }
  }).observe(document.documentElement, { childList: true, subtree: true, characterData: true });
})();
</script>
""".replace("__BUSY__", json.dumps(BUSY_MESSAGE, ensure_ascii=False))
# After a reply, show its start (not the bottom of a long answer).
SCROLL_TO_REPLY_JS = """() => {
  const rows = document.querySelectorAll("#qa-chat .message-row.bot-row, #qa-chat [data-testid='bot']");
  const last = rows[rows.length - 1];
  if (last) last.scrollIntoView({ block: "start", behavior: "instant" });
}"""
SCROLL_TO_SOURCE_JS = """() => {
  setTimeout(() => {
    const here = document.querySelector("#qa-viewer #qa-here");
    if (here) here.scrollIntoView({ block: "center", behavior: "instant" });
  }, 50);
}"""
