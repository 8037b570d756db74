"""qa.answer_type: the kind of answer a question asks for, and texts that hold one."""

from __future__ import annotations

import pytest

from qa.answer_type import asked_type, holds_type


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("上海全市核酸筛查一共采样了多少人？", "quantity"),
        ("武汉六院援沪医疗队里有几名药剂师？", "quantity"),
        ("How many people were sampled in Shanghai?", "quantity"),
        ("疫苗接种率达到百分之几", "quantity"),
        ("上海是哪一天启动全市核酸筛查的？", "date"),
        ("四川什么时候把一级响应下调为二级", "date"),
        ("When did Shanghai start the city-wide screening?", "date"),
        ("几月几号开始实行", "date"),  # a date, though 几 also asks a number
        ("张文宏医生是哪家医院的？", "any"),
        ("为什么说把奥密克戎当成大号流感还为时过早", "any"),
        ("Who leads the central guidance group?", "any"),
        ("几乎所有人都要戴口罩吗", "any"),  # 几乎 is not 几
    ],
)
def test_the_kind_asked(question: str, kind: str) -> None:
    assert asked_type(question) == kind


def test_texts_that_hold_a_kind() -> None:
    assert holds_type("截至4月5日8时，全市共采样2566.5万人、242.7万管。", "quantity")
    assert holds_type("医疗队由三十名医生组成", "quantity")  # Chinese numerals with a measure word
    assert not holds_type("2022年3月28日起分区分批实施", "quantity")
    assert not holds_type("医疗队里有医生和护士，大家一心一意。", "quantity")  # 一 without a measure word
    assert not holds_type("上海启动了全市核酸筛查。", "quantity")
    assert not holds_type("上海4日启动了全市核酸筛查。", "quantity")  # a date is not a count
    assert holds_type("返川仅3天", "quantity") and holds_type("接种率达到90%", "quantity")
    assert holds_type("上海4日启动了全市核酸筛查。", "date")
    assert holds_type("2022年3月28日起分区分批实施", "date")
    assert not holds_type("要坚持依法防控。", "date")
    assert holds_type("任何文字", "any")
