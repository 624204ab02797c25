"""Named texts of other domains (prose, mix, literature) from fortune topic files."""

from __future__ import annotations

import pytest

from lmshrink import data
from lmshrink.core import LmshrinkError


def _fake_fortunes(tmp_path, topics, entries=40):
    for topic in topics:
        body = "\n%\n".join(f"{topic} fortunemarker {k}: a sentence of plain English." for k in range(entries))
        (tmp_path / topic).write_text(body + "\n%\n")
    return tmp_path


def test_fortune_documents_group_entries_and_keep_order(tmp_path):
    d = _fake_fortunes(tmp_path, ("a", "b"), entries=20)
    docs = data.fortune_documents(("a", "b"), d)
    # 20 entries per topic, 16 per document: 2 documents per topic
    assert len(docs) == 4
    assert docs[0].split("\n\n")[0] == "a fortunemarker 0: a sentence of plain English."
    assert docs[1].split("\n\n") == [f"a fortunemarker {k}: a sentence of plain English." for k in range(16, 20)]
    assert docs[2].startswith("b fortunemarker 0")


def test_prose_and_literature_read_disjoint_topics(tmp_path):
    d = _fake_fortunes(tmp_path, data.PROSE_TOPICS + data.LITERATURE_TOPICS)
    prose, lit = data.prose_texts(d), data.literature_texts(d)
    assert not set(data.PROSE_TOPICS) & set(data.LITERATURE_TOPICS)
    words = lambda split: {line.split(" fortunemarker")[0] for t in split.calibration + split.evaluation
                           for line in t.split("\n\n")}
    assert words(prose) == set(data.PROSE_TOPICS)
    assert words(lit) == set(data.LITERATURE_TOPICS)
    # held out disjointly, about a fifth of the characters
    assert not set(prose.calibration) & set(prose.evaluation)
    held = sum(map(len, prose.evaluation)) / sum(map(len, prose.calibration + prose.evaluation))
    assert 0.1 < held < 0.3


def test_mix_holds_both_domains_in_equal_shares_and_pydocs_evaluation(tmp_path, monkeypatch):
    d = _fake_fortunes(tmp_path, data.PROSE_TOPICS, entries=400)
    monkeypatch.setattr(data, "FORTUNES_DIR", d)
    mix, pydoc = data.load_texts("mix"), data.pydoc_texts()
    assert mix.evaluation == pydoc.evaluation
    prose_chars = sum(len(t) for t in mix.calibration if " fortunemarker " in t)
    pydoc_chars = sum(len(t) for t in pydoc.calibration)
    assert set(pydoc.calibration) <= set(mix.calibration)
    # prose documents are taken until they reach pydoc's characters: equal within one document
    assert pydoc_chars <= prose_chars < pydoc_chars + 16 * 60
    # interleaved: the first tenth of the documents already holds both domains
    head = mix.calibration[: len(mix.calibration) // 10]
    assert any(" fortunemarker " in t for t in head) and any(" fortunemarker " not in t for t in head)


def test_missing_package_is_one_sentence(tmp_path):
    with pytest.raises(LmshrinkError, match="apt-get install fortunes"):
        data.prose_texts(tmp_path)


def test_a_local_path_shadows_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prose").write_text("local text " * 50)
    assert "prose" in data.load_texts("prose").source and "fortunes" not in data.load_texts("prose").source


@pytest.mark.skipif(not (data.FORTUNES_DIR / "literature").is_file(), reason="Debian's fortunes is not installed")
def test_the_installed_package_gives_the_named_texts():
    for name in ("prose", "mix", "literature"):
        split = data.load_texts(name)
        assert sum(map(len, split.calibration)) > 100_000 and split.evaluation


def test_a_misspelled_name_is_refused_with_the_name_meant_not_looked_up_on_the_hub():
    with pytest.raises(LmshrinkError, match="Unknown text 'literatur'. Did you mean 'literature'"):
        data.load_texts("literatur")


def test_the_default_calibration_mixes_domains_when_the_prose_is_installed(tmp_path, monkeypatch):
    from lmshrink.pipeline.settings import DataSettings

    assert data.default_calibration(tmp_path) == "pydoc"  # no fortunes: the embedded text alone
    d = _fake_fortunes(tmp_path, data.PROSE_TOPICS)
    assert data.default_calibration(d) == "mix"
    monkeypatch.setattr(data, "FORTUNES_DIR", d)
    assert DataSettings().calibration_text() == "mix"
    assert DataSettings(data="prose").calibration_text() == "prose"
    monkeypatch.setattr(data, "FORTUNES_DIR", tmp_path / "absent")
    assert DataSettings().calibration_text() == "pydoc"
