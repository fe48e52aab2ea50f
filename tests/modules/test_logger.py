"""The logger module and micro.log: secrets redacted wherever they occur, levels per logger."""

from __future__ import annotations

import structlog
from pydantic import BaseModel, SecretStr

from micro import Micro, Settings
from micro.log import REDACTED, configure_logging, redact_text
from tests.modules.support import LogLines

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
PASSWORD = "Hunter2-Hunter2-Hunter2"


class Login(BaseModel):
    login: str
    password: str


def test_secret_fields_are_redacted_at_any_depth(log_lines: LogLines) -> None:
    log = structlog.get_logger("micro.test")
    log.info(
        "signing in",
        password=PASSWORD,
        request={"user": {"login": "ann", "Password": PASSWORD, "api_key": "k-1"}},
        attempts=[{"token": TOKEN}, {"note": "fine"}],
        model=Login(login="ann", password=PASSWORD),
        secret_str=SecretStr(PASSWORD),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    [record] = log_lines.records()
    assert record["password"] == REDACTED
    assert record["request"] == {
        "user": {"login": "ann", "Password": REDACTED, "api_key": REDACTED}
    }
    assert record["attempts"] == [{"token": REDACTED}, {"note": "fine"}]
    assert record["model"] == {"login": "ann", "password": REDACTED}
    assert record["headers"] == {"Authorization": REDACTED}
    assert PASSWORD not in log_lines.getvalue()
    assert TOKEN not in log_lines.getvalue()


def test_tokens_and_credentials_inside_any_text_are_redacted(log_lines: LogLines) -> None:
    log = structlog.get_logger("micro.test")
    log.info(f"calling with {TOKEN}", detail=f"url?password={PASSWORD}&x=1", auth=f"Bearer {TOKEN}")
    try:
        raise RuntimeError(f"refused token {TOKEN} for password: {PASSWORD}")
    except RuntimeError:
        log.exception("request failed")
    text = log_lines.getvalue()
    assert TOKEN not in text
    assert PASSWORD not in text
    records = log_lines.records()
    assert records[0]["event"] == f"calling with {REDACTED}"
    assert records[0]["detail"] == f"url?password={REDACTED}&x=1"
    assert "RuntimeError" in str(records[1]["exception"])


def test_validation_errors_do_not_echo_their_input() -> None:
    text = "1 validation error\n  Value error [type=value_error, input_value='Hunter2', input_type=str]"
    assert "Hunter2" not in redact_text(text)


def test_ordinary_text_is_left_alone() -> None:
    for text in (
        "token refused: the session has ended",
        "auth: no key configured, using a development key",
        "models caught up in 0.2 s",
    ):
        assert redact_text(text) == text


def test_console_tracebacks_are_redacted_and_show_no_locals() -> None:
    console = LogLines()
    configure_logging("info", "console", console, force=True)
    try:
        secret_local = PASSWORD  # noqa: F841 - a rich traceback would print it
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            structlog.get_logger("micro.test").exception("failed")
    finally:
        configure_logging(force=True)
    assert "ValueError" in console.getvalue()
    assert TOKEN not in console.getvalue()
    assert PASSWORD not in console.getvalue()


def test_levels_are_set_per_logger_and_the_loggers_below_it(log_lines: LogLines) -> None:
    configure_logging(
        "info",
        "json",
        log_lines,
        force=True,
        levels={"micro.quiet": "error", "micro.loud": "debug"},
    )
    structlog.get_logger("micro.quiet.below").warning("dropped: below error")
    structlog.get_logger("micro.quiet").error("kept: an error")
    structlog.get_logger("micro.loud.deep").debug("kept: debug is on here")
    structlog.get_logger("micro.other").debug("dropped: global level is info")
    structlog.get_logger("micro.quieter").info("kept: not below micro.quiet")
    records = log_lines.records()
    assert [r["event"] for r in records] == [
        "kept: an error",
        "kept: debug is on here",
        "kept: not below micro.quiet",
    ]
    assert records[1]["logger"] == "micro.loud.deep"


def test_the_logger_module_applies_the_levels_from_settings(
    micro_settings: Settings, log_lines: LogLines
) -> None:
    micro = Micro(
        micro_settings,
        log_level="warning",
        log_format="json",
        log_levels="micro.billing=debug",
    )
    logger = micro.modules.get("logger")
    # The module writes to stderr; point it back at the captured lines for the test.
    configure_logging("warning", "json", log_lines, force=True, levels=logger.levels)
    logger.get("micro.billing").debug("kept", amount=3)
    logger.get("micro.other").info("dropped")
    logger.set_level("micro.other", "info")
    logger.get("micro.other").info("kept now")
    records = log_lines.records()
    assert [r["event"] for r in records] == ["kept", "kept now"]
    assert records[0]["service"] == "micro"
