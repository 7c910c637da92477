"""vaediag.structured: parsing a named file's text never ends in a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import pytest

from vaediag.errors import ControlFileError, InputError, RulesError
from vaediag.structured import MAX_DEPTH, depth_exceeds, loads_json, loads_toml, loads_yaml, short_repr

BOMB = "a: &a {x1: 1, x2: 2, x3: 3, x4: 4, x5: 5, x6: 6, x7: 7, x8: 8, x9: 9}\n" + "".join(
    f"{n}: &{n} {{" + ", ".join(f"k{i}: *{p}" for i in range(9)) + "}\n" for p, n in zip("abcdefgh", "bcdefghi")
)  # 700 bytes that expand to 9**9 values


def test_plain_documents_parse() -> None:
    assert loads_toml("[a]\nb = [1, 2]\n", where="f", error=RulesError) == {"a": {"b": [1, 2]}}
    assert loads_json('{"a": [1, {"b": null}]}', where="f", error=ControlFileError) == {"a": [1, {"b": None}]}
    assert loads_yaml("a: &x [1, 2]\nb: *x\n", where="f", error=InputError) == {"a": [1, 2], "b": [1, 2]}
    assert loads_yaml("", where="f", error=InputError) is None


@pytest.mark.parametrize("text", [
    "x = " + "[" * 5000 + "]" * 5000,  # tomllib recurses out of stack
    "x = " + "{a = " * 3000 + "1" + "}" * 3000,
    ".".join(["a"] * 3000) + " = 1",  # dotted keys: built without recursion, refused by depth
    "[" + ".".join(["t"] * 3000) + "]",
])
def test_toml_nesting_is_one_error(text: str) -> None:
    with pytest.raises(RulesError, match=rf"^f: nested deeper than {MAX_DEPTH} levels"):
        loads_toml(text, where="f", error=RulesError)


def test_toml_integer_beyond_the_conversion_limit() -> None:
    with pytest.raises(RulesError, match=r"^f: a value that cannot be converted \(Exceeds the limit"):
        loads_toml("a = 1" + "0" * 5000, where="f", error=RulesError)


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ('{"a":' * 100 + "1" + "}" * 100, "nested deeper"),  # parses; refused by depth
    ('{"seq": 1' + "0" * 5000 + "}", r"not valid JSON \(a value that cannot be converted"),
    ("{", r"not valid JSON \(Expecting"),
])
def test_json_failures_are_one_error(text: str, match: str) -> None:
    with pytest.raises(ControlFileError, match=match):
        loads_json(text, where="f", error=ControlFileError)


def test_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    assert len(BOMB) < 800
    with pytest.raises(InputError, match=r"anchors and aliases expand to more than 100,000 values"):
        loads_yaml(BOMB, where="hparams.yaml", error=InputError)


@pytest.mark.parametrize("text, match", [
    ("a: &a [1, *a]\n", "a cycle"),
    ("a: &a {b: *a}\n", "a cycle"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    ("a: [unclosed\n", "not valid YAML"),
    ("a: !!python/object:os.system x\n", "not valid YAML"),
    ("a: 2020-13-45\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
])
def test_yaml_failures_are_one_error(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        loads_yaml(text, where="hparams.yaml", error=InputError)


def test_shared_yaml_values_are_counted_once_per_use() -> None:
    text = "a: &a [" + ", ".join(["1"] * 100) + "]\nb: [" + ", ".join(["*a"] * 100) + "]\n"
    assert len(loads_yaml(text, where="f", error=InputError)["b"]) == 100  # 10,202 values: fine
    with pytest.raises(InputError, match="expand"):
        loads_yaml(text, where="f", error=InputError, max_nodes=5_000)


def test_depth_and_short_repr() -> None:
    deep: list = []
    node = deep
    for _ in range(MAX_DEPTH + 1):
        node.append([])
        node = node[0]
    assert depth_exceeds(deep) and not depth_exceeds([[1], {"a": [2]}])
    assert len(short_repr("x" * 1_000_000)) < 80 and len(short_repr(deep)) < 80
