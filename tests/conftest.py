import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Measurement caches go to a per-session temp folder; the converted default model stays shared."""
    if "LMSHRINK_TEST_CACHE" not in os.environ:
        os.environ["LMSHRINK_TEST_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("LMSHRINK_CACHE", os.environ["LMSHRINK_TEST_CACHE"])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny import save_tiny_llama_dir

    return save_tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    from tiny import tiny_text

    path = tmp_path_factory.mktemp("text") / "docs.txt"
    path.write_text(tiny_text())
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny-model tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny matrices gain nothing from threads, and on a busy machine the thread pool makes them much slower."""
    from lmshrink.testing import single_thread

    with single_thread():
        yield
