"""Expressions: the grammar, evaluation over board entries, models and dicts, None propagation,
the messages of rejected text, names and paths for the planner, and check_paths."""

from __future__ import annotations

import contextlib
import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, computed_field

from crew.board import BoardEntry
from crew.errors import ConfigError
from crew.expr import Expression, check_paths, parse

WHERE = "crew.yaml:12 tasks.fix.when"


class Owner(BaseModel):
    name: str
    team: str


class Triage(BaseModel):
    severity: str
    summary: str
    tags: list[str] = []
    score: int = 0
    owner: Owner | None = None


class Ideas(BaseModel):
    items: list[str]


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


def entry(key: str, text: str = "", data: object = None, *, version: int = 1) -> BoardEntry:
    return BoardEntry(key, text, data, "Analyst", "output", version, 100.0, 100.0)


TRIAGE = Triage(severity="high", summary="disk full", tags=["ops", "urgent"], score=7)
SCOPE = {
    "triage": entry("triage", "Disk is full", TRIAGE, version=2),
    "ideas": entry("ideas", "", Ideas(items=["a", "b", "c"])),
    "critique": None,  # has not posted yet
    "inputs": {"topic": "AI", "depth": 3, "nested": {"k": "v"}},
}


def value(text: str) -> object:
    return parse(text).evaluate(SCOPE)


def rejected(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, where=WHERE)
    return str(caught.value)


def failed(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, where=WHERE).evaluate(SCOPE)
    return str(caught.value)


# --- evaluation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("triage.data.severity == 'high'", True),
        ("triage.data.severity != 'high'", False),
        ("triage.text", "Disk is full"),
        ("triage.version", 2),
        ("triage.author == 'Analyst'", True),
        ("triage.data.score >= 7 and triage.data.score < 10", True),
        ("0 < triage.data.score <= 7", True),
        ("0 < triage.data.score < 5", False),
        ("triage.data['severity']", "high"),
        ("triage.data.tags[0]", "ops"),
        ("triage.data.tags[-1]", "urgent"),
        ("'urgent' in triage.data.tags", True),
        ("'minor' not in triage.data.tags", True),
        ("'full' in triage.text", True),
        ("triage.data.severity in ['high', 'critical']", True),
        ("triage.data.severity in ('low',)", False),
        ("len(ideas.data.items)", 3),
        ("len(ideas.data.items) > 2", True),
        ("ideas.data.items", ["a", "b", "c"]),
        ("lower(triage.text)", "disk is full"),
        ("upper(triage.data.severity) == 'HIGH'", True),
        ("str(triage.version)", "2"),
        ("int('12') + 1", 13),
        ("float(inputs.depth) / 2", 1.5),
        ("-triage.data.score", -7),
        ("triage.data.score * 2 - 4", 10),
        ("inputs.topic", "AI"),
        ("inputs['topic'] == 'AI'", True),
        ("inputs.nested.k", "v"),
        ("true and not false", True),
        ("null", None),
        ("True or False", True),
        ("None", None),
        ("[1, 'two', null]", [1, "two", None]),
        ("0 or 'fallback'", "fallback"),
        ("'' and 1", ""),
        ("-1.5", -1.5),
    ],
)
def test_evaluate(text, expected):
    assert value(text) == expected


def test_a_call_result_can_be_indexed_and_compared():
    assert value("lower(triage.data.tags[1])[0] == 'u'") is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("critique.data.approved", None),
        ("critique.text", None),
        ("critique.data.items[0]", None),
        ("critique.data['k']", None),
        ("len(critique.data.items)", None),
        ("lower(critique.text)", None),
        ("critique.data.score + 1", None),
        ("critique.data.severity == 'high'", False),
        ("critique.data.severity != 'high'", True),
        ("critique == null", True),
        ("'x' in critique.data.tags", False),
        ("'x' not in critique.data.tags", True),
        ("not critique.data.approved", True),
    ],
)
def test_none_propagates(text, expected):
    assert value(text) == expected


def test_holds_is_truthiness():
    assert parse("triage.data.tags").holds(SCOPE) is True
    assert parse("critique.data.approved").holds(SCOPE) is False
    assert parse("ideas.data.items[1] == 'b'").holds(SCOPE) is True


def test_plain_json_data_after_a_resume_reads_the_same():
    # Board.from_snapshot gives structured data back as dicts; expressions read them alike.
    scope = {"triage": entry("triage", "", TRIAGE.model_dump(mode="json"))}
    assert parse("triage.data.severity == 'high' and triage.data.tags[1] == 'urgent'").holds(scope)


def test_dataclass_values_are_read_by_attribute():
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    assert parse("p.x + p.y").evaluate({"p": Point(1, 2)}) == 3
    with pytest.raises(ConfigError, match=r"p has no field 'z'\. Fields: x, y"):
        parse("p.z").evaluate({"p": Point(1, 2)})


def test_lowercase_literals_are_not_names():
    expr = parse("x == true or y == null or z == false")
    assert expr.names == {"x", "y", "z"}


# --- errors at run time --------------------------------------------------------------------------


def test_a_misspelled_field_names_the_close_match_and_the_fields():
    assert failed("triage.data.sevrity == 'high'") == (
        f"{WHERE}: `triage.data.sevrity == 'high'`: triage.data has no field 'sevrity'. "
        "Did you mean 'severity'? Fields: severity, summary, tags, score, owner"
    )


def test_a_name_not_in_scope_names_the_close_match():
    message = failed("triag.text")
    assert "'triag' is not defined. Did you mean 'triage'?" in message
    assert "Names: triage, ideas, critique, inputs" in message


def test_a_missing_key_of_a_dict_names_the_keys():
    assert "inputs has no key 'topc'. Did you mean 'topic'? Keys: topic, depth, nested" in failed(
        "inputs.topc"
    )


def test_a_missing_field_of_a_board_entry_names_its_fields():
    assert "triage has no field 'txt'. Did you mean 'text'? Fields: key, text, data" in failed(
        "triage.txt"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("critique.data.score < 3", "critique.data.score (= None) < 3: None and int do not"),
        ("triage.text > 3", "triage.text (= 'Disk is full') > 3: str and int do not compare"),
        ("3 in triage.text", "3 in triage.text (= 'Disk is full'): int and str do not compare"),
        ("triage.data.tags[5]", "triage.data.tags has no item 5: it has 2"),
        ("triage.version[0]", "triage.version is int, which has no items"),
        ("triage.text.upper", "triage.text.upper is a method, not a field"),
        ("triage.data.model_dump", "triage.data.model_dump is a method, not a field"),
        ("triage.data.tags.first", "triage.data.tags has no field 'first'. It is list."),
        ("triage['__class__']", "triage has no field '__class__'"),
        ("int(triage.text)", "int() cannot take triage.text (= 'Disk is full') (str)"),
        ("lower(triage.version)", "lower() cannot take triage.version (= 2) (int)"),
        ("len(triage.version)", "len() cannot take triage.version (= 2) (int)"),
        ("triage.text + 1", "triage.text (= 'Disk is full') is str, not a number"),
        ("triage.data.score / 0", "triage.data.score / 0 fails: division by zero"),
    ],
)
def test_run_time_errors_say_what_and_where(text, message):
    assert failed(text).startswith(f"{WHERE}: `{text}`: ")
    assert message in failed(text)


# --- rejected text -------------------------------------------------------------------------------


def test_assignment_instead_of_comparison():
    assert rejected("triage.data.severity = 'high'") == (
        f"{WHERE}: `triage.data.severity = 'high'` is not a valid expression (col 22): "
        "use == to compare."
    )


def test_a_call_to_a_function_outside_the_whitelist():
    assert rejected("__import__('os')") == (
        f"{WHERE}: `__import__('os')` calls `__import__`, which is not allowed; "
        "allowed functions: len, lower, upper, str, int, float."
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("open('/etc/passwd')", "calls `open`, which is not allowed; allowed functions: len,"),
        ("triage.text.lower()", "calls `triage.text.lower`, which is not allowed (write "),
        ("len(a, b)", "calls `len(a, b)`: len() takes exactly one argument"),
        ("len(*a)", "len() takes exactly one argument"),
        ("int(x, base=2)", "int() takes exactly one argument"),
        ("len(x)(1)", "calls `len(x)`, which is not allowed"),
        ("x.__class__", "reads `__class__`, which is not allowed: names starting with '_'"),
        ("x._private", "reads `_private`, which is not allowed"),
        ("lambda: 1", "uses a lambda, which is not allowed"),
        ("[x for x in y]", "uses a comprehension, which is not allowed"),
        ("{k: 1 for k in y}", "uses a comprehension, which is not allowed"),
        ("any(x for x in y)", "calls `any`, which is not allowed"),
        ("(x := 1)", "uses an assignment (:=), which is not allowed"),
        ("f'{x}'", "uses an f-string, which is not allowed"),
        ("[*x]", "uses unpacking (*), which is not allowed"),
        ("a if b else c", "uses a conditional (x if c else y), which is not allowed"),
        ("{'a': 1}", "uses a dict literal, which is not allowed"),
        ("{1, 2}", "uses a set literal, which is not allowed"),
        ("x is None", "uses `is`, which is not allowed: use == or != (such as `x == null`)"),
        ("x is not None", "uses `is`, which is not allowed"),
        ("x[1:2]", "an index must be a literal, such as x[0], x[-1] or x['key']"),
        ("x[y]", "uses `x[y]`, which is not allowed: an index must be a literal"),
        ("x[True]", "an index must be a literal"),
        ("x[-'a']", "an index must be a literal"),
        ("2 ** 100", "uses `2 ** 100`, which is not allowed: use + - * /"),
        ("~x", "uses `~x`, which is not allowed"),
        ("b'x'", "uses `b'x'`, which is not allowed: literals are text or numbers"),
        ("1j", "uses `1j`, which is not allowed"),
        ("...", "uses `...`, which is not allowed"),
        ("await x", "uses `await x`, which is not allowed"),
        ("a && b", "is not a valid expression (col 4): use `and` and `or`"),
        ("(a", "is not a valid expression (col 1): '(' was never closed"),
        ("'abc", "is not a valid expression (col 1): unterminated string literal."),
        ("import os", "is not a valid expression (col 1)"),
        ("a\x00b", "is not a valid expression"),
    ],
)
def test_rejected_constructs(text, message):
    got = rejected(text)
    assert got.startswith(f"{WHERE}: `")
    assert message in got


def test_a_rejected_part_deep_inside_is_found():
    assert "calls `eval`" in rejected("a and (b or [1, len(eval('x'))])")


def test_empty_text_and_non_text():
    empty = f"{WHERE}: the expression is empty: write one such as `task.data.done`."
    assert rejected("   ") == empty
    with pytest.raises(ConfigError, match="True is not an expression: write it as text"):
        parse(True)  # type: ignore[arg-type]  # YAML's `when: true`


def test_nesting_too_deep_is_rejected_not_a_crash():
    assert "nested more than 50 levels deep" in rejected("a" + ".b" * 60)
    assert "nested too deeply" in rejected("not " * 100_000 + "x")
    assert "is not a valid expression" in rejected("(" * 1000 + "x" + ")" * 1000)


def test_long_text_is_cut_in_messages():
    assert len(rejected("x." + "a" * 1000 + " = 1")) < 400


def test_lines_of_a_yaml_block_are_joined():
    expr = parse("triage.data.severity == 'high'\n  and triage.version > 1\n")
    assert expr.text == "triage.data.severity == 'high' and triage.version > 1"
    assert expr.holds(SCOPE)


@given(st.text(max_size=80))
def test_parse_raises_only_config_error(text):
    with contextlib.suppress(ConfigError):
        parse(text)


@given(st.text(alphabet="abxy_.[]()'\"0123456789e-+*/=<>!,: \nandortuflsenl", max_size=40))
def test_expression_like_text_raises_only_config_error_when_parsed_and_evaluated(text):
    with contextlib.suppress(ConfigError):
        expr = parse(text)
        scope = {name: SCOPE["triage"] for name in expr.names}
        expr.evaluate({**scope, "a": TRIAGE, "b": [1, "x", None], "x": None, "y": {"a": 1}})


# --- names and paths -----------------------------------------------------------------------------


def test_names_and_paths():
    expr = parse("triage.data.severity == 'high' and len(ideas.data.items) > inputs['depth']")
    assert expr.names == {"triage", "ideas", "inputs"}
    assert expr.paths == (
        ("triage", "data", "severity"),
        ("ideas", "data", "items"),
        ("inputs", "depth"),
    )


def test_an_integer_index_ends_a_path_and_functions_are_not_names():
    expr = parse("upper(ideas.data.items[0].title) == x and ideas.text and y")
    assert expr.names == {"ideas", "x", "y"}
    assert expr.paths == (("ideas", "data", "items"), ("x",), ("ideas", "text"), ("y",))


def test_expressions_compare_by_text():
    assert parse(" a.b ") == parse("a.b")
    assert isinstance(parse("a.b"), Expression)
    assert parse("a.b").text == "a.b"


# --- check_paths ---------------------------------------------------------------------------------


MODELS = {"triage": Triage, "draft": None}


def problems(text: str) -> list[str]:
    return check_paths(parse(text, where=WHERE), MODELS)


def test_check_paths_finds_a_misspelled_field_with_a_close_match():
    assert problems("triage.data.sevrity == 'high'") == [
        f"{WHERE}: `triage.data.sevrity == 'high'`: triage.data has no field 'sevrity'. "
        "Did you mean 'severity'? Fields: severity, summary, tags, score, owner"
    ]


def test_check_paths_follows_nested_and_optional_models():
    assert problems("triage.data.owner.team == 'ops'") == []
    (problem,) = problems("triage.data.owner.teem == 'ops'")
    assert "triage.data.owner has no field 'teem'. Did you mean 'team'?" in problem
    assert problem.endswith("Fields: name, team")


def test_check_paths_checks_board_entry_fields():
    (problem,) = problems("triage.autor")
    assert "triage has no field 'autor'. Did you mean 'author'?" in problem
    assert "Fields: key, text, data, author, kind, version, created_at, updated_at" in problem
    (problem,) = problems("draft.txt")
    assert "draft has no field 'txt'. Did you mean 'text'?" in problem
    (problem,) = problems("triage.text.summary")
    assert "triage.text has no field 'summary'." in problem


def test_check_paths_accepts_what_it_cannot_know():
    for text in [
        "triage.text and triage.version > 1 and triage.author and triage.data",
        "triage.data.tags[0].anything",  # the index ends the path
        "triage.data.summary.anything",  # a str: checked at run time
        "draft.data.anything",  # no output model
        "inputs.topic and unknown.field",  # not tasks: the caller checks names
        "triage",
    ]:
        assert problems(text) == [], text
    assert check_paths(parse("l.data.anything"), {"l": Loose}) == []


def test_check_paths_knows_computed_fields():
    class Scored(BaseModel):
        points: int

        @computed_field  # type: ignore[prop-decorator]
        @property
        def passed(self) -> bool:
            return self.points > 5

    assert check_paths(parse("s.data.passed"), {"s": Scored}) == []
    assert parse("s.data.passed").evaluate({"s": entry("s", "", Scored(points=7))}) is True


def test_check_paths_where_defaults_to_the_expression_s_where():
    (problem,) = check_paths(parse("triage.data.x", where="a.yaml:3"), {"triage": Triage})
    assert problem.startswith("a.yaml:3: `triage.data.x`: ")
    (problem,) = check_paths(parse("triage.data.x"), {"triage": Triage}, where="b.yaml:4")
    assert problem.startswith("b.yaml:4: ")


def test_the_module_docstring_lists_the_functions_it_allows():
    import crew.expr

    listed = re.findall(r"``(\w+)\(x\)``", crew.expr.__doc__ or "")
    assert listed == ["len", "lower", "upper", "str", "int", "float"]
