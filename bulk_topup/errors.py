"""The exception tree of bulk-topup.

Row-level problems are data (``models.Problem``), never exceptions. Exceptions
are for a run that cannot go on, and each one carries the exit code that the CLI
returns for it::

    BulkTopupError                  root; the CLI prints it without a traceback
    ├── InputError (65)             the batch file cannot be used; has a code
    │   └── PlanRefused (65)        batch_mismatch, --max-total, --max-rows,
    │                               changed plan options on resume
    ├── JournalError (75)           the journal cannot be used
    │   ├── JournalBusy (75)        another process holds the journal's lock
    │   └── JournalUnusable (2)     the path is not a usable SQLite file
    ├── ConfigError (2)             an option or the config file is unusable
    ├── Interrupted (130)           Ctrl-C
    └── ApiError                    the API failed; raised only by the client
        ├── NotSent                 the request surely never reached the API
        │   └── RateLimited         429; carries Retry-After
        ├── AmbiguousOutcome        it may have reached the API (timeout, reset,
        │                           5xx, unreadable answer)
        └── Refused                 ``result: false`` with HTTP 200
            ├── BalanceRefused (69) insufficient balance: halts the batch
            └── CredentialsRefused (69) wrong key or secret: halts the batch

Only ``NotSent`` is retried. ``client.py`` is the one place where httpx
exceptions become these.
"""

from __future__ import annotations


class BulkTopupError(Exception):
    """Root of every error that bulk-topup raises on purpose."""

    exit_code = 1
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InputError(BulkTopupError):
    """A batch file that cannot be read or used as a whole."""

    exit_code = 65
    code = "unreadable"


class PlanRefused(InputError):
    """A plan that must not be sent: wrong batch id, over a guard, new options."""

    code = "plan_refused"


class JournalError(BulkTopupError):
    """A journal that cannot be opened or written."""

    exit_code = 75
    code = "journal_error"


class JournalBusy(JournalError):
    """A journal locked by another running process."""

    code = "journal_locked"


class JournalUnusable(JournalError):
    """A journal path that is not a usable SQLite file: a usage error."""

    exit_code = 2
    code = "journal_unusable"


class ConfigError(BulkTopupError):
    """An unusable option, environment variable or config file."""

    exit_code = 2
    code = "usage"


class Interrupted(BulkTopupError):
    """A run stopped by Ctrl-C."""

    exit_code = 130
    code = "interrupted"


class ApiError(BulkTopupError):
    """A call to the Success TopUp API that did not return a usable answer."""

    exit_code = 69
    code = "api_error"

    def __init__(
        self, message: str, *, http_status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status


class NotSent(ApiError):
    """A request that surely never reached the API, so it is safe to repeat."""

    code = "not_sent"


class RateLimited(NotSent):
    """An HTTP 429 answer; ``retry_after`` is in seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, http_status=429)
        self.retry_after = retry_after


class AmbiguousOutcome(ApiError):
    """A request that may have been charged: only ``/api/status`` can tell."""

    code = "ambiguous"


class Refused(ApiError):
    """A ``result: false`` answer; ``message`` is the API's own text."""

    code = "refused"


class BalanceRefused(Refused):
    """A refusal for insufficient balance, which halts the batch."""

    code = "insufficient_balance"


class CredentialsRefused(Refused):
    """A refusal of the key or secret, which halts the batch."""

    code = "invalid_credentials"
