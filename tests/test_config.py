"""Settings from defaults, the user's config, ./crew.toml, the environment, .env and flags; and the
process-wide rate limiter that ``[llm] max_rpm`` turns on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from crew import local
from crew.config import Settings
from crew.errors import ConfigError
from crew.llm import LLM, RateLimiter, rate_limiter


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _no_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings should not depend on whether the ``local`` extra happens to be installed."""
    monkeypatch.setattr(local, "available", lambda: False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(project: Path, home: Path, overrides=None, **env: str) -> Settings:
    return Settings.load(cwd=project, env={"HOME": str(home), **env}, overrides=overrides)


def row(settings: Settings, key: str) -> tuple[str, str]:
    found = {k: (value, source) for k, value, source in settings.rows()}
    return found[key]


def problems(project: Path, home: Path, overrides=None, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(project, home, overrides, **env)
    return caught.value.problems


# Precedence: defaults < user config < ./crew.toml < env < flags


def test_defaults_with_nothing_configured(project, home):
    settings = load(project, home)

    assert settings.default_llm() is None
    assert settings.llm_override is None
    assert (settings.max_concurrency, settings.on_failure) == (8, "fail_fast")
    assert row(settings, "llm.model") == ("(not set)", "default")
    assert row(settings, "run.max_concurrency") == ("8", "default")


def test_each_layer_overrides_the_one_below_and_rows_name_the_source(project, home):
    write(
        home / ".config/crew/config.toml",
        '[llm]\nmodel = "openai/user"\ntemperature = 0.1\ntimeout_s = 30\nmax_rpm = 10\n'
        "[run]\nmax_concurrency = 2\n",
    )
    write(project / "crew.toml", '[llm]\nmodel = "openai/project"\ntemperature = 0.3\n')
    settings = load(
        project, home, {"max_concurrency": 5}, CREW_MODEL="openai/env", CREW_MAX_CONCURRENCY="4"
    )

    assert row(settings, "llm.model") == ("openai/env", "env CREW_MODEL")
    assert row(settings, "llm.temperature") == ("0.3", "./crew.toml")
    assert row(settings, "llm.timeout_s") == ("30.0", "~/.config/crew/config.toml")
    assert row(settings, "run.max_concurrency") == ("5", "--max-concurrency")
    assert row(settings, "run.on_failure") == ("fail_fast", "default")
    llm = settings.default_llm()
    assert llm == LLM("openai/env", temperature=0.3, timeout_s=30.0, max_rpm=10)


def test_xdg_config_home_is_respected(project, home, tmp_path):
    write(tmp_path / "xdg/crew/config.toml", '[run]\non_failure = "continue"\n')
    write(home / ".config/crew/config.toml", '[run]\non_failure = "fail_fast"\n')

    settings = load(project, home, XDG_CONFIG_HOME=str(tmp_path / "xdg"))

    assert settings.on_failure == "continue"
    assert row(settings, "run.on_failure")[1] == str(tmp_path / "xdg/crew/config.toml")


def test_a_layer_that_sets_the_model_drops_the_server_of_the_model_below(project, home):
    write(project / "crew.toml", '[llm]\nmodel = "ollama/llama3.1"\napi_base = "http://h:11434"\n')

    assert load(project, home).default_llm() == LLM("ollama/llama3.1", api_base="http://h:11434")
    assert load(project, home, CREW_MODEL="openai/gpt-4o-mini").default_llm() == LLM(
        "openai/gpt-4o-mini"
    )
    switched = load(project, home, CREW_MODEL="openai/x", CREW_API_BASE="http://127.0.0.1:8000/v1")
    assert switched.default_llm() == LLM("openai/x", api_base="http://127.0.0.1:8000/v1")


def test_environment_variables_are_read_and_typed(project, home):
    settings = load(
        project,
        home,
        CREW_MODEL="anthropic/claude-3-5-haiku-latest",
        CREW_API_KEY="sk-ant-0123456789abcd",
        CREW_TEMPERATURE="0.7",
        CREW_ON_FAILURE="continue",
        CREW_LLM="openai/gpt-4o",
    )

    assert settings.llm.temperature == 0.7
    assert settings.on_failure == "continue"
    assert settings.llm_override == "openai/gpt-4o"
    assert row(settings, "llm") == ("openai/gpt-4o", "env CREW_LLM")
    assert row(settings, "llm.api_key") == ("sk-...abcd", "env CREW_API_KEY")
    # --llm / CREW_LLM swaps every agent, so it is also the default.
    assert settings.default_llm() == LLM("openai/gpt-4o", temperature=0.7)


def test_overrides_from_the_command_line_win_and_none_is_ignored(project, home):
    settings = load(project, home, {"llm": "openai/flag", "on_failure": None}, CREW_LLM="openai/e")

    assert settings.llm_override == "openai/flag"
    assert row(settings, "llm") == ("openai/flag", "--llm")
    assert row(settings, "run.on_failure") == ("fail_fast", "default")


def test_an_unknown_override_is_a_problem_with_a_close_match(project, home):
    assert problems(project, home, {"max_concurency": 3}) == [
        "Unknown setting override 'max_concurency'. Did you mean 'max_concurrency'?"
    ]


def test_the_real_environment_is_read_when_none_is_given(project, monkeypatch):
    monkeypatch.setenv("HOME", str(project))
    monkeypatch.setenv("CREW_MODEL", "openai/from-os-environ")

    assert Settings.load(cwd=project).llm.model == "openai/from-os-environ"


# Secrets


def test_keys_are_masked_and_provider_keys_are_listed(project, home):
    write(
        project / "crew.toml",
        '[llm.profiles.fast]\nmodel = "groq/x"\napi_key = "gsk_abcdefghijkl9876"\n',
    )
    settings = load(
        project,
        home,
        OPENAI_API_KEY="sk-proj-0123456789wxyz",
        OPENAI_API_BASE="https://user:hunter2@proxy.example/v1",
        AWS_REGION_NAME="eu-west-1",
        PATH="/usr/bin",
    )
    rows = {key: (value, source) for key, value, source in settings.rows()}

    assert rows["OPENAI_API_KEY"] == ("sk-...wxyz", "env")
    assert rows["OPENAI_API_BASE"] == ("https://user:***@proxy.example/v1", "env")
    assert rows["AWS_REGION_NAME"] == ("eu-west-1", "env")
    assert rows["llm.profiles.fast.api_key"] == ("gsk...9876", "./crew.toml")
    assert "PATH" not in rows
    shown = repr(settings.rows())
    assert "0123456789" not in shown and "hunter2" not in shown and "abcdefghijkl" not in shown


def test_short_secrets_are_hidden_whole(project, home):
    assert row(load(project, home, CREW_API_KEY="sk-short"), "llm.api_key")[0] == "***"


# .env


def test_dotenv_sets_provider_keys_and_crew_settings_but_never_overrides_the_environment(
    project, home
):
    write(
        project / ".env",
        "# keys for this project\n"
        "\n"
        "export ANTHROPIC_API_KEY='sk-ant-abcdefgh1234'\n"
        'OPENAI_API_KEY="sk-dotenv-0000000000" # a comment\n'
        "CREW_MODEL=anthropic/claude-3-5-haiku-latest  # inline comment\n"
        "CREW_TEMPERATURE=0.5\n"
        "UNRELATED=ignored\n",
    )
    env = {"OPENAI_API_KEY": "sk-env-1111111111", "CREW_TEMPERATURE": "0.9"}

    settings = load(project, home, **env)

    assert settings.llm.model == "anthropic/claude-3-5-haiku-latest"
    assert row(settings, "llm.model") == ("anthropic/claude-3-5-haiku-latest", ".env CREW_MODEL")
    assert row(settings, "llm.temperature") == ("0.9", "env CREW_TEMPERATURE")
    assert row(settings, "ANTHROPIC_API_KEY") == ("sk-...1234", ".env")
    assert row(settings, "OPENAI_API_KEY") == ("sk-...1111", "env")
    assert "UNRELATED" not in settings.provider_keys
    assert env == {"OPENAI_API_KEY": "sk-env-1111111111", "CREW_TEMPERATURE": "0.9"}


def test_dotenv_is_exported_to_the_real_environment_for_litellm(project, monkeypatch):
    write(project / ".env", "OPENAI_API_KEY=sk-from-dotenv-1234\nGROQ_API_KEY=gsk-dotenv-5678\n")
    monkeypatch.setenv("HOME", str(project))
    monkeypatch.setenv("GROQ_API_KEY", "gsk-already-set")

    Settings.load(cwd=project)

    assert os.environ["OPENAI_API_KEY"] == "sk-from-dotenv-1234"
    assert os.environ["GROQ_API_KEY"] == "gsk-already-set"


def test_dotenv_can_be_skipped(project, home):
    write(project / ".env", "CREW_MODEL=openai/dotenv\n")

    settings = Settings.load(cwd=project, env={"HOME": str(home)}, read_dotenv=False)

    assert settings.llm.model is None


def test_a_malformed_dotenv_line_is_reported_with_its_number(project, home):
    write(project / ".env", "OPENAI_API_KEY=sk-1\nthis is not an assignment\n")

    assert problems(project, home) == [
        ".env:2: expected NAME=VALUE, got 'this is not an assignment'."
    ]


# Profiles


PROFILES = """\
[llm]
model = "openai/gpt-4o-mini"
temperature = 0.2
timeout_s = 120
fallbacks = ["openai/gpt-4o"]
[llm.profiles.fast]
model = "groq/llama-3.1-8b-instant"
[llm.profiles.local]
model = "ollama/llama3.1"
api_base = "http://127.0.0.1:11434"
temperature = 0.0
"""


def test_a_profile_takes_the_default_models_sampling_but_not_its_server(project, home):
    write(project / "crew.toml", PROFILES)
    settings = load(project, home)

    assert settings.resolve_llm("fast") == LLM(
        "groq/llama-3.1-8b-instant", temperature=0.2, timeout_s=120.0
    )
    assert settings.resolve_llm("local") == LLM(
        "ollama/llama3.1", api_base="http://127.0.0.1:11434", temperature=0.0, timeout_s=120.0
    )
    assert settings.default_llm() == LLM(
        "openai/gpt-4o-mini", temperature=0.2, timeout_s=120.0, fallbacks=("openai/gpt-4o",)
    )
    assert row(settings, "llm.profiles.local.api_base") == ("http://127.0.0.1:11434", "./crew.toml")


def test_a_model_string_resolves_to_itself(project, home):
    write(project / "crew.toml", PROFILES)

    llm = load(project, home).resolve_llm("anthropic/claude-3-5-haiku-latest")

    assert llm == LLM("anthropic/claude-3-5-haiku-latest", temperature=0.2, timeout_s=120.0)


def test_an_unknown_profile_lists_the_profiles_with_a_close_match(project, home):
    write(project / "crew.toml", PROFILES)
    settings = load(project, home)

    with pytest.raises(ConfigError) as caught:
        settings.resolve_llm("fsat")

    message = str(caught.value)
    assert "'fsat' is not a model profile (profiles: fast, local)" in message
    assert "Did you mean 'fast'?" in message
    assert "'openai/gpt-4o-mini'" in message


def test_an_unknown_llm_override_is_reported_at_load_naming_its_source(project, home):
    write(project / "crew.toml", PROFILES)

    (problem,) = problems(project, home, CREW_LLM="lcoal")

    assert problem.startswith("env CREW_LLM: 'lcoal' is not a model profile")
    assert "Did you mean 'local'?" in problem


def test_a_profile_above_replaces_the_same_profile_below_whole(project, home):
    write(home / ".config/crew/config.toml", PROFILES)
    write(project / "crew.toml", '[llm.profiles.local]\nmodel = "openai/local-vllm"\n')
    settings = load(project, home)

    assert settings.resolve_llm("local").api_base is None
    assert settings.resolve_llm("fast").model == "groq/llama-3.1-8b-instant"
    assert row(settings, "llm.profiles.local.model") == ("openai/local-vllm", "./crew.toml")


# Problems: file, key and fix, all at once


def test_unknown_keys_are_reported_with_close_matches_all_at_once(project, home):
    write(
        project / "crew.toml",
        '[llm]\nmodle = "openai/x"\n[llm.profiles.fast]\nmodel = "groq/x"\ntemprature = 0.1\n'
        '[run]\nmax_concurrency = 0\non_failure = "stop"\n[lmm]\n',
    )

    assert sorted(problems(project, home)) == sorted(
        [
            "crew.toml: llm.modle: unknown key (did you mean 'model'?)",
            "crew.toml: llm.profiles.fast.temprature: unknown key (did you mean 'temperature'?)",
            "crew.toml: run.max_concurrency: Input should be greater than or equal to 1 (got 0)",
            "crew.toml: run.on_failure: Input should be 'fail_fast' or 'continue' (got 'stop')",
            "crew.toml: lmm: unknown key (did you mean 'llm'?)",
        ]
    )


def test_problems_from_every_layer_are_reported_together(project, home):
    write(home / ".config/crew/config.toml", "[run]\nmax_concurrency = 'many'\n")
    write(project / "crew.toml", "[llm]\nunheard_of = 1\n")

    found = problems(project, home, CREW_TEMPERATURE="hot")

    assert len(found) == 3
    assert found[0].startswith("~/.config/crew/config.toml: run.max_concurrency: ")
    assert found[1].startswith("crew.toml: llm.unheard_of: unknown key (known keys: model,")
    assert found[2].startswith("env CREW_TEMPERATURE: Input should be a valid number")
    assert "(got 'hot')" in found[2]


def test_invalid_toml_names_the_file_and_line(project, home):
    write(project / "crew.toml", '[llm]\nmodel = "openai/x"\ntemperature 0.2\n')

    (problem,) = problems(project, home)

    assert problem.startswith("crew.toml:3: invalid TOML: ")
    assert "(column" in problem


def test_a_secret_in_a_wrong_value_is_not_echoed(project, home):
    write(project / "crew.toml", '[llm]\napi_key = ["sk-0123456789abcdef"]\n')

    (problem,) = problems(project, home)

    assert problem.startswith("crew.toml: llm.api_key: Input should be a valid string")
    assert "0123456789" not in problem


# The bundled local model as the last resort


def test_with_no_model_the_bundled_local_model_is_the_default(project, home, monkeypatch):
    monkeypatch.setattr(local, "available", lambda: True)
    write(project / "crew.toml", "[llm]\ntemperature = 0.5\napi_base = 'http://ignored'\n")
    settings = load(project, home)

    assert settings.default_llm() == LLM(local.MODEL, temperature=0.5)
    assert row(settings, "llm.model") == ("local/smollm2 (bundled)", "default")


def test_one_providers_key_alone_picks_its_everyday_model_and_says_so(project, home, monkeypatch):
    monkeypatch.setattr(local, "available", lambda: True)  # a key wins over the bundled model
    for key, model in (
        ("OPENAI_API_KEY", "openai/gpt-4.1-mini"),
        ("ANTHROPIC_API_KEY", "anthropic/claude-haiku-4-5"),
    ):
        settings = load(project, home, **{key: "sk-x"})

        assert settings.default_llm() == LLM(model)
        assert settings.default_notice() == (
            f"no model configured: using {model}, as {key} is set (choose with CREW_MODEL)"
        )


def test_with_keys_of_two_providers_the_key_does_not_choose(project, home):
    settings = load(project, home, OPENAI_API_KEY="sk-x", ANTHROPIC_API_KEY="sk-y")

    assert settings.default_llm() is None


def test_crewais_model_variable_is_honoured_from_env_and_dotenv(project, home):
    assert load(project, home, MODEL="openai/from-env").llm.model == "openai/from-env"
    write(project / ".env", "MODEL=anthropic/from-dotenv\n")

    settings = load(project, home)

    assert settings.llm.model == "anthropic/from-dotenv"
    assert row(settings, "llm.model") == ("anthropic/from-dotenv", ".env MODEL")
    assert settings.default_notice() is None  # the user chose it
    assert load(project, home, CREW_MODEL="openai/crew").llm.model == "openai/crew"


# Rate limits


class FakeClock:
    """A clock that moves only when the limiter sleeps, recording each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_limiter_lets_max_rpm_calls_start_per_window_then_spaces_them():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    starts = []

    async def call() -> None:
        await limiter.acquire(3)
        starts.append(clock.now)

    async def main() -> None:
        for _ in range(7):
            await call()

    asyncio.run(main())

    assert starts == [1000.0] * 3 + [1060.0] * 3 + [1120.0]
    # Never more than 3 starts in any 60 s window.
    assert all(sum(s <= t < s + 60 for t in starts) <= 3 for s in starts)


def test_the_limiter_frees_slots_as_old_calls_leave_the_window():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)

    async def main() -> None:
        await limiter.acquire(2)
        clock.now += 45
        await limiter.acquire(2)
        await limiter.acquire(2)  # waits for the first call to leave: 15 s

    asyncio.run(main())

    assert clock.sleeps == [15.0]


def test_the_limiter_works_across_event_loops_and_concurrent_tasks():
    limiter = RateLimiter(window_s=0.05)
    starts: list[float] = []

    async def burst() -> None:
        loop = asyncio.get_running_loop()

        async def one() -> None:
            await limiter.acquire(2)
            starts.append(loop.time())

        await asyncio.gather(*(one() for _ in range(3)))

    asyncio.run(burst())
    asyncio.run(burst())  # a second loop, as crew.run() makes each time

    assert len(starts) == 6


def test_limiters_are_shared_per_model_and_server():
    assert rate_limiter("openai/a", None) is rate_limiter("openai/a", None)
    assert rate_limiter("openai/a", None) is not rate_limiter("openai/a", "http://127.0.0.1:1")
    assert rate_limiter("openai/a", None) is not rate_limiter("openai/b", None)


def test_max_rpm_spaces_real_calls_through_litellm(fake_llm):
    from dataclasses import replace

    from crew.llm import ChatRequest

    llm = replace(fake_llm, model="openai/rpm-test", max_rpm=2)
    limiter = rate_limiter(llm.model, llm.api_base)
    limiter.window_s = 0.2
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}])

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(llm.complete(request) for _ in range(3)))
        return [loop.time() - started]

    (elapsed,) = asyncio.run(main())

    assert elapsed >= 0.2  # the third call waited for the window


def test_max_rpm_must_be_positive():
    with pytest.raises(ConfigError, match="max_rpm"):
        LLM("openai/x", max_rpm=0)
