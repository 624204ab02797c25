"""Generate ``pydoc_cloze.jsonl``, the items of the local lm-eval task ``lmshrink_pydoc_cloze``.

Each item is a prose sentence from CPython's documentation topics (``pydoc_data.topics``) cut in two: the model
reads the first part and picks its true continuation among 4, the 3 others being the endings of other sentences
of about the same length. Only the topics that :func:`lmshrink.data.pydoc_texts` holds out for evaluation are
used (none of its calibration text), so the task is disjoint from the default calibration data.

Run ``python -m lmshrink.evaluate.tasks.make_pydoc_cloze`` to rebuild the file (deterministic for a given
Python version's documentation); the shipped file was built once and is what the task reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np

from lmshrink.data import pydoc_texts

HERE = Path(__file__).parent
OUTPUT = HERE / "pydoc_cloze.jsonl"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Za-z0-9 ,;:'\"()\-.!?/%+*]+$")


def prose_sentences(text: str, min_words: int = 10, max_words: int = 40) -> list[str]:
    """Sentences of plain prose: paragraphs without code or grammar (``>>>``, ``::=``, headings) joined, then
    split at sentence ends."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        if not lines or ">>>" in para or "::=" in para or any(set(l.strip()) <= set("*=-~^") for l in lines):
            continue
        joined = " ".join(l.strip() for l in lines)
        for s in _SENTENCE_END.split(joined):
            s = s.strip()
            words = s.split()
            if min_words <= len(words) <= max_words and s.endswith(".") and _PROSE.match(s) and "::" not in s:
                out.append(s)
    return out


def build_items(texts: list[tuple[str, str]], max_items: int = 500, seed: int = 0) -> list[dict]:
    """Items ``{"id", "topic", "context", "choices", "label"}`` from ``(topic, text)`` pairs."""
    rng = np.random.default_rng(seed)
    pool: list[tuple[str, str, str]] = []  # (topic, context, ending)
    seen: set[str] = set()
    for topic, text in texts:
        for s in prose_sentences(text):
            if s in seen:
                continue
            seen.add(s)
            words = s.split()
            cut = len(words) // 2
            pool.append((topic, " ".join(words[:cut]), " ".join(words[cut:])))
    order = rng.permutation(len(pool))
    lengths = np.array([len(e.split()) for _, _, e in pool])
    items = []
    for k in order:
        topic, context, ending = pool[k]
        near = [j for j in np.flatnonzero(np.abs(lengths - lengths[k]) <= 3) if j != k and pool[j][2] != ending]
        if len(near) < 3:
            continue
        others = [pool[j][2] for j in rng.choice(near, size=3, replace=False)]
        label = int(rng.integers(4))
        choices = others[:label] + [ending] + others[label:]
        items.append({"id": len(items), "topic": topic, "context": context, "choices": choices, "label": label})
        if len(items) == max_items:
            break
    return items


def held_out_topics() -> list[tuple[str, str]]:
    """(name, text) of the pydoc topics that lmshrink's default data split holds out for evaluation."""
    held = set(pydoc_texts().evaluation)
    return [(name, topics[name]) for name in sorted(topics) if topics[name] in held]


def main() -> None:
    items = build_items(held_out_topics())
    with OUTPUT.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    print(f"wrote {len(items)} items to {OUTPUT}")


if __name__ == "__main__":
    main()
