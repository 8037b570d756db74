"""qa.answer_type: the kind of answer a question asks for, and texts that hold one."""

from __future__ import annotations

import pytest

from qa.answer_type import Asked, asked, holds_type, names_counted


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
        ("篇四讲的抗疫精神分成哪几条", "any"),  # 哪几条 asks which, not how many
        ("How long was he hospitalized when he had COVID-19?", "quantity"),  # the first question word
    ],
)
def test_the_kind_asked(question: str, kind: str) -> None:
    assert asked(question).kind == kind


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


@pytest.mark.parametrize(
    ("question", "measures", "counted"),
    [
        ("武汉六院援沪医疗队里有几名药剂师？", ("名", "人", "位"), "药剂师"),
        ("上海全市核酸筛查一共采样了多少人？", ("人", "名", "位"), None),
        ("火神山医院一共有多少张床位", ("张", "床"), "床位"),
        ("截至2022年全国累计报告接种新冠疫苗多少亿剂次", ("剂次", "剂"), None),
        ("梁万年要求出现疫情以后多少个小时之内完成流调？", ("小时", "个小时", "钟头"), None),  # 之内 is no noun
        ("绥芬河口岸那段时间累计有多少境外输入病例", ("例", "人", "名"), None),  # counted by its noun
        ("当年外贸出口额下降了百分之几？", ("%", "成", "百分之"), None),
        ("国药集团的灭活疫苗保护率是多少", (), None),
        ("How many pharmacists were on the team?", (), None),
    ],
)
def test_the_measure_and_the_thing_counted(question: str, measures: tuple[str, ...], counted: str | None) -> None:
    assert asked(question) == Asked("quantity", measures, counted)


def test_a_quantity_must_be_counted_in_the_measure_asked() -> None:
    people = asked("上海全市核酸筛查一共采样了多少人？")
    assert holds_type("截至4月5日8时，全市共采样2566.5万人、242.7万管。", people)
    assert holds_type("共有3万余人参加", people) and holds_type("由三十名医生组成", people)
    assert not holds_type("四川医疗队返川仅3天", people)  # days do not count people
    assert not holds_type("要把防疫工作放在第一位", people)  # an ordinal is no count
    assert holds_type("170多个国家领导人", asked("有多少个国家"))
    assert holds_type("床位1000张", asked("一共有多少张床位")) and not holds_type("床位1000张", asked("几名"))
    assert holds_type("24个小时内完成", asked("多少个小时"))
    assert holds_type("下降了7.5%", asked("下降了百分之几")) and holds_type("七成", asked("占百分之几"))
    assert not holds_type("召开第3次全体会议", asked("每周举行几场新闻发布会"))


def test_a_year_or_a_day_when_the_question_says_which() -> None:
    assert asked("新冠分级治疗制度是哪一年推行的") == Asked("date", ("年",))
    assert asked("上海是哪一天启动的") == Asked("date", ("日",))
    assert asked("什么时候开始") == Asked("date")
    assert not holds_type("5月21日是首个国际茶日", asked("是在哪一年设立国际茶日的"))
    assert holds_type("2019年设立", asked("是在哪一年设立的"))
    assert not holds_type("2020年武汉疫情中", asked("是哪一天启动的"))
    assert holds_type("上海4日启动", asked("是哪一天启动的"))


def test_the_thing_counted_must_be_named() -> None:
    pharmacists = asked("武汉六院援沪医疗队里有几名药剂师？")
    assert not names_counted("医疗队有4名医生、11名护士", pharmacists)
    assert names_counted("医疗队有2名藥劑師", pharmacists)  # compared folded: traditional characters too
    assert names_counted("任何文字", asked("一共采样了多少人"))  # nothing named, nothing to check


def test_wikipedia_style_answers_are_recognised() -> None:
    """Rules checked on CMRC 2018 trial and DRCD test questions (public training data)."""
    assert holds_type("高英是北魏皇家的第二位皇后", asked("高英是第几位皇后？"))  # 第几 wants an ordinal
    assert holds_type("居俄联邦的63位", asked("位居俄联邦的第几位？"))
    assert asked("南斯拉夫与中华人民共和国建交于西元几年?") == Asked("date", ("年",))
    assert holds_type("至元十一年元军发动第一次侵日战争", asked("第一次侵日战争发生在哪一年？"))
    assert holds_type("生存了近2,400万年", asked("生存了多少年？"))
    assert not holds_type("1995年开始运作", asked("运作了多少年？"))  # a calendar year is no span of years
    assert holds_type("核心保护区约22平方公里", asked("核心保护区有多大？"))  # no measure asked: any figure
    assert not holds_type("2022年3月28日起实施", asked("核心保护区有多大？"))  # but not a date
    assert holds_type("雅魯藏布江流域面積僅占西藏總面積的五分之一", asked("占多少比例"))
    assert holds_type("在香港居住滿七年", asked("必須在香港住滿多少年?"))  # traditional characters folded
    assert holds_type("人口顛峰值則為3400萬", asked("人口巔峰值大約多少人?"))
    assert holds_type("罚款300美元", asked("可罚多少元？"))


def test_only_a_quantity_a_year_or_a_day_is_checked() -> None:
    assert asked("上海全市核酸筛查一共采样了多少人？").checkable
    assert asked("新冠分级治疗制度是哪一年推行的").checkable and asked("是哪一天启动的").checkable
    assert not asked("乡里组织什么时候开始瓦解的？").checkable  # answered by 唐末, 春季化雪的时候
    assert not asked("张文宏医生是哪家医院的？").checkable
