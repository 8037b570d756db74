"""Follow-up questions: 那上海呢？ searched with the question it follows.

A question that is short and elliptical cannot be searched on its own: the thing it asks
about is in the previous turn. It is searched as the previous question followed by it; the
reply says so (按上文理解为：…), and the user can switch this off. Elliptical means one of:

* a bare question: 为什么？ 具体有哪些？ 还有呢？ why? what else?
* a question led by a pronoun or demonstrative (他/她/它/他们/这些/这个/其中…, he/it/they/this…)
  of at most MAX_PRONOUN_CHARS characters: the pronoun points back at the previous turn;
* a short question (at most MAX_FOLLOWUP_CHARS) that ends with 呢 (那北京呢？ 当年援鄂的呢？) or
  opens with a connective or a question word (那/还有/另外/为什么/具体/哪些…, what about/and…).

A follow-up with words of its own (not a bare one) is also searched alone, and the two
rankings are fused (`qa.search.Retriever._followup_hits`): the previous question must not drown what the
follow-up itself names.

A question that asks only yes or no (…吗？) or ends with 什么 is not elliptical for that
alone, and an English question opening with how/why/which is a full question unless it is
bare: "How many people were sent to Shanghai?" is searched as it is.
"""

from __future__ import annotations

import re
import unicodedata

MAX_FOLLOWUP_CHARS = 16  # longer questions carry their own subject (a Latin word counts as one character)
MAX_PRONOUN_CHARS = 24  # a pronoun-led question points back even when longer (他以前自己得过新冠吗？…)
_END = r"[？?！!。.…\s]*$"
_PRONOUNS = re.compile(
    r"^(他们|她们|它们|他|她|它|这些|这个|这种|这样|这|那个|那些|那种|其中|其|该|此|"
    r"(he|she|it|they|them|this|that|these|those|his|her|its|their)\b)",
    re.IGNORECASE,
)
_OPENERS = re.compile(
    r"^(那么?|还有|另外|此外|然后|所以|而且|并且|以及|为什么|为何|怎么|如何|具体|哪些|哪个|哪里|哪儿|有哪些|"
    r"and\b|what about\b|how about\b|and what\b|what else\b)",
    re.IGNORECASE,
)
_ENDINGS = re.compile(r"呢" + _END)
_BARE = re.compile(
    r"^(为什么|为何|为啥|怎么说|怎么回事|具体(都|还)?(有哪些|是什么|怎么做|说说)?|(还)?有哪些|还有呢|还有吗|还有别的吗|然后呢|"
    r"是谁|多少|什么时候|哪些|why|why (is|was) (that|it)|how|how so|when|who|which ones?|what else|anything else|and then)"
    + _END,
    re.IGNORECASE,
)  # fmt: skip
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_DISCOURSE = re.compile(r"^(那么?|还有|另外|此外|然后|所以)|呢(?=" + _END + ")")


def _length(question: str) -> int:
    """Characters of `question`, a Latin word counting as one."""
    return len(_LATIN_WORD.sub("w", question))


def is_followup(question: str) -> bool:
    """True when `question` is too short and elliptical to be searched without the previous turn."""
    q = unicodedata.normalize("NFKC", question).strip()
    if not q:
        return False
    if _BARE.match(q):
        return True
    n = _length(q)
    if n <= MAX_PRONOUN_CHARS and _PRONOUNS.match(q):
        return True
    return n <= MAX_FOLLOWUP_CHARS and bool(_OPENERS.match(q) or _ENDINGS.search(q))


def has_own_words(question: str) -> bool:
    """True when a follow-up names something of its own (那上海呢？, 他住院多久？), so that it is
    also searched alone; a bare one (为什么？ 具体有哪些？) has nothing to search without context."""
    q = unicodedata.normalize("NFKC", question).strip()
    return bool(q) and not _BARE.match(q)


def with_context(question: str, previous: str | None) -> str | None:
    """The question to search instead of `question` (None: search it as it is).

    The previous question, then the follow-up without its discourse particles (那…呢):
    they carry no content and would only dilute the follow-up's own words."""
    if not previous or not previous.strip() or not is_followup(question):
        return None
    own = _DISCOURSE.sub("", question.strip()).strip()
    if not re.search(r"\w", own):  # 还有呢？ is all particles: keep it as it is
        own = question.strip()
    return f"{previous.strip()} {own}"
