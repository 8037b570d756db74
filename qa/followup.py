"""Follow-up questions: 那上海呢？ searched with the question it follows.

A question that is short and elliptical (it opens with 那/那么/还有/为什么…, ends with 呢,
or is a bare 为什么？/具体有哪些) cannot be searched on its own: the thing it asks about is
in the previous turn. It is searched as the previous question followed by it; the reply
says so (按上文理解为：…), and the user can switch this off.
"""

from __future__ import annotations

import re
import unicodedata

MAX_FOLLOWUP_CHARS = 16  # longer questions carry their own subject (a Latin word counts as one character)
_OPENERS = re.compile(
    r"^(那么?|那个|还有|另外|此外|然后|所以|而且|并且|以及|为什么|为何|怎么|如何|具体|它|它们|他们|她们|他|她|这个?|这些|其中|"
    r"and\b|what about\b|how about\b|why\b|how\b|which\b|and what\b)",
    re.IGNORECASE,
)
_ENDINGS = re.compile(r"(呢|么|吗)[？?！!。.\s]*$")
_BARE = re.compile(r"^(为什么|为何|怎么说|具体(有哪些|是什么|怎么做|说说)?|有哪些|是谁|多少|什么时候|哪些|why|how|when|who|which ones?)[？?！!。.\s]*$",
                   re.IGNORECASE)  # fmt: skip


def is_followup(question: str) -> bool:
    """True when `question` is too short and elliptical to be searched without the previous turn."""
    q = unicodedata.normalize("NFKC", question).strip()
    if not q or len(re.sub(r"[A-Za-z]+", "w", q)) > MAX_FOLLOWUP_CHARS:  # a Latin word counts as one
        return False
    return bool(_BARE.match(q) or _OPENERS.match(q) or _ENDINGS.search(q))


def with_context(question: str, previous: str | None) -> str | None:
    """The question to search instead of `question` (None: search it as it is)."""
    if not previous or not previous.strip() or not is_followup(question):
        return None
    return f"{previous.strip()} {question.strip()}"
