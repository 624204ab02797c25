"""The problem library: building instances (resumable, measured), the shipped set and its recorded optima, and the
export formats, each read back by its own reader with the same energies."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lmshrink.core import LmshrinkError
from lmshrink.library import LibraryInstance, load_instance
from lmshrink.library.build import BuildSettings, InstanceSpec, ModelSource, build_library, solve_reference
from problems import brute_force, random_problem

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = BuildSettings(samples=8, seq_len=32, loss_samples=4, eval_tokens=256, eval_window=64, top=5)
SPECS = [InstanceSpec("tiny-layer-fisher-m02", "tiny", "fisher", "layer", {None: 2}),
         InstanceSpec("tiny-sublayer-pairs-m03", "tiny", "pairs", "sublayer", {None: 3}),
         InstanceSpec("tinynem-fisher-fo-moe1", "tinynem", "fisher-fo", "layer", {"moe": 1})]


def needs(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module)


class Loads:
    """Model sources that count how often each model is loaded."""

    def __init__(self) -> None:
        from lmshrink.testing import tiny_llama, tiny_nemotron_h, tiny_tokenizer

        self.count = {"tiny": 0, "tinynem": 0}

        def load(name, make):
            def loader():
                self.count[name] += 1
                return make(), tiny_tokenizer()
            return loader

        self.sources = {
            "tiny": ModelSource("tiny", load("tiny", lambda: tiny_llama(layers=6, vocab=128)), True, "tiny llama"),
            "tinynem": ModelSource("tinynem", load("tinynem", lambda: tiny_nemotron_h()), False, "tiny nemotron"),
        }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    loads = Loads()
    out = tmp_path_factory.mktemp("library")
    paths = build_library(out, SPECS, settings=SETTINGS, sources=loads.sources, progress=False)
    return out, paths, loads


# --- building -------------------------------------------------------------------------------------------------------
def test_each_instance_has_its_proven_optimum_and_lowest_states(built):
    out, paths, _ = built
    assert [p.name for p in paths] == [f"{s.name}.json" for s in SPECS]
    for path in paths:
        inst = load_instance(path)
        optimum, energies = brute_force(inst.problem)
        assert inst.proven and inst.lowest_proven and inst.reference["solver"] == "exact"
        assert inst.energy == pytest.approx(optimum, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose([s["energy"] for s in inst.lowest], energies[:5], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(inst.problem.energies(inst.states()), energies[:5], rtol=1e-9, atol=1e-12)
        assert not inst.pending


def test_measured_loss_and_perplexity_match_an_independent_measurement(built):
    """The loss of each state is the calibration loss with the blocks gated off; the perplexity is the pruned
    model's (blocks really removed from a copy) on the same held-out tokens."""
    from lmshrink.data import evaluation_ids, load_texts, make_calibration
    from lmshrink.evaluate.loss import calibration_loss
    from lmshrink.evaluate.perplexity import perplexity
    from lmshrink.plugins import find_adapter
    from lmshrink.testing import tiny_llama, tiny_tokenizer

    out, _, _ = built
    inst = load_instance(out / "tiny-sublayer-pairs-m03.json")
    model, tok = tiny_llama(layers=6, vocab=128), tiny_tokenizer()
    adapter = find_adapter(model)
    texts = load_texts(None)
    calib = make_calibration(tok, texts, SETTINGS.samples, SETTINGS.seq_len, SETTINGS.seed)
    eval_ids = evaluation_ids(tok, texts, SETTINGS.eval_tokens)
    assert inst.measured["eval_tokens"] == 256 and inst.measured["loss_samples"] == 4
    for state in inst.lowest[:3]:
        loss = calibration_loss(model, calib.input_ids[:4], adapter=adapter, removed=state["indices"],
                                granularity="sublayer")
        pruned = adapter.remove(copy.deepcopy(model), state["indices"], "sublayer")
        ppl = perplexity(pruned, eval_ids, window=64, progress=False)["perplexity"]
        assert state["loss"] == pytest.approx(loss, rel=1e-5)
        assert state["perplexity"] == pytest.approx(ppl, rel=1e-4)
    assert inst.measured["base_perplexity"] == pytest.approx(perplexity(model, eval_ids, window=64,
                                                                         progress=False)["perplexity"], rel=1e-4)
    # random weights: no measured values
    assert load_instance(out / "tinynem-fisher-fo-moe1.json").measured is None


def test_build_is_resumable(built):
    out, paths, loads = built
    before = dict(loads.count)
    stamps = [p.stat().st_mtime_ns for p in paths]
    build_library(out, SPECS, settings=SETTINGS, sources=loads.sources, progress=False)
    assert loads.count == before and [p.stat().st_mtime_ns for p in paths] == stamps  # nothing loaded or rewritten
    # an instance interrupted before its measurements: only it is finished, the other model is not loaded
    inst = load_instance(paths[0])
    inst.pending, inst.measured = True, None
    for state in inst.lowest:
        state.pop("loss"), state.pop("perplexity")
    inst.save(paths[0])
    build_library(out, SPECS, settings=SETTINGS, sources=loads.sources, progress=False)
    assert loads.count == {"tiny": before["tiny"] + 1, "tinynem": before["tinynem"]}
    again = load_instance(paths[0])
    assert not again.pending and again.losses() is not None
    assert [p.stat().st_mtime_ns for p in paths[1:]] == stamps[1:]


def test_large_instances_get_milp_and_anneal_with_the_solver_that_found_the_best():
    needs("pyomo.environ", "highspy")
    p = random_problem([(9, 3), (6, 2)], seed=4)
    ref, lowest, proven = solve_reference(p, BuildSettings(exact_limit=1, top=6, milp_time=60, anneal_reads=16))
    assert not proven and ref["proven"] and ref["solver"] == "milp"
    optimum, energies = brute_force(p)
    assert ref["energy"] == pytest.approx(optimum) and lowest[0][1] == pytest.approx(optimum)
    assert all(e >= optimum - 1e-9 for _, e in lowest) and len(lowest) == 6


def test_build_refuses_unknown_names_in_one_sentence(tmp_path, capsys):
    from lmshrink.cli import main

    assert main(["problems", "build", "--out", str(tmp_path), "--only", "nosuch"]) == 2
    assert "No instance of the reference set matches 'nosuch'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert main(["problems", "build", "--list", "--only", "smollm2-layer-pairs"]) == 0
    names = capsys.readouterr().out.split()
    assert names == [f"smollm2-layer-pairs-m{m:02d}" for m in range(4, 13)]
    assert main(["problems", "build", "--list"]) == 0
    assert len(capsys.readouterr().out.split()) == 60
    from lmshrink.library.build import SHIPPED

    assert main(["problems", "build", "--list", "--shipped"]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(SHIPPED)
    assert main(["problems", "build", "--shipped", "--only", "pairs", "--out", str(tmp_path)]) == 2
    assert "None of the --only patterns matches an instance of the shipped set" in capsys.readouterr().err


# --- the shipped set ------------------------------------------------------------------------------------------------
def test_shipped_set_is_small_measured_and_packaged():
    import fnmatch
    import tomllib
    from pathlib import Path

    from lmshrink.library import load_library, shipped_dir
    from lmshrink.library.build import SHIPPED

    files = sorted(shipped_dir().glob("*.json"))
    assert sorted(p.stem for p in files) == sorted(SHIPPED)
    assert sum(p.stat().st_size for p in files) < 1_000_000
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["lmshrink.library"]
    assert all(any(fnmatch.fnmatch(f"data/{p.name}", g) for g in globs) for p in files)  # a wheel carries them
    for inst in load_library():
        assert inst.proven and not inst.pending and len(inst.lowest) == 20
        assert (inst.losses() is not None) == (inst.source["model"] == "smollm2")
        # the recorded energies are the problem's energies of the recorded states
        np.testing.assert_allclose(inst.problem.energies(inst.states()), [s["energy"] for s in inst.lowest],
                                   rtol=1e-9, atol=1e-12)
        assert all(inst.problem.is_feasible(x) for x in inst.states())


@pytest.mark.parametrize("name", ["smollm2-layer-fisher-m04", "smollm2-layer-fisher-m06",
                                  "smollm2-layer-fisher-fo-m08", "nemotron-h-nano-fisher-mamba2-moe2",
                                  "nemotron-h-nano-fisher-fo-mamba4-moe4-attention1"])
def test_shipped_optima_are_reproduced_by_exact_or_milp(name):
    from lmshrink.library import load_library
    from lmshrink.plugins import get_solver

    inst = load_library(names=[name])[0]
    p, energies = inst.problem, [s["energy"] for s in inst.lowest]
    if p.num_feasible_states() <= 1_000_000:  # enumerated: the optimum and the 20 lowest states, in order
        sols = get_solver("exact", p).solve(p, num_solutions=len(energies))
        np.testing.assert_allclose([s.energy for s in sols], energies, rtol=1e-9, atol=1e-12)
        assert inst.lowest_proven
    else:
        needs("pyomo.environ", "highspy")
        sols = get_solver("milp", p).solve(p, num_solutions=1, time_limit=120)
        assert sols.proven_optimal
        assert min(energies) == pytest.approx(sols.best.energy, rel=1e-7, abs=1e-9)
    assert sols.best.energy == pytest.approx(inst.energy, rel=1e-7, abs=1e-9)
    assert energies[0] == pytest.approx(inst.energy, rel=1e-9, abs=1e-12)


def test_library_table_ranks_energy_against_measured_loss(tmp_path, capsys):
    stats = pytest.importorskip("scipy.stats")
    from benchmarks.library.table import library_rows, main
    from lmshrink.library import load_library

    rows = {r["instance"]: r for r in library_rows(None)}
    inst = load_library(names=["smollm2-layer-fisher-m04"])[0]
    energies = [s["energy"] for s in inst.lowest]
    row = rows["smollm2-layer-fisher-m04"]
    assert row["spearman_loss"] == pytest.approx(stats.spearmanr(energies, inst.losses()).statistic)
    assert row["spearman_perplexity"] == pytest.approx(
        stats.spearmanr(energies, [s["perplexity"] for s in inst.lowest]).statistic)
    assert rows["nemotron-h-nano-fisher-mamba2-moe2"]["spearman_loss"] is None  # random weights: nothing measured
    assert main(["--out", str(tmp_path)]) == 0
    assert "smollm2-layer-fisher-m04" in (tmp_path / "report.md").read_text() and (tmp_path / "library.csv").exists()
    capsys.readouterr()


# --- formats ------------------------------------------------------------------------------------------------------
def offset_instance() -> LibraryInstance:
    """A problem with an offset, linear terms, couplings of both signs, two groups and free variables."""
    p = random_problem([(4, 2), (3, 1)], free=2, seed=7)
    from lmshrink.solvers.exact import feasible_states

    X = np.concatenate(list(feasible_states(p)))
    E = p.energies(X)
    order = np.argsort(E)[:6]
    lowest = [{"indices": [int(i) for i in np.flatnonzero(X[k])], "energy": float(E[k])} for k in order]
    return LibraryInstance("offset-instance", p, {"energy": float(E[order[0]]), "proven": True, "solver": "exact",
                                                  "time_s": 0.0}, lowest, True)


def sample_states(problem, k=12, seed=0):
    """``k`` feasible states and ``k`` infeasible ones."""
    from lmshrink.solvers.repair import repair

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(k, problem.num_variables)).astype(np.int8)
    feasible, _ = repair(problem, X)
    infeasible = np.array([x for x in X if not problem.is_feasible(x)])
    return feasible, infeasible


@pytest.fixture(scope="module")
def formats_instances(built):
    out, _, _ = built
    return [offset_instance(), load_instance(out / "tinynem-fisher-fo-moe1.json")]


def test_lmshrink_and_qplib_files_reload_with_the_same_energies(formats_instances, tmp_path):
    from lmshrink.core import load_problem
    from lmshrink.library.formats import export_library
    from lmshrink.library.qplib import read_qplib

    for fmt, read in (("lmshrink", load_problem), ("qplib", read_qplib)):
        paths = export_library(formats_instances, tmp_path / fmt, fmt)
        for inst, path in zip(formats_instances, paths):
            back = read(path)
            feasible, infeasible = sample_states(inst.problem)
            for X in (inst.states(), feasible, infeasible):  # the objective is the same function everywhere
                np.testing.assert_allclose(back.energies(X), inst.problem.energies(X), rtol=1e-12, atol=1e-12)
            assert [(c.indices, c.equals) for c in back.constraints] == \
                [(c.indices, c.equals) for c in inst.problem.constraints]
        index = json.loads((tmp_path / fmt / "index.json").read_text())
        assert [e["file"] for e in index["instances"]] == [p.name for p in paths]


def test_qplib_reads_a_hand_written_file(tmp_path):
    """minimize ½xᵀQ⁰x + b⁰x + q⁰ with Q⁰ = [[2, 0, 0], [−3, 0, 0], [0, 4, 0]] (lower triangle), b⁰ = (0, 1, 0),
    q⁰ = 0.5, x1 + x2 + x3 = 2: the energy of x = (1, 1, 0) is ½(2 − 2·3) + 1 + 0.5 = −0.5, of (0, 1, 1) is
    ½(2·4) + 1 + 0.5 = 5.5, of (1, 0, 1) is ½·2 + 0.5 = 1.5."""
    from lmshrink.library.qplib import read_qplib

    text = """! a comment line
    hand
    QBL  # problem type
    minimize
    3
    1
    3
    1 1 2
    2 1 -3
    3 2 4
    0
    1
    2 1
    0.5
    3
    1 1 1
    1 2 1
    1 3 1
    1e30
    2
    0
    2
    0
    0
    0
    0
    0
    0
    0
    0
    0
    """
    path = tmp_path / "hand.qplib"
    path.write_text("\n".join(line.strip() for line in text.splitlines()))
    p = read_qplib(path)
    np.testing.assert_allclose(p.energies(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]])), [-0.5, 5.5, 1.5])
    assert [(c.indices, c.equals) for c in p.constraints] == [((0, 1, 2), 2)]
    path.write_text(path.read_text().replace("QBL", "QIL"))
    with pytest.raises(LmshrinkError, match="lmshrink reads binary problems"):
        read_qplib(path)


def test_dimod_bqm_and_cqm_files_reload_with_the_same_energies(formats_instances, tmp_path):
    needs("dimod")
    import dimod

    from lmshrink.library.formats import export_library

    bqm_paths = export_library(formats_instances, tmp_path / "bqm", "bqm")
    cqm_paths = export_library(formats_instances, tmp_path / "cqm", "cqm")
    index = json.loads((tmp_path / "bqm" / "index.json").read_text())
    for inst, bqm_path, cqm_path, entry in zip(formats_instances, bqm_paths, cqm_paths, index["instances"]):
        p = inst.problem
        feasible, infeasible = sample_states(p)
        bqm = dimod.BinaryQuadraticModel.from_serializable(json.loads(bqm_path.read_text()))
        with open(cqm_path, "rb") as f:
            cqm = dimod.ConstrainedQuadraticModel.from_file(f)
        for X in (inst.states(), feasible):
            samples = [{i: int(v) for i, v in enumerate(x)} for x in X]
            np.testing.assert_allclose(bqm.energies(samples), p.energies(X), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(cqm.objective.energies(samples), p.energies(X), rtol=1e-10, atol=1e-12)
            assert all(cqm.check_feasible(s) for s in samples)
        # off the constraints the BQM adds P (Σx − M)² per group and the CQM reports the violation
        samples = [{i: int(v) for i, v in enumerate(x)} for x in infeasible]
        penalty = entry["penalty"]
        expected = [p.energy(x) + penalty * sum(v * v for v in p.violations(x)) for x in infeasible]
        np.testing.assert_allclose(bqm.energies(samples), expected, rtol=1e-10)
        assert not any(cqm.check_feasible(s) for s in samples)


def _lp_value(lp, names, x):
    """Objective value and largest row violation of the MILP's columns at x (y_ij = x_i x_j)."""
    assert all(n == "ONE_VAR_CONSTANT" or n[:2] in ("x(", "y(") for n in names)
    z = np.zeros(lp.num_col_)
    for k, name in enumerate(names):
        if name.startswith("x("):
            z[k] = x[int(name[2:-1])]
        elif name.startswith("y("):
            i, j = (int(v) for v in name[2:-1].split("_"))
            z[k] = x[i] * x[j]
        elif name == "ONE_VAR_CONSTANT":  # Pyomo's column for the objective constant, fixed to 1
            z[k] = 1.0
    a = lp.a_matrix_
    rows = np.zeros(lp.num_row_)
    for col in range(lp.num_col_):
        for k in range(a.start_[col], a.start_[col + 1]):
            rows[a.index_[k]] += a.value_[k] * z[col]
    violation = max(np.max(np.asarray(lp.row_lower_) - rows, initial=0), np.max(rows - np.asarray(lp.row_upper_),
                                                                                  initial=0))
    return lp.offset_ + float(np.dot(lp.col_cost_, z)), float(violation)


@pytest.mark.parametrize("fmt", ["lp", "mps"])
def test_lp_and_mps_files_are_the_milp_with_the_same_energies_and_optimum(formats_instances, tmp_path, fmt):
    needs("pyomo.environ", "highspy")
    import highspy

    from lmshrink.library.formats import export_library

    paths = export_library(formats_instances, tmp_path / fmt, fmt)
    for inst, path in zip(formats_instances, paths):
        h = highspy.Highs()
        h.silent()
        assert h.readModel(str(path)) == highspy.HighsStatus.kOk
        lp = h.getLp()
        names = list(lp.col_names_)
        feasible, _ = sample_states(inst.problem)
        for x in list(inst.states()) + list(feasible):
            value, violation = _lp_value(lp, names, x)
            assert value == pytest.approx(inst.problem.energy(x), rel=1e-9, abs=1e-12)
            assert violation <= 1e-9
        h.run()
        assert h.getInfo().objective_function_value == pytest.approx(inst.energy, rel=1e-7, abs=1e-10)


def test_export_refuses_bad_requests_in_one_sentence(built, tmp_path, capsys):
    from lmshrink.cli import main

    library, _, _ = built
    assert main(["problems", "export", str(tmp_path / "x"), "--format", "qplb"]) == 2
    assert "Did you mean 'qplib'" in capsys.readouterr().err
    assert main(["problems", "export", str(tmp_path / "x"), "--from", str(library), "--only", "nosuch"]) == 2
    assert "has no instance 'nosuch'; it has tiny-layer-fisher-m02, " in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["problems", "list", "--from", str(tmp_path)]) == 2
    assert "holds no library instance" in capsys.readouterr().err


def test_problems_export_and_list_read_a_built_library(built, tmp_path, capsys):
    from lmshrink.cli import main

    library, _, _ = built
    assert main(["problems", "export", str(tmp_path / "q"), "--from", str(library), "--format", "qplib",
                 "--only", "tiny-layer-fisher-m02", "tinynem-fisher-fo-moe1"]) == 0
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["index.json", "tiny-layer-fisher-m02.qplib",
                                                                 "tinynem-fisher-fo-moe1.qplib"]
    capsys.readouterr()
    assert main(["problems", "list", "--from", str(library), "--json"]) == 0
    rows = {r["instance"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {s.name for s in SPECS}
    assert rows["tiny-layer-fisher-m02"]["measured"] and not rows["tinynem-fisher-fo-moe1"]["measured"]
    assert rows["tinynem-fisher-fo-moe1"]["constraints"] == "remove:moe=1/2"
