"""English prose of other domains than the pydoc topics, from the fortune collection (``apt-get install fortunes``).

    python benchmarks/svd/prose_text.py OUT_DIR

writes three JSON-lines files of documents (``{"text": ...}``), each document a run of consecutive entries of one
fortune file (entries are separated by lines holding ``%``):

- ``prose.jsonl``: the calibration categories (:data:`CALIBRATION`);
- ``mix.jsonl``: the pydoc topics' calibration split and ``prose.jsonl``'s documents, interleaved;
- ``prose-heldout.jsonl``: other categories (:data:`HELDOUT`), never used for calibration: a second held-out text.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
CALIBRATION = ("people", "politics", "science", "work", "men-women", "humorists", "wisdom", "miscellaneous")
HELDOUT = ("songs-poems", "literature", "law", "education", "food", "sports", "love")
#: entries joined into one document
PER_DOCUMENT = 20


def entries(category: str) -> list[str]:
    """The entries of one fortune file, overstriking (char + backspace) removed."""
    text = (FORTUNES / category).read_text(encoding="utf-8", errors="replace")
    text = re.sub(r".\x08", "", text)
    return [e.strip() for e in re.split(r"^%\s*$", text, flags=re.M) if e.strip()]


def documents(categories: tuple[str, ...]) -> list[str]:
    docs = []
    for c in categories:
        e = entries(c)
        docs += ["\n\n".join(e[i : i + PER_DOCUMENT]) for i in range(0, len(e), PER_DOCUMENT)]
    return docs


def write(path: Path, docs: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    if not FORTUNES.is_dir():
        raise SystemExit(f"{FORTUNES} is missing: apt-get install -y fortunes")

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from lmshrink.data import pydoc_texts

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    prose = documents(CALIBRATION)
    pydoc = list(pydoc_texts().calibration)
    mixed = [d for pair in zip(pydoc, prose) for d in pair] + pydoc[len(prose):] + prose[len(pydoc):]
    write(out / "prose.jsonl", prose)
    write(out / "mix.jsonl", mixed)
    write(out / "prose-heldout.jsonl", documents(HELDOUT))
    for name in ("prose.jsonl", "mix.jsonl", "prose-heldout.jsonl"):
        print(f"{out / name}: {(out / name).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
