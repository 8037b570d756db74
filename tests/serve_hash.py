"""`python -m tests.serve_hash --docs D --index I --port P`: what `qa serve` runs (`python -m ui`),
with the test hash encoder standing in for the embedding model, so that a test can start real
chat server processes over an index built with that encoder (tests/test_milvus.py)."""

from __future__ import annotations

import sys
from typing import Any

import qa.embed
import qa.index
import qa.search
from tests.fakes import HashEncoder


def _encoder(*args: Any, **kwargs: Any) -> HashEncoder:
    return HashEncoder()


for _module in (qa.embed, qa.index, qa.search):
    _module.make_encoder = _encoder  # type: ignore[attr-defined,misc,assignment]

import ui.app  # noqa: E402 - after the encoder is replaced

ui.app.make_encoder = _encoder  # type: ignore[misc,assignment]

from ui.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
