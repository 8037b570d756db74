"""Build progress in the chat: each stage's Chinese label and its share of one progress bar, with
speed and time left for the stages that count items (embedding, OCR)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import gradio as gr

from qa.progress import Stage

# Each stage's label and the share of the progress bar it spans.
_STAGES: dict[Stage, tuple[str, float, float]] = {
    Stage.READ: ("读取文档", 0.05, 0.15),
    Stage.OCR: ("文字识别（OCR）", 0.05, 0.05),  # inside reading a file: the bar holds where reading is
    Stage.SPLIT: ("切分段落", 0.15, 0.25),
    Stage.MODEL: ("加载模型", 0.25, 0.3),
    Stage.EMBED: ("向量化新段落", 0.3, 0.85),
    Stage.KEYWORDS: ("建立关键词索引", 0.85, 0.9),
    Stage.WRITE: ("写入索引", 0.9, 0.95),
    Stage.LOAD: ("加载新索引", 0.95, 1.0),
}


# The stages that count items, and how their label names them.
_COUNTED = {
    Stage.EMBED: ("向量化新文本单元 {done}/{total}", "个"),
    Stage.OCR: ("文字识别（OCR）第 {done}/{total} 页", "页"),
}


def stage_progress(stage: Stage, done: int, total: int, seconds: float | None = None) -> tuple[str, float]:
    """A build event in Chinese, and how far along the whole update is (0..1). `seconds`: how long
    the stage has run (embedding, OCR), for its speed and the time left."""
    label, lo, hi = _STAGES[stage]
    if stage in _COUNTED and total:
        text, unit = _COUNTED[stage]
        label = text.format(done=done, total=total)
        if seconds and seconds > 0 and 0 < done < total:
            rate = done / seconds
            label += f"，每秒 {rate:.1f} {unit}，约剩 {_duration((total - done) / rate)}"
    return label, lo + (hi - lo) * (done / total if total else 1.0)


def _duration(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    return f"{seconds} 秒" if seconds < 60 else f"{seconds // 60} 分 {seconds % 60} 秒"


def _reporter(progress: gr.Progress) -> Callable[[Stage, int, int], None]:
    """Build events shown on a Gradio progress bar."""
    started: dict[Stage, float] = {}
    shown = [0.0]

    def report(stage: Stage, done: int, total: int) -> None:
        if done == 0 or stage not in started:  # OCR starts again with each file
            started[stage] = time.monotonic()
        seconds = time.monotonic() - started[stage]
        label, share = stage_progress(stage, done, total, seconds)
        share = shown[0] = max(shown[0], share)  # OCR happens inside reading: the bar never goes back
        progress(share, desc=label)

    return report
