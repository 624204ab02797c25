"""The whole flow on the real embedded default model, SmolLM2-135M-Instruct (about a minute on 2 cores)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lmshrink.core.removal import removal_constraints, with_constraints
from lmshrink.plugins import find_adapter, get_objective, get_solver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from lmshrink.models import load_model

    try:
        return load_model()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"embedded default model unavailable: {exc}")


@pytest.fixture(scope="module")
def fisher_problem(smollm2):
    from lmshrink.data import load_texts, make_calibration

    model = smollm2.model
    adapter = find_adapter(model)
    calib = make_calibration(smollm2.tokenizer, load_texts(), samples=16, seq_len=64, seed=0)
    problem = get_objective("fisher").build(model, adapter, calib, progress=False)
    return with_constraints(problem, removal_constraints(adapter.blocks(model), {None: 6}))


def test_default_model_is_smollm2(smollm2):
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    assert smollm2.model.config.num_hidden_layers == 30
    assert find_adapter(smollm2.model).name == "llama"


def test_anneal_finds_the_proven_optimum_of_the_smollm2_problem(fisher_problem):
    assert fisher_problem.num_variables == 30
    exact = get_solver("exact").solve(fisher_problem, num_solutions=5)
    anneal = get_solver("anneal").solve(fisher_problem, num_solutions=5, seed=0)
    assert exact.info["num_feasible_states"] == 593775  # C(30, 6)
    assert anneal.best.x == exact.best.x
    np.testing.assert_allclose(anneal.energies, exact.energies, rtol=1e-12)


def test_prune_saves_a_model_plain_transformers_reloads(smollm2, tmp_path):
    from lmshrink.pipeline.prune import prune

    result = prune(smollm2, remove=6, samples=16, seq_len=64, rerank=2, eval_tokens=1024, out=tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["removed"]) == 6
    assert report["perplexity_after"]["perplexity"] > report["perplexity_before"]["perplexity"] > 1
    code = (
        "import sys, json; from transformers import AutoModelForCausalLM, AutoTokenizer;"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'model')!r}); "
        f"t = AutoTokenizer.from_pretrained({str(tmp_path / 'model')!r}); "
        "ids = t('def f(x):', return_tensors='pt').input_ids; "
        "out = m.generate(ids, max_new_tokens=4, do_sample=False); "
        "print(json.dumps([m.config.num_hidden_layers, 'lmshrink' in sys.modules, out.shape[1] - ids.shape[1]]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [24, False, 4]
    assert result.model.config.num_hidden_layers == 24
