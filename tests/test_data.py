import json

import pytest

from lmshrink.core import LmshrinkError
from lmshrink.data import load_texts, make_calibration, pydoc_texts
from tiny import tiny_tokenizer


def test_pydoc_split_is_disjoint_and_complete():
    from pydoc_data.topics import topics

    split = pydoc_texts()
    assert not set(split.calibration) & set(split.evaluation)
    assert sorted(split.calibration + split.evaluation) == sorted(topics.values())
    held = sum(map(len, split.evaluation)) / sum(map(len, topics.values()))
    assert 0.15 < held < 0.35


def test_calibration_windows_do_not_overlap_and_reproduce():
    tok = tiny_tokenizer()
    split = pydoc_texts()
    a = make_calibration(tok, split, samples=16, seq_len=64, seed=3)
    b = make_calibration(tok, split, samples=16, seq_len=64, seed=3)
    assert a.input_ids.shape == (16, 64) and a.fingerprint() == b.fingerprint()
    rows = {tuple(r.tolist()) for r in a.input_ids}
    assert len(rows) == 16
    with pytest.raises(LmshrinkError, match="Lower --samples"):
        make_calibration(tok, split, samples=10**6, seq_len=64)


def test_local_files(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"document number {i} " * 20}) for i in range(10)))
    split = load_texts(str(jsonl))
    assert len(split.calibration) + len(split.evaluation) == 10 and split.evaluation
    txt = tmp_path / "one.txt"
    txt.write_text("abcdefghij" * 100)
    one = load_texts(str(txt))
    assert "".join(one.calibration) + "".join(one.evaluation) == "abcdefghij" * 100
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(LmshrinkError, match="bad.jsonl:1 has no 'text' field"):
        load_texts(str(bad))
    with pytest.raises(LmshrinkError, match="No such file"):
        load_texts(str(tmp_path / "missing.txt"))


def test_binary_files_are_refused_in_one_sentence(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("plain text " * 50)
    (folder / "b.txt").write_bytes(b"caf\xe9 au lait")  # Latin-1, not UTF-8
    with pytest.raises(LmshrinkError, match=r"b\.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        load_texts(str(folder))
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"text": "x"}\n\x00\x00\x00\n')
    with pytest.raises(LmshrinkError, match=r"rows\.jsonl holds NUL bytes: a binary file, not text"):
        load_texts(str(rows))
