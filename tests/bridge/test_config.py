"""Configuration loading: env: secrets, one line per problem, redacted summaries; log redaction."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config, parse_config
from bridge.logsetup import Redactor, configure_logging
from bridge.service import validate_channel
from tests.support.paths import ROOT

GOOD = {
    "database": {"url": "postgresql+asyncpg://bridge:pw-db-123@db:5432/bridge"},
    "bots": {"support": {"release_id": "rel", "api_token": "env:TOKEN_A"}},
    "channels": [
        {
            "name": "web",
            "type": "webhook",
            "bot": "support",
            "secret": "env:WEBHOOK_SECRET",
            "deliver_url": "https://example.com/replies",
        }
    ],
}
ENV = {"TOKEN_A": "tok-aaaa-1111", "WEBHOOK_SECRET": "whsec-0123456789abcdef"}


def problems(data: dict[str, object], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env if env is not None else ENV, validate_channel)
    return info.value.problems


def test_good_config_resolves_env_and_redacts() -> None:
    config = parse_config(GOOD, ENV, validate_channel)
    assert config.bots["support"].api_token.get_secret_value() == "tok-aaaa-1111"
    assert config.channels[0].options["secret"] == "whsec-0123456789abcdef"
    text = json.dumps(config.summary(), default=str)
    for secret in ("tok-aaaa-1111", "whsec-0123456789abcdef", "pw-db-123"):
        assert secret not in text
    assert set(config.secrets()) >= {"tok-aaaa-1111", "whsec-0123456789abcdef"}
    assert config.engine.retry_budget_seconds == 900  # the documented default: 15 minutes


def test_every_problem_is_one_line_naming_its_key() -> None:
    data = {
        "http": {"port": 70000, "colour": "blue"},
        "logging": {"level": "LOUD"},
        "bots": {"support": {"api_token": "env:MISSING_TOKEN"}},
        "channels": [
            {"name": "Bad Name", "type": "carrier-pigeon", "bot": "support"},
            {"name": "web", "type": "webhook", "bot": "nobody", "deliver_url": "ftp://x"},
        ],
    }
    lines = problems(data, {})
    assert "bots.support.api_token: environment variable MISSING_TOKEN is not set" in lines
    assert "http.colour: unknown key" in lines
    assert any(line.startswith("http.port: ") for line in lines)
    assert any(line.startswith("logging.level: ") for line in lines)
    assert "bots.support.release_id: Field required" in lines
    assert any(line.startswith("channels[0].name: ") for line in lines)
    assert all("\n" not in line for line in lines)


def test_channel_cross_checks_and_adapter_options() -> None:
    data = json.loads(json.dumps(GOOD))
    data["channels"].append(dict(data["channels"][0]))  # duplicate name
    data["channels"][1]["bot"] = "nobody"
    lines = problems(data)
    assert "channels[1].name: duplicate channel name 'web'" in lines
    assert any(line.startswith("channels[1].bot: no bot named 'nobody'") for line in lines)

    data = json.loads(json.dumps(GOOD))
    data["channels"][0]["type"] = "carrier-pigeon"
    assert problems(data)[0].startswith("channels[0].type: unknown channel type 'carrier-pigeon'")

    data = json.loads(json.dumps(GOOD))
    del data["channels"][0]["deliver_url"]
    data["channels"][0]["surprise"] = 1
    lines = problems(data)
    assert "channels[0].deliver_url: Field required" in lines
    assert "channels[0].surprise: unknown key" in lines


def test_handover_desks_are_checked_with_the_channels() -> None:
    def with_desk(**handover: object) -> dict[str, object]:
        data = json.loads(json.dumps(GOOD))
        data["bots"]["support"]["handover"] = handover
        return data

    assert problems(with_desk(desk="slack")) == [
        'bots.support.handover: slack_channel: required with desk = "slack"; '
        'agents_channel_id: required with desk = "slack"'
    ]
    slack = {"desk": "slack", "slack_channel": "web", "agents_channel_id": "C1"}
    assert problems(with_desk(**slack)) == [
        "bots.support.handover.slack_channel: no Slack channel named 'web' under [[channels]]"
    ]
    lines = problems(with_desk(desk="webhook", url="ftp://x"))
    assert lines[0].startswith("bots.support.handover.url: String should match pattern")
    lines = problems(with_desk(desk="webhook", url="https://desk.example", secret="short"))
    assert lines == [
        'bots.support.handover: secret: required with desk = "webhook", 16 characters or more'
    ]
    data = with_desk(desk="webhook", url="https://desk.example", secret="s" * 16)
    data["bots"]["a/b"] = data["bots"].pop("support")
    data["channels"][0]["bot"] = "a/b"
    assert problems(data) == [
        "bots.a/b.handover: a webhook desk's bot name is a path segment "
        "(/handover/{bot}/events): letters, digits, '.', '_' and '-' only"
    ]
    lines = problems(with_desk(desk="phone"))
    assert lines[0].startswith("bots.support.handover.desk:")

    data = json.loads(json.dumps(GOOD))
    oauth = {"name": "sl", "type": "slack", "bot": "support", "signing_secret": "s" * 32}
    oauth.update(client_id="1.2", client_secret="c" * 32)
    data["channels"].append(oauth)
    data["bots"]["other"] = {"release_id": "r2", "api_token": "t2"}
    room = {"desk": "slack", "slack_channel": "sl", "agents_channel_id": "C1"}
    data["bots"]["support"]["handover"] = room
    data["bots"]["other"]["handover"] = {**room, "agents_team_id": "T1"}
    lines = problems(data)
    assert lines == [
        "bots.support.handover.agents_team_id: required when the Slack channel installs by "
        "OAuth (the agents' workspace)"
    ]
    data["bots"]["support"]["handover"] = {**room, "agents_team_id": "T1"}
    assert problems(data) == [
        "bots.other.handover.agents_channel_id: the agents' channel of bot 'support' too; "
        "each desk needs its own"
    ]


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert info.value.problems == [f"{tmp_path / 'missing.toml'}: configuration file not found"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[bots\nrelease_id = 1", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert len(info.value.problems) == 1 and "invalid TOML" in info.value.problems[0]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert info.value.problems == [f"{binary}: not UTF-8 text"]


def test_example_and_demo_configs_are_valid() -> None:
    root = ROOT
    env = {name: "x" * 24 for name in ("PARLOA_SUPPORT_TOKEN", "WEBHOOK_SECRET")}
    env["TELEGRAM_BOT_TOKEN"] = "123456:" + "A" * 30
    env["SLACK_BOT_TOKEN"] = "xoxb-1-2-abc"
    env["SLACK_SIGNING_SECRET"] = "s" * 32
    for name in ("demo.toml", "bridge.example.toml"):
        path = root / "config" / name
        if path.exists():
            load_config(path, env, validate_channel)


def test_redactor_hides_configured_secrets_and_token_shapes() -> None:
    redact = Redactor(["s3cret-value"])
    line = (
        "GET https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe "
        "auth=Bearer abc.def s3cret-value xoxb-1234-5678-abcdefgh xapp-1-A0-123-abc"
    )
    out = redact(line)
    for secret in (
        "s3cret-value",
        "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        "abc.def",
        "xoxb-1234-5678-abcdefgh",
        "xapp-1-A0-123-abc",
    ):
        assert secret not in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_logging_redacts_messages_args_and_tracebacks(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", fmt, ["hunter2-token"], stream=stream)
    log = logging.getLogger("bridge.test")
    log.info("token is %s", "hunter2-token")
    try:
        raise RuntimeError("boom hunter2-token")
    except RuntimeError:
        log.exception("failed")
    output = stream.getvalue()
    assert "hunter2-token" not in output
    assert output.count("***") >= 2
    if fmt == "json":
        first = json.loads(output.splitlines()[0])
        assert first["logger"] == "bridge.test" and first["level"] == "INFO"
    logging.getLogger().handlers.clear()


def test_example_config_documents_every_key() -> None:
    import re

    from adapters.slack.options import SlackOptions
    from adapters.telegram.options import TelegramOptions
    from adapters.webchat.channel import WebchatOptions
    from adapters.webhook.channel import WebhookOptions
    from bridge.config import (
        AdminConfig,
        BotConfig,
        DatabaseConfig,
        EngineConfig,
        HandoverConfig,
        HttpConfig,
        LoggingConfig,
        MediaConfig,
        MessagesConfig,
        ParloaConfig,
        SimulatorConfig,
        SpeechToTextConfig,
    )

    text = (ROOT / "config" / "bridge.example.toml").read_text()
    models = [
        DatabaseConfig,
        HttpConfig,
        LoggingConfig,
        ParloaConfig,
        EngineConfig,
        MessagesConfig,
        MediaConfig,
        SpeechToTextConfig,
        AdminConfig,
        SimulatorConfig,
        BotConfig,
        HandoverConfig,
        WebhookOptions,
        TelegramOptions,
        SlackOptions,
        WebchatOptions,
    ]
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name in model.model_fields
        if not re.search(rf"^#?\s*{name}\s*=", text, re.MULTILINE)
    ]
    assert missing == [], f"config/bridge.example.toml does not document: {missing}"


def test_redactor_hides_slack_refresh_and_rotating_tokens() -> None:
    out = Redactor()("refresh xoxe-1-My0xLTEtNjE2 rotating xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4OQ end")
    assert "My0xLTEtNjE2" not in out
    assert "Mi0yLTEyMzQ1Njc4OQ" not in out
    assert out.startswith("refresh ") and out.endswith(" end")


@pytest.mark.parametrize(
    ("password", "shown"),
    [
        ("pw-db-123", "pw-db-123"),
        ("pa@ss:w/rd@xyz", "pa@ss:w/rd@xyz"),  # unencoded @, : and / in the password
        ("p%40ss%2Fword", "p@ss/word"),  # percent-encoded: both forms are secrets
    ],
)
def test_database_password_is_redacted_in_summary_and_logs(password: str, shown: str) -> None:
    url = f"postgresql+asyncpg://bridge:{password}@db.internal:5432/bridge"
    config = parse_config({**GOOD, "database": {"url": url}}, ENV, validate_channel)
    summary = json.dumps(config.summary(), default=str)
    assert "postgresql+asyncpg://bridge:***@db.internal:5432/bridge" in summary
    for part in {password, shown, *password.split("@")[1:]}:
        assert part not in summary
    redact = Redactor(config.secrets())
    line = redact(f"connect failed: password={shown} url={url}")
    assert shown not in line and password not in line
    assert "db.internal" in line


def test_url_without_password_is_left_alone() -> None:
    from bridge.config import redact_url, url_password

    for url in ("sqlite+aiosqlite:///data/bridge.db", "postgresql+asyncpg://bridge@db/x"):
        assert redact_url(url) == url
        assert url_password(url) == []


def test_check_config_notes_what_is_off() -> None:
    from bridge.cli import config_notes

    plain = parse_config({})
    assert any("admin API and console (/admin/) are disabled" in n for n in config_notes(plain))
    on = parse_config(
        {"admin": {"token": "t" * 16}, "http": {"public_url": "https://bridge.example.com"}}
    )
    assert config_notes(on) == []
    problems = []
    try:
        parse_config({"admin": {"token": "short"}})
    except ConfigError as exc:
        problems = exc.problems
    assert problems == ["admin: token: use at least 16 characters"]
