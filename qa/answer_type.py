"""What kind of answer a question asks for, and whether a text holds one of that kind.

A question that asks 多少/几/how many wants a quantity; 哪一天/什么时候/when wants a date or a
time. When it names the measure (多少张床位, 几名药剂师, 多少吨), the quantity must be counted in
that measure or a kindred one (张/床, 名/人/位): a passage that gives 3天 does not answer 多少人.
Other questions (谁, 什么, 为什么, how) ask for no kind this module can check: they get "any".

Two stages use it:
- the evidence sentence that a reply shows as 答：: among sentences that match the question alike,
  one with an answer of the kind asked wins (上海全市核酸筛查一共采样了多少人？ → the sentence with
  2566.5万人, not 上海4日启动了全市核酸筛查);
- the confidence: a top passage that holds no answer of the kind asked is a near-topic passage
  (the doctors and nurses of a team, when its pharmacists are asked), the `untyped` feature.

Rules as data, like bm25s's stopword lists; no model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from qa.lexical import fold, leading_noun

AnswerType = Literal["quantity", "date", "any"]

# Measure words a question may name after 多少/几, longest first, each with the measure words
# that count the same thing in an answer (名 → 120人 or 120位 answers it as well).
_KINDRED: dict[str, tuple[str, ...]] = {
    "个小时": ("小时", "个小时", "钟头"),
    "小时": ("小时", "个小时", "钟头"),
    "分钟": ("分钟",),
    "个月": ("个月", "月"),
    "剂次": ("剂次", "剂"),
    "人次": ("人次",),
    "公里": ("公里", "千米"),
    "公斤": ("公斤", "千克", "斤"),
    "名": ("名", "人", "位"),
    "人": ("人", "名", "位"),
    "位": ("位", "名", "人"),
    "例": ("例", "人", "名"),
    "天": ("天", "日", "周"),
    "日": ("日", "天"),
    "周": ("周", "天", "星期"),
    "年": ("年",),
    "岁": ("岁",),
    "次": ("次", "遍", "轮", "场"),
    "轮": ("轮", "次"),
    "场": ("场", "次"),
    "遍": ("遍", "次"),
    "张": ("张", "床"),
    "床": ("床", "张"),
    "家": ("家", "所", "个"),
    "所": ("所", "家", "个"),
    "个": ("个", "家", "所", "座", "支", "项"),
    "支": ("支", "个"),
    "项": ("项", "个", "条"),
    "条": ("条", "项"),
    "件": ("件",),
    "批": ("批",),
    "台": ("台",),
    "辆": ("辆",),
    "架": ("架",),
    "吨": ("吨",),
    "剂": ("剂", "针"),
    "针": ("针", "剂"),
    "管": ("管",),
    "份": ("份",),
    "倍": ("倍",),
    "层": ("层",),
    "座": ("座", "个"),
    "栋": ("栋",),
    "间": ("间",),
    "元": ("元", "美元", "日元", "日圆", "港元", "欧元", "英镑"),
    "米": ("米",),
    "%": ("%", "成", "百分之"),
}
_MEASURES = "|".join(sorted((m for m in _KINDRED if m != "%"), key=len, reverse=True))
# Nouns counted without a measure word after 多少 (多少境外输入病例, 多少防疫资金): the measures
# their count is given in.
_COUNTED: dict[str, tuple[str, ...]] = {
    "病例": _KINDRED["例"],
    "感染者": _KINDRED["例"],
    "患者": _KINDRED["例"],
    "病人": _KINDRED["例"],
    "人员": _KINDRED["人"],
    "干部": _KINDRED["人"],
    "医生": _KINDRED["人"],
    "护士": _KINDRED["人"],
    "床位": _KINDRED["张"],
    "资金": _KINDRED["元"],
    "经费": _KINDRED["元"],
    "金额": _KINDRED["元"],
}
_COUNTED_NOUN = re.compile(rf"多少[^，,。？?！!的]{{0,8}}?({'|'.join(_COUNTED)})")

_QUANTITY_QUESTION = re.compile(
    r"多少|(?<!哪)几[个名位人次天年月日周岁种项家所条件例批轮支台辆架吨万亿千百十层小分秒点场张份栋座所间床剂针]|"
    r"几成|百分之几|比例|占比|比率|多大|多高|多长|多久|多远|多重|"
    r"\bhow (?:many|much|long|far|often|old)\b|\bwhat (?:percentage|proportion|share|number)\b",
    re.IGNORECASE,
)
# The measure a quantity question names: 多少/几, an optional magnitude (多少亿剂次, 多少万人), then
# the measure word; or 百分之几/百分之多少 (a share).
_ASKED_MEASURE = re.compile(rf"(?:多少|(?<!哪)几)(?:[万亿千百])?({_MEASURES})|(百分之(?:多少|几))")
_YEAR_QUESTION = re.compile(r"哪一?年|何年|(?:西元|公元)几年|\b(?:what|which) year\b", re.IGNORECASE)
_DAY_QUESTION = re.compile(
    r"哪一?天|几号|几日|几月几|\b(?:what|which) (?:date|day)\b|\bon (?:what|which) day\b", re.IGNORECASE
)
# A year as written: 1995年, 383年, 20xx年, 二〇二〇年, an era's (至元十一年, 民国元年), a decade (六十年代).
_YEAR = re.compile(r"(?:[0-9]{1,4}|20xx|[〇零元一二三四五六七八九十百]+)\s*年|年代|今年|去年|明年|前年", re.IGNORECASE)
_DAY = re.compile(
    r"[0-9一二三四五六七八九十]{1,3}\s*[日号]|今天|昨天|明天|前天|除夕|元旦|初[一二三四五六七八九十]|"
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|december)\s+[0-9]{1,2}\b",
    re.IGNORECASE,
)
_DATE_QUESTION = re.compile(
    r"哪一?天|哪一?年|哪个月|几月|几号|几日|何时|什么时候|什么时间|哪个时候|何年|(?:西元|公元)几年|日期|"
    r"\bwhen\b|\bwhat (?:date|day|year|month|time)\b|\bwhich (?:date|day|year|month)\b",
    re.IGNORECASE,
)
# A quantity: a number (Arabic or Chinese numerals, 万/亿 and 多/余 allowed: 170多个, 3万余人)
# with a measure word or a unit after it, or a percentage. A date or a time (4日, 3月, 8时) is
# not a quantity.
_NUMERAL = r"(?:[0-9][0-9,，.]*|[零〇一二两三四五六七八九十百千]+)(?:\s*[多余来])?(?:\s*[万亿千百]+)?(?:\s*[多余])?"
_MEASURE = (
    r"平方公里|平方千米|平方米|公顷|公里|公斤|千克|千米|毫米|厘米|公分|公厘|毫升|小时|分钟|钟头|美元|日元|日圆|港元|欧元|英镑|"
    r"[个名位人次天周岁种项家所条件例批轮支台辆架吨倍成管份张间床剂针层场只头米元克座栋遍亩升度万亿]|"
    r"(?:km|cm|mm|kg|m)\b"
)
# A span of years (多少年, 几年): 7年, 一百多年, 2,400万年; not a calendar year (1995年).
_YEARS = re.compile(f"(?P<n>{_NUMERAL})\\s*个?年(?!代)")
_CALENDAR_YEAR = re.compile(r"(?:1[0-9]|20)[0-9]{2}")
# Without a measure (多大, 多久, 比例, how many): any figure that is not a date or a time (4日, 8时),
# a fraction (五分之一) included.
_FIGURE = re.compile(f"[0-9][0-9,.]*(?![0-9,.]*\\s*[年月日号时点])|分之|{_NUMERAL}\\s*(?:{_MEASURE})")
_NUMBER = re.compile(f"{_NUMERAL}\\s*(?P<unit>{_MEASURE})|[0-9.]+\\s*[%％]|百分之[零〇一二三四五六七八九十百点]+")
_DATE = re.compile(
    r"[0-9]{4}\s*年|[0-9一二三四五六七八九十]{1,3}\s*月\s*[0-9一二三四五六七八九十]{0,3}\s*[日号]?|"
    r"[0-9]{1,2}\s*[日号]|[0-9]{4}[-/.][0-9]{1,2}|[0-9]{1,2}\s*[时点]|"
    r"今天|昨天|明天|今年|去年|明年|上午|下午|凌晨|春节|除夕|初[一二三四五六七八九十]|"
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|december)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Asked:
    """What a question asks for: a kind and, when the question says, what it is counted or dated
    in: the measure words of a quantity (多少张床位 → 张 or 床), 年 for a date that is a year
    (哪一年), 日 for one that is a day (哪一天). Empty when the question says no more (多少,
    how many, 什么时候)."""

    kind: AnswerType
    measures: tuple[str, ...] = ()
    counted: str | None = None  # what a quantity counts, when named after its measure: 几名药剂师 → 药剂师
    ordinal: bool = False  # 第几名, 第几张: the answer is an ordinal (第3名)

    @property
    def checkable(self) -> bool:
        """Whether a text can be checked for an answer of this kind: a quantity, a year or a day.
        An open date question (什么时候, when) is answered by eras and seasons as often as by dates."""
        return self.kind == "quantity" or (self.kind == "date" and bool(self.measures))


ANY = Asked("any")


def asked(question: str) -> Asked:
    """The kind of answer `question` asks for: the question word that comes first (How long …
    when …? asks a quantity), a date on a tie (几月几号 is a date)."""
    q = fold(question)
    date, quantity = _DATE_QUESTION.search(q), _QUANTITY_QUESTION.search(q)
    if date and (quantity is None or date.start() <= quantity.start()):
        return Asked("date", ("年",) if _YEAR_QUESTION.search(q) else ("日",) if _DAY_QUESTION.search(q) else ())
    if quantity is None:
        return Asked("any")
    m = _ASKED_MEASURE.search(q)
    if m is not None:
        if m.group(2):
            return Asked("quantity", _KINDRED["%"])
        ordinal = q[max(0, m.start() - 1) : m.start()] == "第"
        return Asked("quantity", _KINDRED[m.group(1)], leading_noun(q[m.end() :]), ordinal)
    noun = _COUNTED_NOUN.search(q)
    return Asked("quantity", _COUNTED[noun.group(1)] if noun else ())


def holds_type(text: str, kind: AnswerType | Asked) -> bool:
    """Whether `text` holds an answer of the kind asked (always True for "any"); with an `Asked`
    that names measures, a quantity counted in one of them."""
    a = kind if isinstance(kind, Asked) else Asked(kind)
    if a.kind == "any":
        return True
    t = fold(text)
    if a.kind == "date":
        return bool({"年": _YEAR, "日": _DAY}.get(a.measures[0] if a.measures else "", _DATE).search(t))
    if not a.measures:
        return bool(_FIGURE.search(t))
    if "年" in a.measures and any(not _CALENDAR_YEAR.fullmatch(m.group("n").strip()) for m in _YEARS.finditer(t)):
        return True
    for m in _NUMBER.finditer(t):
        if t[max(0, m.start() - 1) : m.start()] == "第" and not a.ordinal:  # 第3次 is no count
            continue
        if m.group("unit") is None or m.group("unit") == "成":  # 90%, 百分之九十, 七成
            if "%" in a.measures:
                return True
        elif t.startswith(a.measures, m.start("unit")) or _people_in_myriads(m, a):  # 3个小时, 2566.5万人
            return True
    return False


def _people_in_myriads(m: re.Match[str], a: Asked) -> bool:
    """人口3400万: a count of people given in 万 or 亿 alone."""
    return m.group("unit") in ("万", "亿") and a.measures[0] in ("人", "名", "位", "例")


def names_counted(text: str, kind: Asked) -> bool:
    """Whether `text` names what the question counts (药剂师 for 几名药剂师; True when it names
    nothing): a passage that counts the team's doctors and nurses does not count its pharmacists."""
    return kind.counted is None or kind.counted in re.sub(r"\s+", "", fold(text))
