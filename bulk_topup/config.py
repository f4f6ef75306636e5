"""Configuration: option, then environment, then config file, then default.

The config file is TOML in the user's config directory (or ``--config``).
Credentials come from ``STU_KEY`` and ``STU_SECRET`` or from the config file,
never from a command-line option; a config file that holds a secret must be
readable by its owner only.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from .client import Credentials, Endpoints, RefusalPatterns
from .errors import ConfigError
from .models import AmountPolicy

logger = logging.getLogger(__name__)

APP_NAME = "bulk-topup"
DEFAULT_BASE_URL = "https://api.successtopup.com"
# The sandbox accepts any non-empty pair when it has none of its own.
SANDBOX_CREDENTIALS = Credentials("sandbox-key", "sandbox-secret")


@dataclass(frozen=True)
class Settings:
    """Everything a command needs that does not come from the batch file."""

    journal_path: Path
    base_url: str
    credentials: Credentials | None
    trxid_prefix: str = "BK"
    grace_seconds: float = 120.0
    provider_dedupes: bool = False
    repeat_window_hours: float = 12.0
    settle_interval: float = 1.0
    report_dir: Path = field(default_factory=Path.cwd)
    endpoints: Endpoints = field(default_factory=Endpoints)
    patterns: RefusalPatterns = field(default_factory=RefusalPatterns)
    policy: AmountPolicy = field(default_factory=AmountPolicy)
    sandbox: bool = False
    sandbox_ledger: Path | None = None


def default_config_path() -> Path:
    """Return the config file's default location."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_journal_path(*, sandbox: bool) -> Path:
    """Return the default journal; sandbox runs keep their own beside it."""
    folder = Path(platformdirs.user_data_dir(APP_NAME))
    return folder / ("journal-sandbox.sqlite" if sandbox else "journal.sqlite")


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Read the TOML config file; a missing default file is an empty config."""
    explicit = path is not None
    config_path = path or Path(
        os.environ.get("BULK_TOPUP_CONFIG") or default_config_path()
    )
    if not config_path.exists():
        if explicit:
            raise ConfigError(f"Config file not found: {config_path}.")
        return {}
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"Cannot read the config file {config_path}: {error}. Fix the TOML."
        ) from error
    if "secret" in data or "key" in data:
        _check_private(config_path)
    return data


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"The config file {path} holds credentials but other users can "
            f"read it (mode {mode:o}). Run: chmod 600 {path}"
        )


def _pick(option: Any, env_name: str, config: Mapping[str, Any], key: str) -> Any:
    if option is not None:
        return option
    if os.environ.get(env_name):
        return os.environ[env_name]
    return config.get(key)


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}.")


def _as_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a number of seconds, not {value!r}."
        ) from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, not {value!r}.")
    return number


def resolve_settings(
    *,
    journal: Path | None = None,
    config_path: Path | None = None,
    base_url: str | None = None,
    sandbox: bool = False,
) -> Settings:
    """Build the settings from options, the environment and the config file."""
    config = load_config_file(config_path)
    journal_value = _pick(journal, "BULK_TOPUP_JOURNAL", config, "journal")
    if journal_value is None or (sandbox and journal is None):
        journal_path = _sandbox_or_default(journal_value, sandbox=sandbox)
    else:
        journal_path = Path(journal_value).expanduser()
    url = _pick(base_url, "STU_BASE_URL", config, "base_url") or DEFAULT_BASE_URL
    credentials = _credentials(config, sandbox=sandbox)
    return Settings(
        journal_path=journal_path,
        base_url=str(url),
        credentials=credentials,
        trxid_prefix=str(
            _pick(None, "BULK_TOPUP_TRXID_PREFIX", config, "trxid_prefix") or "BK"
        ),
        grace_seconds=_as_float(
            _pick(None, "BULK_TOPUP_GRACE_SECONDS", config, "grace_seconds") or 120,
            "grace_seconds",
        ),
        provider_dedupes=_as_bool(
            _pick(None, "BULK_TOPUP_PROVIDER_DEDUPES", config, "provider_dedupes")
            or False,
            "provider_dedupes",
        ),
        repeat_window_hours=_as_float(
            _pick(None, "BULK_TOPUP_REPEAT_WINDOW_HOURS", config, "repeat_window_hours")
            or 12,
            "repeat_window_hours",
        ),
        settle_interval=_as_float(
            _pick(None, "BULK_TOPUP_SETTLE_INTERVAL", config, "settle_interval") or 1,
            "settle_interval",
        ),
        endpoints=_endpoints(config),
        policy=_policy(config),
        sandbox=sandbox,
        sandbox_ledger=journal_path.with_name(journal_path.stem + "-ledger.sqlite")
        if sandbox
        else None,
    )


def _sandbox_or_default(value: Any, *, sandbox: bool) -> Path:
    if not sandbox:
        return default_journal_path(sandbox=False)
    if value is None:
        return default_journal_path(sandbox=True)
    # A sandbox run never shares the real journal: it sits beside it.
    real = Path(value).expanduser()
    return real.with_name(real.stem + "-sandbox" + (real.suffix or ".sqlite"))


def _credentials(config: Mapping[str, Any], *, sandbox: bool) -> Credentials | None:
    key = os.environ.get("STU_KEY") or config.get("key")
    secret = os.environ.get("STU_SECRET") or config.get("secret")
    if key and secret:
        return Credentials(str(key), str(secret))
    if sandbox:
        return SANDBOX_CREDENTIALS
    return None


def _endpoints(config: Mapping[str, Any]) -> Endpoints:
    paths = config.get("paths", {})
    if not isinstance(paths, Mapping):
        raise ConfigError("The config file's [paths] must be a table.")
    known = Endpoints.__dataclass_fields__
    unknown = sorted(set(paths) - set(known))
    if unknown:
        raise ConfigError(
            f"Unknown API path names in [paths]: {', '.join(unknown)}. "
            f"Known: {', '.join(known)}."
        )
    return Endpoints(**{name: str(value) for name, value in paths.items()})


def _policy(config: Mapping[str, Any]) -> AmountPolicy:
    amounts = config.get("amounts", {})
    if not isinstance(amounts, Mapping):
        raise ConfigError("The config file's [amounts] must be a table.")
    return AmountPolicy(
        minimum=int(amounts.get("minimum", 9)),
        operator_minimums={
            str(k).upper(): int(v) for k, v in amounts.get("minimums", {}).items()
        },
        operator_maximums={
            str(k).upper(): int(v) for k, v in amounts.get("maximums", {}).items()
        },
    )


def warn_short_grace(settings: Settings, request_seconds: float) -> None:
    """Log a warning when the grace period is shorter than a request can take."""
    if settings.grace_seconds <= request_seconds:
        logger.warning(
            "grace_seconds is %.0f, but a request can take %.0f seconds: a row "
            "may be judged unseen while its request is still on its way",
            settings.grace_seconds,
            request_seconds,
        )


def require_credentials(settings: Settings) -> Credentials:
    """Return the credentials, or explain where to set them."""
    if settings.credentials is None:
        raise ConfigError(
            "No credentials: set STU_KEY and STU_SECRET in the environment, or "
            "key and secret in the config file (chmod 600), or use --sandbox."
        )
    return settings.credentials
