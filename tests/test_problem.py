import itertools
import re

import numpy as np
import pytest

from lmshrink.core import BinaryQuadraticProblem, Constraint, LmshrinkError, load_problem


def random_problem(n=8, m=3, seed=0, groups=None):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(2 * n, n)) * rng.uniform(0.3, 2.0, size=n)
    cons = [Constraint(g, k) for g, k in groups] if groups else [Constraint(range(n), m)]
    return BinaryQuadraticProblem([f"b{i}" for i in range(n)], rng.normal(size=n), A.T @ A / (2 * n), 0.7, cons)


def all_states(n):
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int8)


def test_energy_matches_hand_computation():
    p = BinaryQuadraticProblem(["a", "b", "c"], [1.0, -2.0, 0.5], [[2.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 3.0, 1.0]],
                               offset=0.25)
    # x = (1, 1, 0): 0.25 + 1 − 2 + (Q_aa + 2 Q_ab + Q_bb) = 0.25 − 1 + 2 + 2 + 0 = 3.25
    assert p.energy([1, 1, 0]) == pytest.approx(3.25)
    # x = (0, 1, 1): 0.25 − 2 + 0.5 + (0 + 2·3 + 1) = 5.75
    assert p.energy([0, 1, 1]) == pytest.approx(5.75)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path, suffix):
    p = random_problem(groups=[(range(4), 2), (range(5, 8), 1)])
    p.metadata = {"model": "m", "options": {"x": 1}}
    path = p.save(tmp_path / f"p{suffix}")
    q = load_problem(path)
    assert q.variables == p.variables and q.constraints == p.constraints and q.metadata == p.metadata
    X = all_states(8)
    np.testing.assert_array_equal(q.energies(X), p.energies(X))
    assert q.free_indices == (4,)


def test_penalty_form_and_default_penalty_keep_ground_state_feasible():
    p = random_problem(n=9, groups=[(range(5), 2), (range(5, 9), 3)])
    X = all_states(9)
    lin, quad, off = p.penalty_qubo(p.default_penalty())
    penal = off + X @ lin + np.einsum("ki,ki->k", X @ quad, X)
    viol = np.array([sum(v * v for v in p.violations(x)) for x in X])
    np.testing.assert_allclose(penal, p.energies(X) + p.default_penalty() * viol, rtol=1e-12, atol=1e-9)
    assert p.is_feasible(X[np.argmin(penal)])
    feasible = np.array([p.is_feasible(x) for x in X])
    assert penal.min() == pytest.approx(p.energies(X)[feasible].min())


def test_dimod_conversions_agree():
    dimod = pytest.importorskip("dimod")
    p = random_problem(n=6, m=2)
    bqm = p.to_bqm(penalty=3.0)
    cqm = p.to_cqm()
    for x in all_states(6):
        sample = dict(enumerate(x.tolist()))
        viol = sum(v * v for v in p.violations(x))
        assert bqm.energy(sample) == pytest.approx(p.energy(x) + 3.0 * viol)
        assert cqm.objective.energy(sample) == pytest.approx(p.energy(x))
        assert cqm.check_feasible(sample) == p.is_feasible(x)
    assert isinstance(bqm, dimod.BinaryQuadraticModel)


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(LmshrinkError, match="symmetric"):
        BinaryQuadraticProblem(["a", "b"], [0, 0], [[0, 1], [0, 0]])
    with pytest.raises(LmshrinkError, match="disjoint"):
        BinaryQuadraticProblem(["a", "b"], [0, 0], np.eye(2), constraints=[Constraint([0], 1), Constraint([0, 1], 1)])
    with pytest.raises(LmshrinkError, match="asks for 3 of 2"):
        Constraint([0, 1], 3)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    with pytest.raises(LmshrinkError, match="unknown format"):
        load_problem(bad)


# --- bad input to `lmshrink solve` and to problem files: one sentence each, exit 2 ---------------------------------
def _good() -> dict:
    return {"format": "lmshrink.binary_quadratic/1", "variables": ["a", "b", "c"], "linear": [0.0, 1.0, -1.0],
            "quadratic": [[1.0, 0.5, 0.0], [0.5, 2.0, 0.1], [0.0, 0.1, 0.0]], "offset": 0.0,
            "constraints": [{"indices": [0, 1, 2], "equals": 1}], "metadata": {}}


def _with(**changes) -> dict:
    data = _good()
    for key, value in changes.items():
        if key.startswith("c_"):
            data["constraints"][0][key[2:]] = value
        elif value is None:
            del data[key]
        else:
            data[key] = value
    return data


def _write(path, content):
    import json

    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


BAD_PROBLEM_FILES = [
    ("a JSON list", "p.json", [1, 2, 3], "holds a JSON list, not a problem"),
    ("missing keys", "p.json", _with(linear=None, quadratic=None), "lacks the keys 'linear', 'quadratic'"),
    ("unknown constraint key", "p.json", _with(c_equal=1), "constraint 0 has the unknown key 'equal'"),
    ("string equals", "p.json", _with(c_equals="1"), "constraint 0: equals must be an integer, not '1'"),
    ("float equals", "p.json", _with(c_equals=1.5), "constraint 0: equals must be an integer, not 1.5"),
    ("float index", "p.json", _with(c_indices=[0, 1.0, 2]), "constraint 0: an index must be an integer, not 1.0"),
    ("a binary file", "p.json", bytes(range(256)) * 4, "is not a text file"),
    ("a bad .npz", "p.npz", b"PK\x03\x04 not really a zip archive", "is not a readable .npz problem file"),
    ("a .npz of other arrays", "p.npz", "npz-without-json", "without lmshrink's '__json__' entry"),
    ("NaN in the quadratic", "p.json", _with(quadratic=[[1.0, float("nan"), 0], [float("nan"), 2, 0], [0, 0, 0]]),
     "quadratic has a non-finite entry (nan) at [0, 1]"),
    ("NaN in the linear term", "p.json", _with(linear=[0.0, float("nan"), 1.0]),
     "linear has a non-finite entry (nan) at [1]"),
    ("inf in the linear term", "p.json", _with(linear=[float("inf"), 0.0, 1.0]),
     "linear has a non-finite entry (inf) at [0]"),
    ("an empty problem", "p.json", _with(variables=[], linear=[], quadratic=[], constraints=[]),
     "needs at least one variable"),
    ("a ragged quadratic", "p.json", _with(quadratic=[[1.0, 2.0], [3.0]]), "quadratic must be an array of numbers"),
    ("a variables string", "p.json", _with(variables="abc"), "variables must be a list of names"),
]


@pytest.mark.parametrize("what, name, content, expected", BAD_PROBLEM_FILES, ids=[r[0] for r in BAD_PROBLEM_FILES])
def test_bad_problem_files_give_one_sentence_and_exit_2(what, name, content, expected, tmp_path, capsys):
    from lmshrink.cli import main

    path = tmp_path / name
    if content == "npz-without-json":
        np.savez(path, a=np.zeros(3))
    else:
        _write(path, content)
    with pytest.raises(LmshrinkError, match=re.escape(expected)):
        load_problem(path)
    assert main(["solve", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmshrink: error:") and expected in err
    assert "\n" not in err and "Traceback" not in err
    assert len(re.findall(r"[.!?](?=\s+[A-Z])", err.removeprefix("lmshrink: error:"))) == 0  # one sentence


def test_a_directory_is_not_a_problem_file(tmp_path, capsys):
    from lmshrink.cli import main

    assert main(["solve", str(tmp_path)]) == 2
    assert "is a directory, not a problem file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--top-k", "0"], "num_solutions (--top-k) must be an integer ≥ 1, not 0."),
    (["--time-limit", "-1"], "time_limit must be a positive number of seconds or None, not -1.0."),
    (["--solver", "anneal", "--option", "num_reads=0"], "option num_reads must be an integer ≥ 1, not '0'."),
    (["--solver", "anneal", "--option", "num_reads=none"], "option num_reads must be an integer ≥ 1, not 'none'."),
    (["--solver", "exact", "--option", "max_states=none"], "option max_states must be an integer ≥ 1, not 'none'."),
    (["--solver", "anneal", "--option", "num_read=3"], "has no option 'num_read'. Did you mean 'num_reads'?"),
])
def test_bad_solve_arguments_give_one_sentence_and_exit_2(argv, expected, tmp_path, capsys):
    from lmshrink.cli import main

    path = random_problem(n=6, m=2).save(tmp_path / "p.json")
    assert main(["solve", str(path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmshrink: error:") and expected in err and "\n" not in err


@pytest.mark.parametrize("options, expected", [
    ({"num_reads": 0}, "Solver 'anneal' option num_reads must be an integer ≥ 1, not 0."),
    ({"num_reads": None}, "Solver 'anneal' option num_reads must be an integer ≥ 1, not None."),
    ({"num_reads": "x"}, "Solver 'anneal' option num_reads must be an integer ≥ 1, not 'x'."),
    ({"beta_range": (1.0,)}, "Solver 'anneal' option beta_range must be 2 numbers (a,b), not (1.0,)."),
])
def test_python_calls_check_option_types_too(options, expected):
    from lmshrink.plugins import get_solver

    with pytest.raises(LmshrinkError) as err:
        get_solver("anneal").solve(random_problem(n=6, m=2), **options)
    assert str(err.value) == expected
    with pytest.raises(LmshrinkError, match=re.escape("Solver 'exact' option max_states must be an integer ≥ 1, "
                                                      "not None.")):
        get_solver("exact").solve(random_problem(n=6, m=2), max_states=None)
