"""Many users at once: concurrent searches give the sequential results, the server answers
every client of a bounded load, and a full queue is an immediate, clear busy answer.

The long variant is `make stress` (bench/load.py, 50 clients × 10 questions); here the counts
are small and every wait is bounded. Nothing here asserts a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from bench.load import load_questions, run_load, sequential
from qa.search import Retriever
from tests.conftest import launched_app, tiny_queue
from tests.fakes import HashEncoder

QUESTIONS = load_questions()
WAIT = 60  # seconds any one request or thread may take before the test fails


def _concurrently(retriever: Retriever, questions: list[str], threads: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(retriever.search, q) for q in questions]
        return [f.result(timeout=WAIT).to_dict() for f in futures]


def test_threads_get_the_sequential_results_from_a_fresh_retriever(hash_index):
    """First use races too: the lazily built unit rows, background scores and keyword arrays."""
    questions = QUESTIONS[:40] * 2
    concurrent = _concurrently(Retriever.load(hash_index, encoder=HashEncoder()), questions, threads=8)
    alone = Retriever.load(hash_index, encoder=HashEncoder())
    assert concurrent == [alone.search(q).to_dict() for q in questions]


@pytest.mark.model
def test_threads_get_the_sequential_results_with_the_real_model(seed_index, real_encoder):
    questions = QUESTIONS[40:56]
    real_encoder._cache.clear()  # every thread runs the model, none reads another's cached vector
    concurrent = _concurrently(Retriever.load(seed_index, encoder=real_encoder), questions, threads=6)
    real_encoder._cache.clear()
    alone = Retriever.load(seed_index, encoder=real_encoder)
    assert concurrent == [alone.search(q).to_dict() for q in questions]


# ---------------------------------------------------------------- the server under load


@pytest.fixture(scope="module")
def server(tmp_path_factory, seed_index, real_encoder) -> Iterator[str]:
    with launched_app(tmp_path_factory.mktemp("load"), seed_index, real_encoder) as app:
        yield app.url


@pytest.mark.model
@pytest.mark.parametrize(("kind", "clients", "per_client"), [("http", 20, 3), ("gradio", 10, 3)])
def test_every_client_is_answered_with_the_sequential_hits(server, kind, clients, per_client):
    """The CI variant of `make stress`, on the real model: no error, no timeout, same hits."""
    questions = QUESTIONS[::-1]  # other tests ask the first ones: start with questions not yet cached
    report = run_load(server, questions, clients=clients, per_client=per_client, kind=kind, timeout=WAIT,
                      deadline=WAIT)  # fmt: skip
    reference = sequential(server, [o.question for o in report.outcomes], timeout=WAIT)
    assert report.unsent == 0 and report.errors == {}, report.summary()
    assert report.answered == clients * per_client
    assert all(o.answer == reference[o.question] for o in report.outcomes), report.summary()


# ---------------------------------------------------------------- a full queue


def _call(url: str, question: str) -> httpx.Response:
    return httpx.post(f"{url}gradio_api/call/search", json={"data": [question, 5, "hybrid", None, None]}, timeout=WAIT)


def _result(url: str, event_id: str) -> str:
    with httpx.stream("GET", f"{url}gradio_api/call/search/{event_id}", timeout=WAIT) as stream:
        return "".join(stream.iter_lines())


def test_a_full_queue_turns_clients_away_at_once_and_the_server_stays_up(hash_index):
    from gradio_client import Client
    from gradio_client.utils import QueueError

    with tiny_queue(hash_index) as (url, encoder):
        running = _call(url, "慢问题一")
        assert encoder.waiting.acquire(timeout=WAIT)  # the first one is in the search now
        waiting = _call(url, "慢问题二")
        assert running.status_code == waiting.status_code == 200
        refused = _call(url, "上海全市核酸筛查采样了多少人")
        assert refused.status_code == 503 and "Queue is full" in refused.json()["detail"]
        client = Client(url, verbose=False, download_files=False, ssl_verify=False)
        with pytest.raises(QueueError, match="Queue is full"):
            client.predict("上海全市核酸筛查采样了多少人", api_name="/search")
        encoder.gate.set()
        for response in (running, waiting):
            assert "event: complete" in _result(url, response.json()["event_id"])
        assert client.predict("上海全市核酸筛查采样了多少人", api_name="/search")["hits"]
        client.close()


def test_the_page_says_busy_in_chinese():
    from ui.scripts import BUSY_JS, BUSY_MESSAGE

    assert "This application is currently busy" in BUSY_JS  # the text Gradio's page shows on HTTP 503
    assert BUSY_MESSAGE.startswith("服务繁忙，请稍后再试") and BUSY_MESSAGE in BUSY_JS
