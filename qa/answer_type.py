"""What kind of answer a question asks for, and whether a text holds one of that kind.

A question that asks 多少/几/how many wants a quantity; 哪一天/什么时候/when wants a date or a
time. The evidence sentence that a reply shows as 答： must hold an answer of that kind: among
sentences that match the question alike, one with a number beats one without (上海全市核酸
筛查一共采样了多少人？ → the sentence with 2566.5万人, not 上海4日启动了全市核酸筛查). Other
questions (谁, 什么, 为什么, how) ask for no kind this module can check: they get "any".

Rules as data, like bm25s's stopword lists; no model.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

AnswerType = Literal["quantity", "date", "any"]

_QUANTITY_QUESTION = re.compile(
    r"多少|几[个名位人次天年月日周岁种项家所条件例批轮支台辆架吨万亿千百十层小分秒点场张份栋座所间床剂针]|"
    r"几成|百分之几|比例|占比|比率|多大|多高|多长|多久|多远|多重|"
    r"\bhow (?:many|much|long|far|often|old)\b|\bwhat (?:percentage|proportion|share|number)\b",
    re.IGNORECASE,
)
_DATE_QUESTION = re.compile(
    r"哪一?天|哪一?年|哪个月|几月|几号|几日|何时|什么时候|什么时间|哪个时候|何年|日期|"
    r"\bwhen\b|\bwhat (?:date|day|year|month|time)\b|\bwhich (?:date|day|year|month)\b",
    re.IGNORECASE,
)
# A quantity: a number (Arabic or Chinese numerals, 万/亿 allowed) with a measure word or a unit
# after it, or a percentage. A date or a time (4日, 3月, 8时) is not a quantity.
_NUMERAL = r"(?:[0-9][0-9,，.]*|[零〇一二两三四五六七八九十百千]+)(?:\s*[万亿千百])?"
_MEASURE = (
    r"[个名位人次天周岁种项家所条件例批轮支台辆架吨倍成管份张间床剂针层场只头米元克]|公里|公斤|千克|小时|分钟|万|亿"
)
_NUMBER = re.compile(f"{_NUMERAL}\\s*(?:{_MEASURE})|[0-9.]+\\s*[%％]|百分之[零〇一二三四五六七八九十百点]+")
_DATE = re.compile(
    r"[0-9]{4}\s*年|[0-9一二三四五六七八九十]{1,3}\s*月\s*[0-9一二三四五六七八九十]{0,3}\s*[日号]?|"
    r"[0-9]{1,2}\s*[日号]|[0-9]{4}[-/.][0-9]{1,2}|[0-9]{1,2}\s*[时点]|"
    r"今天|昨天|明天|今年|去年|明年|上午|下午|凌晨|春节|除夕|初[一二三四五六七八九十]|"
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|december)\b",
    re.IGNORECASE,
)


def asked_type(question: str) -> AnswerType:
    """The kind of answer `question` asks for: a date is checked first (几月几号 is a date)."""
    q = unicodedata.normalize("NFKC", question)
    if _DATE_QUESTION.search(q):
        return "date"
    if _QUANTITY_QUESTION.search(q):
        return "quantity"
    return "any"


def holds_type(text: str, kind: AnswerType) -> bool:
    """Whether `text` holds an answer of `kind` (always True for "any")."""
    if kind == "any":
        return True
    t = unicodedata.normalize("NFKC", text)
    return bool((_DATE if kind == "date" else _NUMBER).search(t))
