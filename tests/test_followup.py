"""qa/followup.py: which second turns are searched with the previous question, and how."""

from __future__ import annotations

import pytest

from qa.followup import MAX_PRONOUN_CHARS, has_own_words, is_followup, with_context
from qa.fusion import rrf_merge
from qa.search import Retriever

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


def test_only_followups_with_words_of_their_own_are_also_searched_alone() -> None:
    assert has_own_words("那上海呢？") and has_own_words("他当时住院多久？")
    assert not has_own_words("为什么？") and not has_own_words("具体有哪些？") and not has_own_words("what else?")


def test_rrf_merge_puts_what_both_rank_well_first_and_keeps_each_lists_best() -> None:
    with_ctx = ["previous-answer", "both", "c3", "c4", "c5"]
    alone = ["own-answer", "a2", "a3", "both", "a5"]
    fused = rrf_merge([with_ctx, alone], 4)
    assert [pid for pid, _ in fused] == ["both", "previous-answer", "own-answer", "a2"]
    assert [source for _, source in fused] == [0, 0, 1, 1]  # "both" from the list that ranked it higher


def test_a_followup_with_its_own_words_finds_what_they_name(hash_index) -> None:
    """The previous question must not drown the follow-up's own words: what the follow-up
    alone ranks first is among the fused hits, and the reply still says how it was read."""
    from tests.fakes import HashEncoder

    retriever = Retriever.load(hash_index, encoder=HashEncoder(), check_stale=False)
    previous = "上海全市核酸筛查采样了多少人？已完成检测多少管？其余样本还在检测之中吗？"  # many words of its own
    question = "那温杯烫盏呢？"
    alone = retriever.search(question, k=5).hits[0].id
    result = retriever.search(question, k=5, context=previous)
    assert result.interpreted_as == f"{previous} 温杯烫盏？"
    assert alone in [h.id for h in result.hits]
    assert retriever.search("为什么？", k=5, context=previous).interpreted_as  # bare: context only
