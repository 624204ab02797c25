"""Calibration and evaluation text: the embedded default, named texts of other domains, local files, or a Hugging
Face dataset.

The embedded default is the Python documentation that ships with CPython (``pydoc_data.topics``). Its topics are
split, by a fixed rule, into a calibration part and a disjoint held-out evaluation part.

Named texts of other domains (:data:`NAMED_TEXTS`) come from Debian's ``fortunes`` package (``apt-get install
fortunes``: about 2.5 MB of English quotations, anecdotes and verse in topic files, entries separated by ``%`` lines):

- ``prose``: English prose of everyday topics (people, work, politics, science, law, …), split like pydoc;
- ``mix``: pydoc's calibration part and as many characters of ``prose``'s, interleaved document by document, so
  calibration sees two domains; its evaluation part is pydoc's (the same held-out tokens as the default);
- ``literature``: literary quotations and verse (topic files no other named text reads), for held-out
  evaluation on a domain that no named calibration text uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import numpy as np
import torch

from .core.errors import LmshrinkError, did_you_mean

DEFAULT_DATA = "pydoc"
#: where Debian's ``fortunes`` package puts its topic files
FORTUNES_DIR = Path("/usr/share/games/fortunes")
#: topic files of the ``prose`` text: everyday English, no computing jargon
PROSE_TOPICS = ("art", "definitions", "education", "food", "humorists", "kids", "law", "love", "medicine",
                "men-women", "miscellaneous", "news", "people", "pets", "platitudes", "politics", "science",
                "sports", "wisdom", "work")
#: topic files of the ``literature`` text, read by no other named text
LITERATURE_TOPICS = ("literature", "songs-poems", "tao")
#: fortune entries per document (a document is the unit :func:`holdout` assigns to one side)
ENTRIES_PER_DOCUMENT = 16
#: share of the characters held out for evaluation
EVAL_FRACTION = 0.2


class TokenWindows:
    """Sizes of a holder of ``input_ids``, token ids of shape (windows, seq_len)."""

    input_ids: Any

    @property
    def num_windows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def tokens(self) -> int:
        """Tokens in all the windows (windows × seq_len)."""
        return int(self.input_ids.numel())


@dataclass
class TextSplit:
    """Raw calibration and evaluation texts and where they came from."""

    calibration: list[str]
    evaluation: list[str]
    source: str


@dataclass
class Calibration(TokenWindows):
    """``input_ids`` (a LongTensor of shape (samples, seq_len)) and a description of the source."""

    input_ids: Any
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    #: disjoint held-back windows of the same calibration text, for choosing between candidates (see
    #: :func:`make_calibration`'s ``validation``); None when none were drawn
    validation: Calibration | None = None

    @property
    def num_samples(self) -> int:
        return self.num_windows

    def fingerprint(self) -> str:
        """A short hash of the token ids, for caches keyed on the calibration data."""
        arr = self.input_ids.detach().cpu().numpy().astype(np.int64)
        return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]

    def subset(self, n: int) -> Calibration:
        """The first ``n`` samples (the validation windows stay as they are)."""
        return Calibration(self.input_ids[:n], self.source, dict(self.info, samples=min(n, self.num_samples)),
                           self.validation)


def holdout(texts: list[str]) -> tuple[list[str], list[str]]:
    """Split whole documents, in order, into calibration and evaluation parts.

    Walking the documents in order, one goes to evaluation whenever the evaluation part holds less than
    ``EVAL_FRACTION`` of the characters seen so far: about a fifth of the text, spread over the whole collection,
    and no document in both parts.
    """
    calib, held = [], []
    seen = held_chars = 0
    for t in texts:
        seen += len(t)
        if held_chars < EVAL_FRACTION * seen and calib:
            held.append(t)
            held_chars += len(t)
        else:
            calib.append(t)
    return calib, held


def pydoc_texts() -> TextSplit:
    """CPython's own documentation topics (sorted by name), split disjointly by :func:`holdout`."""
    calib, held = holdout([topics[k] for k in sorted(topics)])
    return TextSplit(calib, held, f"pydoc_data.topics ({len(calib)} calibration / {len(held)} evaluation topics)")


def fortune_documents(topics: tuple[str, ...], directory: Path | None = None) -> list[str]:
    """The entries of Debian's fortune ``topics`` (files of entries separated by ``%`` lines), in topic and file
    order, joined :data:`ENTRIES_PER_DOCUMENT` at a time into documents; one sentence when the package is absent."""
    directory = FORTUNES_DIR if directory is None else Path(directory)
    missing = [t for t in topics if not (directory / t).is_file()]
    if missing:
        raise LmshrinkError(f"The named English texts read Debian's fortunes package, and {directory / missing[0]} "
                            "is missing: apt-get install fortunes (or give --data FILE).")
    docs: list[str] = []
    for topic in topics:
        text = (directory / topic).read_text(encoding="utf-8", errors="replace")
        entries = [e.strip("\n") for e in text.split("\n%\n") if e.strip() and e.strip() != "%"]
        for k in range(0, len(entries), ENTRIES_PER_DOCUMENT):
            docs.append("\n\n".join(entries[k:k + ENTRIES_PER_DOCUMENT]))
    return docs


def prose_texts(directory: Path | None = None) -> TextSplit:
    """English prose of everyday topics (:data:`PROSE_TOPICS`), split disjointly by :func:`holdout`."""
    calib, held = holdout(fortune_documents(PROSE_TOPICS, directory))
    return TextSplit(calib, held, f"fortunes prose ({len(calib)} calibration / {len(held)} evaluation documents)")


def literature_texts(directory: Path | None = None) -> TextSplit:
    """Literary quotations and verse (:data:`LITERATURE_TOPICS`), split disjointly by :func:`holdout`; its
    evaluation part is the held-out text of a domain that no named calibration text reads."""
    calib, held = holdout(fortune_documents(LITERATURE_TOPICS, directory))
    return TextSplit(calib, held, f"fortunes literature ({len(calib)} calibration / {len(held)} evaluation "
                                  "documents)")


def mixed_texts(directory: Path | None = None) -> TextSplit:
    """pydoc's calibration part and ``prose``'s, the same number of characters of each, interleaved document by
    document; the evaluation part is pydoc's, so held-out figures stay comparable with the default's."""
    pydoc, prose = pydoc_texts(), prose_texts(directory)
    budget = sum(len(t) for t in pydoc.calibration)
    taken, used = [], 0
    for t in prose.calibration:
        if used >= budget:
            break
        taken.append(t)
        used += len(t)
    # interleave in proportion, so any prefix of the text (and any window draw) holds both domains
    mixed, a, b = [], list(pydoc.calibration), list(taken)
    ratio = len(b) / max(len(a), 1)
    j = 0.0
    for t in a:
        mixed.append(t)
        j += ratio
        while b and j >= 1:
            mixed.append(b.pop(0))
            j -= 1
    mixed.extend(b)
    return TextSplit(mixed, list(pydoc.evaluation),
                     f"pydoc + fortunes prose ({len(pydoc.calibration)} + {len(taken)} calibration documents, "
                     f"{used:,} prose characters; evaluation: pydoc's {len(pydoc.evaluation)} topics)")


#: texts known by name (``--data NAME``): the default, and the English texts of :func:`fortune_documents`
NAMED_TEXTS = {"pydoc": pydoc_texts, "prose": prose_texts, "mix": mixed_texts, "literature": literature_texts}


def default_calibration(directory: Path | None = None) -> str:
    """The text a run calibrates on when none is named: ``mix`` (pydoc and English prose, two domains) when
    Debian's fortunes package provides the prose, else ``pydoc``.

    Linear healing and SVD factors fitted on one domain help mostly there: with the default removal of 6 layers
    of the embedded default, maps fitted on ``mix`` instead of ``pydoc`` gave 19% lower perplexity on
    ``literature`` (a domain neither reads) for 4% higher on pydoc's held-out split, over three seeds
    (``benchmarks/reference/travel``; docs: "Calibration and held-out texts").
    """
    directory = FORTUNES_DIR if directory is None else Path(directory)
    return "mix" if all((directory / t).is_file() for t in PROSE_TOPICS) else DEFAULT_DATA


def _read_local(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl", ".md"))
        return [t for f in files for t in _read_local(f)]
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LmshrinkError(f"{path}:{n} is not valid JSON: {exc}") from exc
            if not isinstance(row, dict) or "text" not in row:
                raise LmshrinkError(f"{path}:{n} has no 'text' field.")
            texts.append(str(row["text"]))
        return texts
    return [_read_text(path)]


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a binary file (undecodable, or holding NUL bytes) is refused."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LmshrinkError(f"--data {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                            "give .txt or .jsonl text files.") from None
    if "\x00" in text:
        raise LmshrinkError(f"--data {path} holds NUL bytes: a binary file, not text; give .txt or .jsonl text files.")
    return text


def _split(texts: list[str], source: str) -> TextSplit:
    """Hold out about a fifth of the documents (:func:`holdout`); fewer than 5 are joined and cut at 80%."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise LmshrinkError(f"No text found in {source}.")
    if len(texts) < 5:
        joined = "\n\n".join(texts)
        cut = int(len(joined) * (1 - EVAL_FRACTION))
        return TextSplit([joined[:cut]], [joined[cut:]], f"{source} (first 80% calibration / last 20% evaluation)")
    calib, held = holdout(texts)
    return TextSplit(calib, held, f"{source} ({len(calib)} calibration / {len(held)} evaluation documents)")


def load_texts(data: str | list[str] | None = None) -> TextSplit:
    """Texts from ``data``: None or "pydoc" for the embedded default, a name of :data:`NAMED_TEXTS` (``prose``,
    ``mix``, ``literature``), local .txt/.jsonl files or folders, or a Hugging Face dataset name (``name``,
    ``name:config`` or ``name:config:split``) with a ``text`` column. A local path shadows a name."""
    if data is None or data == DEFAULT_DATA:
        return pydoc_texts()
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, str) and data in NAMED_TEXTS and not Path(data).exists():
        return NAMED_TEXTS[data]()
    paths = [data] if isinstance(data, str) else list(data)
    local = [Path(p) for p in paths if Path(p).exists()]
    if local and len(local) == len(paths):
        texts = [t for p in local for t in _read_local(p)]
        return _split(texts, ", ".join(str(p) for p in local))
    if len(paths) != 1:
        missing = [p for p in paths if not Path(p).exists()]
        raise LmshrinkError(f"No such file: {missing[0]}")
    hint = did_you_mean(paths[0], [DEFAULT_DATA, *NAMED_TEXTS]) if "/" not in paths[0] and ":" not in paths[0] else ""
    if hint:  # a misspelled named text, not a dataset to look for on the hub
        raise LmshrinkError(f"Unknown text {paths[0]!r}.{hint} Named texts: {', '.join(NAMED_TEXTS)}; or give "
                            "local files, or a Hugging Face dataset.")
    return _hf_texts(paths[0])


def _hf_texts(spec: str) -> TextSplit:
    if spec.endswith((".txt", ".jsonl")):
        raise LmshrinkError(f"No such file: {spec}")
    try:
        import datasets
    except ImportError as exc:
        raise LmshrinkError(
            f"{spec!r} is not a local file; reading it as a Hugging Face dataset needs: pip install datasets"
        ) from exc
    name, _, rest = spec.partition(":")
    config, _, split = rest.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise LmshrinkError(f"Could not load dataset {spec!r}: {exc}") from exc
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    return _split([str(t) for t in ds[column]], f"dataset {spec}")


def tokenize_texts(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Token ids of the texts joined by the end-of-sequence token."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        ids.append(sep)
    return np.asarray(ids, dtype=np.int64)


def make_calibration(tokenizer: Any, texts: TextSplit, samples: int, seq_len: int, seed: int = 0,
                     validation: int = 0) -> Calibration:
    """``samples`` windows of ``seq_len`` tokens drawn without overlap from the calibration texts, and
    ``validation`` more windows, disjoint from those, in ``.validation``.

    The validation windows are what candidates are compared on after an objective built on the samples proposed
    them, so the choice is not biased by the objective's own noise. The samples for a seed do not depend on
    ``validation``.
    """
    ids = tokenize_texts(tokenizer, texts.calibration)
    windows = len(ids) // seq_len
    if windows < samples + validation:
        asked = f"{samples} samples" + (f" and {validation} validation windows" if validation else "")
        raise LmshrinkError(
            f"The calibration text has {len(ids):,} tokens: {windows} windows of {seq_len}, fewer than the "
            f"{asked} asked for. Lower --samples or --seq-len, or give more text with --data."
        )
    rng = np.random.default_rng(seed)
    picked = rng.choice(windows, size=samples, replace=False)
    starts = np.sort(picked) * seq_len
    batch = np.stack([ids[s : s + seq_len] for s in starts])
    info = {"samples": samples, "seq_len": seq_len, "seed": seed, "tokens_available": int(len(ids))}
    held = None
    if validation:
        rest = np.setdiff1d(np.arange(windows), picked)
        chosen = np.sort(np.random.default_rng([seed, 1]).choice(rest, size=validation, replace=False)) * seq_len
        held = Calibration(torch.from_numpy(np.stack([ids[s : s + seq_len] for s in chosen])), texts.source,
                           {"samples": validation, "seq_len": seq_len, "seed": seed, "role": "validation"})
    return Calibration(torch.from_numpy(batch), texts.source, info, held)


def evaluation_ids(tokenizer: Any, texts: TextSplit, max_tokens: int) -> Any:
    """The first ``max_tokens`` token ids of the held-out evaluation texts, as a 1-D LongTensor."""
    ids = tokenize_texts(tokenizer, texts.evaluation)[:max_tokens]
    return torch.from_numpy(ids)
