"""qa/followup.py: which second turns are searched with the previous question, and how."""

from __future__ import annotations

import pytest

from qa.followup import MAX_PRONOUN_CHARS, is_followup, with_context

PREVIOUS = "天津组织部门在疫情防控中制定了什么机制？"


@pytest.mark.parametrize(
    "question",
    [
        "那上海呢？",
        "为什么？",
        "具体都有哪些？",
        "当年援鄂的呢？",
        "那已经检测完的有多少管？",
        # a pronoun-led question longer than MAX_FOLLOWUP_CHARS still points back
        "他以前自己得过新冠吗？当时住院多久？",
        "这些措施后来是怎么落实到社区里的？",
        # 哪些/哪个 open a question about the previous turn's subject
        "哪些地方还没有？",
        "哪个科室的医生最多？",
        # bare follow-ups
        "还有呢？",
        "what else?",
        "why is that?",
        # English
        "what about Wuhan?",
        "why?",
        "and Beijing?",
        "How about the second step?",
        "they came from which hospital?",
    ],
)
def test_elliptical_questions_are_followups(question: str) -> None:
    assert is_followup(question)
    assert with_context(question, PREVIOUS) is not None


@pytest.mark.parametrize(
    "question",
    [
        # full new questions: they name their own subject and are searched alone
        "截至4月5日8时，上海全市一共采样了多少人？",
        "钟南山院士对新冠疫情做出了几个最新判断？",
        # a yes/no question (…吗) or one ending with 什么 is not elliptical for that alone
        "上海封控了吗？",
        "动态清零的精髓是什么？",
        # how/why/which open most full English questions
        "How many people were on the team sent to Shanghai?",
        "Why is Omicron not just a big flu?",
        # a pronoun-led question longer than MAX_PRONOUN_CHARS carries its own subject
        "这次上海疫情中，15个省份一共派出了多少医务人员去支援上海的核酸检测？",
        "",
        "   ",
    ],
)
def test_full_questions_are_not_followups(question: str) -> None:
    assert not is_followup(question)
    assert with_context(question, PREVIOUS) is None


def test_the_pronoun_limit_counts_characters() -> None:
    short = "他" + "们" * (MAX_PRONOUN_CHARS - 2) + "？"
    assert is_followup(short)
    assert not is_followup("他" + "们" * MAX_PRONOUN_CHARS + "？")


def test_with_context_drops_the_discourse_particles() -> None:
    assert with_context("那北京呢？", PREVIOUS) == f"{PREVIOUS} 北京？"
    assert with_context("那么为什么这么说？", "梁万年怎么看？") == "梁万年怎么看？ 为什么这么说？"


def test_with_context_keeps_a_question_that_is_all_particles() -> None:
    assert with_context("还有呢？", PREVIOUS) == f"{PREVIOUS} 还有呢？"


def test_no_previous_question_means_no_context() -> None:
    assert with_context("那上海呢？", None) is None
    assert with_context("那上海呢？", "  ") is None


def test_width_and_spaces_do_not_matter() -> None:
    assert is_followup("  那上海呢?  ")
    assert is_followup("ＷＨＹ？")
