"""Configuration: option over environment over file over default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulk_topup.config import (
    DEFAULT_BASE_URL,
    SANDBOX_CREDENTIALS,
    require_credentials,
    resolve_settings,
    warn_short_grace,
)
from bulk_topup.errors import ConfigError


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_defaults_without_anything() -> None:
    settings = resolve_settings()
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.credentials is None
    assert settings.provider_dedupes is False
    assert settings.grace_seconds == 120
    assert settings.journal_path.name == "journal.sqlite"


def test_option_beats_environment_beats_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "c.toml", 'base_url = "http://127.0.0.1:3"\n')
    assert resolve_settings(config_path=config).base_url == "http://127.0.0.1:3"
    monkeypatch.setenv("STU_BASE_URL", "http://127.0.0.1:2")
    assert resolve_settings(config_path=config).base_url == "http://127.0.0.1:2"
    chosen = resolve_settings(config_path=config, base_url="http://127.0.0.1:1")
    assert chosen.base_url == "http://127.0.0.1:1"


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STU_KEY", "k")
    monkeypatch.setenv("STU_SECRET", "s")
    credentials = require_credentials(resolve_settings())
    assert (credentials.key, credentials.secret) == ("k", "s")


def test_readable_config_with_secret_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", 'key = "k"\nsecret = "s"\n', 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_settings(config_path=config)


def test_private_config_gives_credentials(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", 'key = "k"\nsecret = "s"\n')
    credentials = require_credentials(resolve_settings(config_path=config))
    assert credentials.secret == "s"


def test_missing_credentials_explain_fix() -> None:
    with pytest.raises(ConfigError, match="STU_KEY and STU_SECRET"):
        require_credentials(resolve_settings())


def test_sandbox_has_own_journal_and_credentials() -> None:
    settings = resolve_settings(sandbox=True)
    assert settings.journal_path.name == "journal-sandbox.sqlite"
    assert settings.credentials == SANDBOX_CREDENTIALS
    assert settings.sandbox_ledger is not None
    assert settings.sandbox_ledger.parent == settings.journal_path.parent


def test_sandbox_journal_beside_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULK_TOPUP_JOURNAL", str(tmp_path / "real.sqlite"))
    settings = resolve_settings(sandbox=True)
    assert settings.journal_path == tmp_path / "real-sandbox.sqlite"


def test_grace_and_dedupe_from_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml", "grace_seconds = 300\nprovider_dedupes = true\n"
    )
    settings = resolve_settings(config_path=config)
    assert settings.grace_seconds == 300
    assert settings.provider_dedupes is True


def test_broken_toml_is_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", "base_url = \n")
    with pytest.raises(ConfigError, match="Fix the TOML"):
        resolve_settings(config_path=config)


def test_unknown_path_name_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", '[paths]\nrechrge = "/x"\n')
    with pytest.raises(ConfigError, match="rechrge"):
        resolve_settings(config_path=config)


def test_amount_maximums_from_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", "[amounts]\nmaximums = { rb = 1000 }\n")
    assert resolve_settings(config_path=config).policy.maximum_for("RB") == 1000


def test_unclear_boolean_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULK_TOPUP_PROVIDER_DEDUPES", "maybe")
    with pytest.raises(ConfigError, match="true or false"):
        resolve_settings()


def test_short_grace_logs_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BULK_TOPUP_GRACE_SECONDS", "5")
    with caplog.at_level("WARNING", logger="bulk_topup.config"):
        warn_short_grace(resolve_settings(), 45.0)
    assert "grace_seconds is 5" in caplog.text
