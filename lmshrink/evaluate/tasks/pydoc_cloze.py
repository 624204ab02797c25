"""Loader of the local lm-eval task ``lmshrink_pydoc_cloze`` (referenced by ``pydoc_cloze.yaml``): reads the
items shipped next to it, so the task needs no network and no dataset download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ITEMS = Path(__file__).with_name("pydoc_cloze.jsonl")


def load(**kwargs: Any) -> dict[str, Any]:
    """``{"test": datasets.Dataset}`` of the items (lm-eval passes the task metadata as keyword arguments)."""
    import datasets

    rows = [json.loads(line) for line in ITEMS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"test": datasets.Dataset.from_list(rows)}
