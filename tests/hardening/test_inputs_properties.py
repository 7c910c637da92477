"""Property tests for the parsers of files users name (issue 10): whatever the text or bytes, the rules,
tags and targets loaders, the control-file reader and the YAML/JSON metadata readers return a valid result
or raise the module's own VaediagError subclass (exit 2, one line); never another exception.

Two kinds of input: arbitrary bytes/text (the parser's own errors), and documents generated from each
file's schema with hostile values (NaN, inf, huge integers, wrong types, deep nesting, unknown keys), which
get past the parser and exercise the validation. A rules file that loads must also be usable: diagnosing a
run with it raises nothing.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vaediag.errors import ControlFileError, InputError, RulesError, TagsError, VaediagError
from vaediag.terms import CANONICAL_TERMS, SPLITS

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_DIR = Path(tempfile.mkdtemp(prefix="vaediag-props-"))


def _file(content: str | bytes, name: str = "f.toml") -> Path:
    p = _DIR / name
    p.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return p


def _one_line(exc: VaediagError, *allowed: type) -> None:
    assert isinstance(exc, allowed), f"{type(exc).__name__}: {exc}"
    assert exc.exit_code == 2 and "\n" not in exc.message and len(exc.message) < 2000, exc.message


# ---- values and a tiny TOML writer ---------------------------------------------------------------

_KEYS = st.text(min_size=1, max_size=12)
_SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, 0.5, 1, 1.0, 2, 10.0, 1e-7, 1e308, -1.0]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(list(CANONICAL_TERMS) + list(SPLITS) + ["converged", "range", "lower", "higher"]),
)
# Values that have broken parsers and validators before: beyond float range, beyond int64, NaN, inf, -0.0.
_HOSTILE = st.sampled_from([10**400, -(10**400), 2**63, 2**64, math.nan, math.inf, -math.inf, -0.0, 1e308, 0, 0.0,
                            -1, True, "", [], {}])
_VALUES = st.one_of(_HOSTILE, st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=3), max_leaves=12))
# Nesting deeper than any parser or walker copes with, as TOML text.
_DEEP_TOML = st.one_of(
    st.integers(1, 3000).map(lambda n: "x = " + "[" * n + "]" * n + "\n"),
    st.integers(1, 3000).map(lambda n: "x = " + "{a = " * n + "1" + "}" * n + "\n"),
    st.integers(1, 3000).map(lambda n: ".".join(["a"] * n) + " = 1\n"),
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_doc(tables: dict) -> str:
    out = []
    for name, body in tables.items():
        if isinstance(body, list):  # [[array]] tables
            for item in body:
                out.append(f"[[{json.dumps(name)}]]")
                out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in item.items()]
        elif isinstance(body, dict):
            out.append(f"[{'.'.join(json.dumps(p) for p in name.split('.'))}]")
            out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
        else:
            out.insert(0, f"{json.dumps(name)} = {toml_value(body)}")
    return "\n".join(out) + "\n"


# ---- rules ---------------------------------------------------------------------------------------


def _rules_schema() -> dict[str, list[str]]:
    from vaediag.diagnose import load_rules

    data = load_rules().data
    return {s: list(v) for s, v in data.items() if isinstance(v, dict)}


_SCHEMA = _rules_schema()
_CRITERION = st.dictionaries(
    st.sampled_from(["term", "min", "max", "better_than_baseline", "stable", "tolerance", "check", "id", "label", "x"]),
    _SCALARS, max_size=5)


@st.composite
def rules_docs(draw) -> str:
    tables: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(_SCHEMA) + ["recommend.recipe", "bogus"]), max_size=4,
                                 unique=True)):
        keys = _SCHEMA.get(section.split(".")[0], []) + ["w_l1", "zz"]
        tables[section] = draw(st.dictionaries(st.sampled_from(keys), _VALUES, max_size=4))
    if draw(st.booleans()):
        tables["milestones"] = draw(st.lists(st.fixed_dictionaries(
            {"epoch": _SCALARS}, optional={"title": _SCALARS, "criteria": st.lists(_CRITERION, max_size=3)}),
            max_size=3))
    if draw(st.booleans()):
        tables["success"] = draw(st.fixed_dictionaries({}, optional={
            "judge_after": _SCALARS, "criteria": st.lists(_CRITERION, max_size=3)}))
    return toml_doc(tables)


def _load_rules(content):
    from vaediag.diagnose import load_rules

    try:
        return load_rules(_file(content, "rules.toml"))
    except VaediagError as exc:
        _one_line(exc, RulesError, InputError)
        return None


@pytest.mark.slow
@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), _DEEP_TOML))
def test_rules_loader_on_arbitrary_input(content) -> None:
    _load_rules(content)


@pytest.mark.slow
@SETTINGS
@given(rules_docs())
def test_rules_loader_on_hostile_documents(text: str) -> None:
    _load_rules(text)


def _plausible(default):
    """Values of the default's type, edge values weighted in (0, 1, tiny, huge), mostly within range."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.integers(0, 200), st.sampled_from([0, 1, 2, 10**6, 2**62]))
    if isinstance(default, float):
        return st.one_of(st.floats(0, 1), st.floats(1, 1e6), st.sampled_from([0.0, 1.0, 1e-300, 1e300, 1.0000001]))
    if isinstance(default, str):
        return st.sampled_from(["reduce_kl_weight", "increase_kl_weight", "auto", "seed", "generic"])
    if isinstance(default, list):
        return st.tuples(st.floats(0, 1e4), st.floats(0, 1e4)).map(sorted).map(list)
    return st.nothing()


@st.composite
def plausible_rules_docs(draw) -> str:
    from vaediag.diagnose import load_rules

    data = load_rules().data
    tables: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(_SCHEMA)), max_size=6, unique=True)):
        body = {}
        for key in draw(st.lists(st.sampled_from(_SCHEMA[section]), max_size=4, unique=True)):
            if not isinstance(data[section][key], dict):
                body[key] = draw(_plausible(data[section][key]))
        tables[section] = body
    if draw(st.booleans()):
        crit = st.one_of(
            st.fixed_dictionaries({"term": st.sampled_from(CANONICAL_TERMS), "max": st.floats(0.001, 1e6)}),
            st.fixed_dictionaries({"term": st.sampled_from(CANONICAL_TERMS), "min": st.floats(0, 1e6)}),
            st.fixed_dictionaries({"term": st.sampled_from(CANONICAL_TERMS), "stable": st.integers(2, 50),
                                   "tolerance": st.floats(0, 10)}),
            st.fixed_dictionaries({"term": st.sampled_from(CANONICAL_TERMS), "better_than_baseline": st.just(True)}),
            st.just({"check": "converged"}),
        )
        epochs = draw(st.lists(st.integers(1, 300), min_size=1, max_size=3, unique=True))
        tables["milestones"] = [{"epoch": e, "criteria": draw(st.lists(crit, min_size=1, max_size=3))} for e in epochs]
    return toml_doc(tables)


@pytest.fixture(scope="module")
def seed_run():
    import seedruns

    import vaediag

    root = seedruns.write_seed(Path(tempfile.mkdtemp(prefix="vaediag-props-seed-")))
    return vaediag.load(root / "run2")  # one run of the seed: ~0.15 s a diagnosis


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plausible_rules_docs())
def test_rules_that_load_never_crash_a_diagnosis(seed_run, text: str) -> None:
    from vaediag.diagnose import diagnose

    rules = _load_rules(text)
    assume(rules is not None)
    for d in diagnose(seed_run, rules=rules, kl_weight=None, baseline=None, profile=None):
        json.dumps(d.to_dict(), allow_nan=False)


# ---- tags ----------------------------------------------------------------------------------------

_TAG_VALUES = st.one_of(_SCALARS, st.fixed_dictionaries({"term": _SCALARS}, optional={"split": _SCALARS, "x": _SCALARS}))


@st.composite
def tags_docs(draw) -> str:
    tables = {}
    for section in draw(st.lists(st.sampled_from(["tags", "patterns", "other"]), max_size=3, unique=True)):
        tables[section] = draw(st.dictionaries(st.text(min_size=1, max_size=10), _TAG_VALUES, max_size=4))
    return toml_doc(tables)


@pytest.mark.slow
@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), _DEEP_TOML.map(lambda t: "[tags]\n" + t), tags_docs()))
def test_tags_loader(content) -> None:
    from vaediag.terms import load_tag_map, resolve

    try:
        tm = load_tag_map(_file(content, "tags.toml"))
    except VaediagError as exc:
        _one_line(exc, TagsError, InputError)
        return
    for raw in ["val/kl", "train_loss", "x", *(k for k, *_ in tm.exact), *(k for k, *_ in tm.patterns)]:
        term, split = resolve(raw, tm)
        assert split in SPLITS and (term is None or term in CANONICAL_TERMS)


# ---- targets -------------------------------------------------------------------------------------


@st.composite
def targets_docs(draw) -> str:
    tables = {}
    for name in draw(st.lists(st.sampled_from(["kl", "psnr", "recon", "ssim", "foo"]), max_size=3, unique=True)):
        tables[f"targets.{name}"] = draw(st.dictionaries(
            st.sampled_from(["term", "split", "min", "max", "direction", "label", "bogus"]), _VALUES, max_size=4))
    if draw(st.booleans()):
        tables["extra"] = {}
    return toml_doc(tables)


@pytest.mark.slow
@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), _DEEP_TOML.map(lambda t: "[targets.kl]\n" + t),
                 targets_docs()))
def test_targets_loader(content) -> None:
    from vaediag.render.report import load_targets

    try:
        targets = load_targets(_file(content, "targets.toml"))
    except VaediagError as exc:
        _one_line(exc, RulesError, InputError)
        return
    for t in targets:
        t.describe()
        for v in (None, math.nan, -1.0, 0.0, 1e300):
            t.judge(v)


# ---- control file --------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(_HOSTILE, st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
                          st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                          st.sampled_from(["vae", "ae", 0, 1e-7, 2**63, -1]))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
_CONTROLS = st.one_of(
    st.fixed_dictionaries({"seq": _JSON_SCALARS, "kl_weight": _JSON_SCALARS},
                          optional={"mode": st.sampled_from(["vae", "ae"]) | _JSON, "reason": _JSON, "issued_at": _JSON}),
    st.fixed_dictionaries({}, optional={
        "seq": _JSON, "kl_weight": _JSON, "mode": _JSON, "reason": _JSON, "issued_at": _JSON, "other": _JSON}),
)
_DEEP_JSON = st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n)


@pytest.mark.slow
@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), _DEEP_JSON, _CONTROLS.map(json.dumps),
                 _JSON.map(json.dumps)))
def test_control_file_reader(content) -> None:
    from vaediag.watch.control import Control, read_control

    _file(content, "control.json")
    try:
        c = read_control(_DIR)
    except VaediagError as exc:
        _one_line(exc, ControlFileError)
        return
    assert isinstance(c, Control) and math.isfinite(float(c.kl_weight)) and 0 <= c.seq < 2**63
    assert c.mode in ("vae", "ae")


# ---- metadata in a log tree (hparams.yaml, config.json): never an error, at most a warning ------------


_YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["a: &a [1, 2]", "b: *a", "c: {x: *a, y: *a}", "d: &d {e: 1}", "f: *d", "- x",
                              "g: !!binary aGk=", "h: 2020-01-01", "i: .nan", "j: [", "k: |", "  text", "? l",
                              "m: &m [*m]", "n: 0x1F", "o: 1e999", "p: !!python/name:os.system"]),
             max_size=8).map("\n".join),
    st.integers(1, 3000).map(lambda n: "a: " + "[" * n + "]" * n),
    st.integers(1, 9).map(lambda n: "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} {{" + ", ".join(f"k{i}: *{p}" for i in range(9)) + "}\n" for p, c in zip("abcdefghi", "bcdefghij"[:n]))),
)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(_YAML_TEXT, st.one_of(st.text(max_size=200), _DEEP_JSON, _JSON.map(json.dumps)))
def test_run_metadata_never_raises(yaml_text: str, json_text: str) -> None:
    from vaediag.logs.reader import RunInfo, read_run_metadata

    d = _DIR / "run"
    d.mkdir(exist_ok=True)
    (d / "hparams.yaml").write_bytes(yaml_text.encode("utf-8", "surrogatepass"))
    (d / "config.json").write_bytes(json_text.encode("utf-8", "surrogatepass"))
    info = RunInfo(run="run", path=d)
    read_run_metadata(d, info)
    info.params  # flattening what was read must not recurse out of stack or expand aliases
    assert all("\n" not in w for w in info.warnings)
