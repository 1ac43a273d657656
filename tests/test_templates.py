"""Templates: the shipped library, lookup order, template files, parameters, inline schemas."""

from __future__ import annotations

import os
import textwrap
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from crew import templates
from crew.errors import ConfigError
from crew.schema import camel_case, schema_model
from crew.templates import (
    RoleTemplate,
    TaskTemplate,
    builtin_dir,
    find_role,
    find_task,
    library_dirs,
    list_templates,
)

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = Path(__file__).parent / "fixtures" / "spec" / "library"
ROLES = {"researcher", "analyst", "writer", "editor", "reviewer", "planner", "critic", "summarizer"}
TASKS = {"research", "summarize", "write_article", "review", "plan_itinerary", "critique"}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --- the shipped library -------------------------------------------------------------------------


def test_the_library_ships_the_promised_roles_and_tasks():
    found = list_templates()
    assert {t.name for t in found if t.kind == "role"} >= ROLES
    assert {t.name for t in found if t.kind == "task"} >= TASKS
    assert all(t.source == builtin_dir() for t in found)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_role_template_loads_with_a_one_line_about(name):
    role = find_role(name)
    assert isinstance(role, RoleTemplate)
    assert role.about and "\n" not in role.about and len(role.about) <= 100
    assert role.role and len(role.goal) > 40 and len(role.backstory) > 80
    assert role.path == builtin_dir() / "roles" / f"{name}.yaml"
    # Generic roles: a placeholder here would force every crew using them to declare an input.
    assert "{" not in role.role + role.goal + role.backstory


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_template_loads_and_uses_its_params(name):
    task = find_task(name)
    assert isinstance(task, TaskTemplate)
    assert task.about and "\n" not in task.about and len(task.about) <= 100
    assert task.params, "a task template without parameters is just a task"
    text = task.description + task.expected_output
    for param in task.params:
        assert f"{{{param}}}" in text, f"{name}: parameter {param} is never used"
    if task.output_model is not None:
        model, problems = schema_model("Out", task.output_model)
        assert problems == [] and model is not None


def test_the_itinerary_template_returns_structured_days():
    model, _ = schema_model("Itinerary", find_task("plan_itinerary").output_model)
    assert model is not None
    plan = model.model_validate(
        {"title": "Lisbon", "days": [{"day": 1, "theme": "Alfama", "activities": ["Castle"]}]}
    )
    assert plan.days[0].activities == ["Castle"]  # type: ignore[attr-defined]


def test_the_wheel_ships_the_library_where_builtin_dir_looks(monkeypatch, tmp_path):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include == {"roles": "crew/_templates/roles", "tasks": "crew/_templates/tasks"}
    # In a checkout the library is the repository root; installed, it is crew/_templates.
    assert builtin_dir() == ROOT
    packaged = tmp_path / "_templates"
    write(packaged, "roles/only.yaml", "about: a\nrole: r\ngoal: g\nbackstory: b\n")
    monkeypatch.setattr(templates, "_PACKAGE", tmp_path)
    assert builtin_dir() == packaged
    assert [t.name for t in list_templates()] == ["only"]


# --- lookup order --------------------------------------------------------------------------------


def test_crew_templates_path_adds_and_overrides_templates(monkeypatch, tmp_path):
    paths = [str(tmp_path / "missing"), str(LIBRARY)]
    monkeypatch.setenv("CREW_TEMPLATES_PATH", os.pathsep.join(paths))
    assert library_dirs() == [tmp_path / "missing", LIBRARY, builtin_dir()]
    assert find_role("writer").role == "House writer"  # the path comes before the library
    assert find_role("translator").source == LIBRARY
    assert find_role("editor").source == builtin_dir()
    listed = {(t.kind, t.name): t for t in list_templates()}
    assert listed["role", "writer"].path == LIBRARY / "roles" / "writer.yaml"
    assert ("task", "translate") in listed
    assert sum(1 for kind, name in listed if name == "writer") == 1


def test_extra_dirs_come_before_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CREW_TEMPLATES_PATH", str(LIBRARY))
    write(tmp_path, "roles/writer.yaml", "about: a\nrole: Local writer\ngoal: g\nbackstory: b\n")
    assert find_role("writer", [tmp_path]).role == "Local writer"
    assert find_role("writer").role == "House writer"


def test_an_unknown_template_names_close_matches_and_the_folders_searched():
    with pytest.raises(ConfigError) as caught:
        find_role("reseacher")
    message = caught.value.problems[0]
    assert message.startswith("unknown role template 'reseacher' (did you mean 'researcher'?).")
    assert "Role templates: analyst, critic," in message
    assert str(builtin_dir()) in message
    with pytest.raises(ConfigError, match=r"unknown task template 'sumarize' .*'summarize'"):
        find_task("sumarize")


@pytest.mark.parametrize("name", ["../roles/writer", "/etc/passwd", "", "a/b"])
def test_template_names_cannot_walk_out_of_the_library(name):
    with pytest.raises(ConfigError, match="unknown role template"):
        find_role(name)


# --- template files ------------------------------------------------------------------------------


def test_a_broken_template_file_reports_every_problem_with_its_line(tmp_path):
    write(
        tmp_path,
        "tasks/bad.yaml",
        """\
        about: |
          two
          lines
        params:
          subject: {descripton: What}
          bad name: {description: x}
          size: {default: [1, 2]}
        description: About {subject}
        output_model: {type: object, properties: {n: {type: string, pattern: "^a"}}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        find_task("bad", [tmp_path])
    path = tmp_path / "tasks" / "bad.yaml"
    assert caught.value.problems == [
        f"{path}:1 about: must be one line, got 'two\\nlines\\n'.",
        f"{path}:5 params.subject.descripton: unknown field 'descripton' (did you mean"
        " 'description'?). Allowed fields: description, default.",
        f"{path}:6 params.bad name: a parameter name must be a letter or _ then letters, digits,"
        " _ or -, got 'bad name'.",
        f"{path}:7 params.size.default: must be text or a number, got [1, 2].",
        f"{path}:9 output_model.properties.n.pattern: unsupported JSON schema keyword 'pattern';"
        " supported: type, properties, required, items, enum, description, default, title,"
        " additionalProperties, minItems, maxItems, minLength, maxLength, minimum, maximum.",
    ]


def test_list_templates_reports_broken_files(tmp_path):
    write(tmp_path, "roles/broken.yaml", "about: x\nrole: r\n")
    with pytest.raises(ConfigError) as caught:
        list_templates([tmp_path])
    assert caught.value.problems == [
        f"{tmp_path / 'roles' / 'broken.yaml'}:1 goal: this field is required; add `goal: ...`.",
        f"{tmp_path / 'roles' / 'broken.yaml'}:1 backstory: this field is required;"
        " add `backstory: ...`.",
    ]


def test_bind_fills_defaults_and_reports_unknown_missing_and_bad_params():
    task = find_task("translate", [LIBRARY])
    assert task.bind({"language": "French"}) == (
        {"language": "French", "register": "neutral"},
        [],
    )
    _, problems = task.bind({"langauge": "French", "register": ["formal"]})
    assert problems == [
        "task template 'translate' has no parameter 'langauge' (did you mean 'language'?);"
        " it takes: language, register.",
        "parameter 'register' must be text or a number, got ['formal'].",
        "task template 'translate' needs parameter 'language' (The language to translate into);"
        " add it under with:, e.g. with: {language: ...}.",
    ]


# --- inline JSON schemas -------------------------------------------------------------------------


def test_schema_model_supports_nesting_enums_defaults_and_descriptions():
    model, problems = schema_model(
        "Report",
        {
            "type": "object",
            "description": "A report.",
            "properties": {
                "title": {"type": "string", "description": "The title"},
                "score": {"type": "number"},
                "count": {"type": "integer", "default": 1},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "anything": {"type": "array"},
                "meta": {"type": "object"},
                "level": {"enum": ["low", "high"]},
                "author": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
            },
            "required": ["title", "score"],
        },
    )
    assert problems == []
    assert model is not None and model.__name__ == "Report" and model.__doc__ == "A report."
    report = model.model_validate(
        {"title": "T", "score": 2, "level": "high", "author": {"name": "Ann"}, "meta": {"a": 1}}
    )
    assert report.model_dump() == {
        "title": "T",
        "score": 2.0,
        "count": 1,
        "ok": None,
        "tags": None,
        "anything": None,
        "meta": {"a": 1},
        "level": "high",
        "author": {"name": "Ann"},
    }
    assert type(report.author).__name__ == "ReportAuthor"  # type: ignore[attr-defined]
    schema = model.model_json_schema()
    assert schema["properties"]["title"]["description"] == "The title"
    with pytest.raises(ValidationError):
        model.model_validate({"title": "T", "score": 1, "level": "medium"})
    with pytest.raises(ValidationError):
        model.model_validate({"score": 1})


def test_schema_model_keeps_property_names_pydantic_reserves():
    model, problems = schema_model(
        "Copy",
        {
            "type": "object",
            "properties": {
                "schema": {"type": "string"},
                "model_name": {"type": "string"},
                "class": {"type": "string"},
                "two words": {"type": "string"},
            },
            "required": ["schema", "model_name", "class", "two words"],
            "additionalProperties": False,
        },
    )
    assert problems == [] and model is not None
    data = {"schema": "s", "model_name": "m", "class": "c", "two words": "t"}
    assert model.model_validate(data).model_dump() == data
    assert set(model.model_json_schema()["properties"]) == set(data)
    with pytest.raises(ValidationError):
        model.model_validate({**data, "extra": 1})


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (
            {"type": "array"},
            ((), "an inline output_model must be a JSON schema with `type: object`"),
        ),
        (
            {"type": "object", "properties": {"a": {"type": "date"}}},
            (("properties", "a", "type"), "unsupported type 'date'; use string, integer,"),
        ),
        (
            {"type": "object", "properties": {"a": {"type": ["string", "null"]}}},
            (("properties", "a", "type"), "unsupported type ['string', 'null']"),
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
            (("properties", "a", "format"), "unsupported JSON schema keyword 'format'"),
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            (("required",), "must list property names; properties: a."),
        ),
        (
            {"type": "object", "properties": {"a": {"enum": []}}},
            (("properties", "a", "enum"), "must be a non-empty list of values."),
        ),
        (
            {"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}},
            (("properties", "a", "default"), "'x' does not match the type."),
        ),
        (
            {"type": "object", "properties": {"a": "string"}},
            (("properties", "a"), "must be a schema such as {type: string}, got 'string'."),
        ),
        (
            {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "x"}}}},
            (("properties", "a", "items", "type"), "unsupported type 'x'"),
        ),
    ],
)
def test_schema_model_names_what_it_does_not_support(schema, problem):
    model, problems = schema_model("Out", schema)
    assert model is None
    assert len(problems) == 1
    location, message = problems[0]
    assert location == problem[0] and message.startswith(problem[1])


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("itinerary", "Itinerary"),
        ("day_plan", "DayPlan"),
        ("a-b c", "ABC"),
        ("9lives", "Model9lives"),
    ],
)
def test_camel_case(text, name):
    assert camel_case(text) == name


def test_models_from_schemas_are_real_pydantic_models():
    model, _ = schema_model("Out", {"type": "object", "properties": {"a": {"type": "string"}}})
    assert model is not None and issubclass(model, BaseModel)


def test_schema_bounds_reach_the_model_and_its_json_schema():
    from pydantic import ValidationError

    from crew.schema import schema_model

    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 10},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "points": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
        },
        "required": ["title", "score", "points"],
    }
    model, problems = schema_model("Review", schema)
    assert problems == [] and model is not None
    produced = model.model_json_schema()["properties"]
    assert produced["points"]["minItems"] == 2 and produced["points"]["maxItems"] == 3
    assert produced["score"]["minimum"] == 1 and produced["title"]["maxLength"] == 10
    model.model_validate({"title": "ok", "score": 3, "points": ["a", "b"]})
    with pytest.raises(ValidationError):
        model.model_validate({"title": "ok", "score": 9, "points": ["a"]})
