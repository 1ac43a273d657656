"""The errors module: what crew's messages may show."""

from __future__ import annotations

from crew.errors import REDACTED, redact


def test_redact_removes_secret_values_and_key_shaped_tokens():
    environ = {
        "OPENAI_API_KEY": "sk-abcdefghijklmnop",
        "GITHUB_TOKEN": "ghp_0123456789abcdef",
        "DB_PASSWORD": "hunter2hunter2",
        "SHORT_SECRET": "1",  # too short to be told from ordinary text: left alone
        "HOME": "/home/someone-long",
    }
    text = (
        "key sk-abcdefghijklmnop, token ghp_0123456789abcdef, password hunter2hunter2, "
        "other sk-ant-api03-XYZxyz0123456789, header Authorization: Bearer eyJhbGciOi.J9abc, "
        "count 1 in /home/someone-long"
    )
    assert redact(text, ["given-secret-value"], environ=environ) == (
        f"key {REDACTED}, token {REDACTED}, password {REDACTED}, other {REDACTED}, "
        f"header Authorization: Bearer {REDACTED}, count 1 in /home/someone-long"
    )
    assert redact("the given-secret-value", ["given-secret-value", None], environ={}) == (
        f"the {REDACTED}"
    )
    assert redact("sk-short and a task-description", environ={}) == (
        "sk-short and a task-description"
    )
