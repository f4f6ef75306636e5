"""Planning: batch identity, deterministic trxids, and the repeat guard.

A batch's identity is its target, its day in Asia/Dhaka and a fingerprint of
its normalised rows, so the same rows resume the same batch whatever the file
is called and however its rows are ordered. A trxid is a hash of the target,
the batch identity, the row identity, the part and the generation: it is
committed to the journal before anything is sent and never changes.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from .errors import ConfigError, PlanRefused
from .journal import Batch, Journal, Transaction
from .models import (
    AmountPolicy,
    RejectedRow,
    State,
    Validation,
    ValidRow,
)

DHAKA = ZoneInfo("Asia/Dhaka")
TRXID_LENGTH = 24
DEFAULT_PREFIX = "BK"
DEFAULT_REPEAT_WINDOW_HOURS = 12.0
SANDBOX_TARGET = "sandbox"
# States of another batch's row that make an equal row here a repeat: the
# open ones at any age, the final sent ones within the repeat window.
_OPEN_FOR_REPEAT = frozenset(
    {State.SENDING, State.PROCESSING, State.UNKNOWN, State.REVIEW}
)
_SENT_FINAL = frozenset({State.SUCCESS, State.CANCELLED, State.FAILED})


@dataclass(frozen=True)
class PlanOptions:
    """The options that change a plan; they are stored with each batch."""

    skip_invalid: bool = False
    allow_duplicates: bool = False
    allow_repeat: bool = False
    policy: AmountPolicy = field(default_factory=AmountPolicy)

    def to_json(self) -> dict[str, Any]:
        """Return the options as the JSON object stored with a batch."""
        values = asdict(self)
        values["policy"] = {
            "minimum": self.policy.minimum,
            "operator_minimums": dict(sorted(self.policy.operator_minimums.items())),
            "operator_maximums": dict(sorted(self.policy.operator_maximums.items())),
            "split_above": self.policy.split_above,
        }
        return values


@dataclass(frozen=True)
class PlanResult:
    """The batch a file belongs to, and what planning did to the journal."""

    batch: Batch
    created: bool
    superseded: int


def target_of(base_url: str | None, *, sandbox: bool) -> str:
    """Return the target that batches are compared and resumed within.

    The URL is normalised (scheme and host in lower case, no default port, no
    trailing slash, dot segments resolved), so that two spellings of one API
    are one target and the repeat guard compares every batch sent to it.
    """
    if sandbox:
        return SANDBOX_TARGET
    if not base_url:
        raise ConfigError("No API base URL: set --base-url or STU_BASE_URL.")
    return normalise_base_url(base_url)


def normalise_base_url(base_url: str) -> str:
    """Return the canonical form of an API base URL, or raise ConfigError."""
    try:
        url = httpx.URL(base_url.strip())
    except httpx.InvalidURL as error:
        raise ConfigError(f"Invalid base URL {base_url!r}: {error}.") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"Invalid base URL {base_url!r}: use http:// or https:// and a host, "
            "like https://api.successtopup.com."
        )
    port = "" if url.port is None else f":{url.port}"
    path = posixpath.normpath(url.path) if url.path not in ("", "/") else ""
    path = "" if path in (".", "/") else path.rstrip("/")
    return f"{url.scheme}://{url.host.lower()}{port}{path}"


def dhaka_day(now: datetime | None = None) -> str:
    """Return the day in Asia/Dhaka as YYYYMMDD."""
    moment = now or datetime.now(DHAKA)
    return moment.astimezone(DHAKA).strftime("%Y%m%d")


def row_key(row: ValidRow) -> str:
    """Return the key that makes two rows the same recharge.

    The key holds the row's whole amount, not a part's: the parts of a split
    row share it and count as that many occurrences, so the same row sent
    split, unsplit or split another way is still a repeat.
    """
    number, operator, type_, amount, package = row.key
    return f"{number}|{operator}|{type_}|{amount}|{package}"


def fingerprint_rows(validation: Validation) -> str:
    """Return a fingerprint of the normalised rows, blind to order and file."""
    identities = sorted(_row_identities(validation.valid_rows).values())
    digest = hashlib.sha256()
    digest.update(validation.kind.encode())
    for identity in identities:
        digest.update(b"\n" + identity.encode())
    return digest.hexdigest()


def make_trxid(
    prefix: str,
    target: str,
    batch_identity: str,
    row_identity: str,
    part: int,
    generation: int,
) -> str:
    """Return the deterministic trxid of one transaction."""
    source = f"{target}|{batch_identity}|{row_identity}|{part}|{generation}"
    digest = hashlib.sha256(source.encode()).digest()
    encoded = base64.b32encode(digest).decode().rstrip("=").upper()
    return (prefix + encoded)[:TRXID_LENGTH]


def validate_prefix(prefix: str) -> str:
    """Return the trxid prefix if it is 1 to 8 of A-Z and 0-9."""
    if not re.fullmatch(r"[A-Z0-9]{1,8}", prefix):
        raise ConfigError(
            f"Invalid trxid prefix {prefix!r}: use 1 to 8 characters A-Z or 0-9."
        )
    return prefix


def plan_batch(
    journal: Journal,
    validation: Validation,
    *,
    target: str,
    options: PlanOptions,
    batch_id: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    repeat_window_hours: float = DEFAULT_REPEAT_WINDOW_HOURS,
    now: datetime | None = None,
) -> PlanResult:
    """Find the batch that a validated file belongs to, or journal a new one."""
    day = dhaka_day(now)
    fingerprint = fingerprint_rows(validation)
    existing = _existing_batch(journal, target, day, fingerprint, batch_id)
    if existing is not None:
        _check_same_options(existing, options)
        return PlanResult(existing, created=False, superseded=0)
    file_path = Path(validation.table.path)
    explicit_id = batch_id is not None
    batch_id, batch_identity = _batch_identity(
        file_path, target, day, fingerprint, batch_id
    )
    batch_row = {
        "batch_id": batch_id,
        "target": target,
        "kind": validation.kind,
        "file": str(file_path),
        "file_name": file_path.name,
        "day": day,
        "fingerprint": fingerprint,
        "explicit_id": explicit_id,
        "options": options.to_json(),
    }
    rows = _plan_transactions(validation, options, prefix, target, batch_identity)
    for row in rows:
        row["batch_id"] = batch_id
    superseded = _supersede_older_versions(journal, target, day, file_path.name)
    journal.insert_batch(batch_row, rows)
    hold_repeats(journal, batch_id, target, options, repeat_window_hours)
    batch = journal.get_batch(batch_id)
    assert batch is not None
    return PlanResult(batch, created=True, superseded=superseded)


@dataclass(frozen=True)
class Preview:
    """The plan ``run`` would make of a file, computed without writing anything."""

    batch_id: str
    existing: Batch | None
    transactions: list[dict[str, Any]]


def preview_plan(
    journal: Journal | None,
    validation: Validation,
    *,
    target: str,
    options: PlanOptions,
    batch_id: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    repeat_window_hours: float = DEFAULT_REPEAT_WINDOW_HOURS,
    now: datetime | None = None,
) -> Preview:
    """Compute a file's plan and the repeat guard's verdicts, read-only."""
    day = dhaka_day(now)
    fingerprint = fingerprint_rows(validation)
    existing = None
    if journal is not None:
        existing = _existing_batch(journal, target, day, fingerprint, batch_id)
    if existing is not None:
        rows = [
            {**tx.__dict__, "state": tx.state.value}
            for tx in journal.transactions(existing.batch_id)  # type: ignore[union-attr]
        ]
        return Preview(existing.batch_id, existing, rows)
    file_path = Path(validation.table.path)
    batch_id, batch_identity = _batch_identity(
        file_path, target, day, fingerprint, batch_id
    )
    rows = _plan_transactions(validation, options, prefix, target, batch_identity)
    for row in rows:
        row["state"] = State(row["state"]).value
        if journal is None or options.allow_repeat or row["state"] != "planned":
            continue
        repeat_of = find_repeat_of_key(
            journal,
            row["row_key"],
            row["occurrence"],
            batch_id,
            target,
            repeat_window_hours,
            now,
        )
        if repeat_of is not None:
            row.update(state=State.REPEAT.value, repeat_of=repeat_of)
    return Preview(batch_id, None, rows)


def validate_batch_id(batch_id: str) -> str:
    """Return a batch id if it is 1 to 64 of letters, digits, ``.``, ``_``, ``-``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", batch_id):
        raise ConfigError(
            f"Invalid batch id {batch_id!r}: use 1 to 64 letters, digits, dots, "
            "underscores or dashes, starting with a letter or digit."
        )
    return batch_id


def _existing_batch(
    journal: Journal,
    target: str,
    day: str,
    fingerprint: str,
    batch_id: str | None,
) -> Batch | None:
    if batch_id is None:
        return journal.find_batch(target, day, fingerprint)
    batch = journal.get_batch(batch_id)
    if batch is None:
        return None
    if batch.fingerprint != fingerprint or batch.target != target:
        raise PlanRefused(
            f"The batch id {batch_id} belongs to other rows (from {batch.file}). "
            "Choose a new --batch-id for these rows, or run the original file "
            f"to resume {batch_id}.",
            code="batch_mismatch",
        )
    return batch


def _check_same_options(batch: Batch, options: PlanOptions) -> None:
    stored = dict(batch.options)
    wanted = options.to_json()
    changed = sorted(name for name in wanted if stored.get(name) != wanted[name])
    if changed:
        names = ", ".join(changed)
        raise PlanRefused(
            f"The batch {batch.batch_id} was planned with other options ({names}). "
            "Resume it with the options it was planned with, or give "
            "--batch-id to plan a new batch.",
            code="plan_options_changed",
        )


def _batch_identity(
    file_path: Path, target: str, day: str, fingerprint: str, batch_id: str | None
) -> tuple[str, str]:
    """Return the batch id and the identity that its trxids hash."""
    if batch_id is not None:
        return batch_id, f"id|{batch_id}"
    # The shown fingerprint covers the target too, so that the same file sent
    # to the sandbox and to the API gets two batch ids.
    shown = hashlib.sha256(f"{target}|{fingerprint}".encode()).hexdigest()[:8]
    return f"{_stem(file_path)}-{day}-{shown}", f"{day}|{fingerprint}"


def _stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.")
    return stem[:40] or "batch"


def _row_identities(rows: Sequence[ValidRow]) -> dict[int, str]:
    """Return each valid row's identity: its reference, or fields + occurrence."""
    seen: Counter[tuple[str, str, str, int, str]] = Counter()
    identities: dict[int, str] = {}
    for row in rows:
        if row.reference:
            identities[row.source_row] = f"ref|{row.reference}"
            continue
        seen[row.key] += 1
        fields = "|".join(str(value) for value in row.key)
        identities[row.source_row] = f"row|{fields}|{seen[row.key]}"
    return identities


def _plan_transactions(
    validation: Validation,
    options: PlanOptions,
    prefix: str,
    target: str,
    batch_identity: str,
) -> list[dict[str, Any]]:
    identities = _row_identities(validation.valid_rows)
    occurrences: Counter[str] = Counter()
    planned: list[dict[str, Any]] = []
    for row in validation.rows:
        if isinstance(row, ValidRow):
            planned.extend(
                _transactions_of_row(
                    row, identities[row.source_row], options, occurrences
                )
            )
        elif isinstance(row, RejectedRow):
            planned.append(_invalid_transaction(row))
    for seq, tx in enumerate(planned, 1):
        tx["seq"] = seq
        tx["trxid"] = make_trxid(
            prefix, target, batch_identity, tx.pop("identity"), tx["part"], 1
        )
    return planned


def _transactions_of_row(
    row: ValidRow,
    identity: str,
    options: PlanOptions,
    occurrences: Counter[str],
) -> list[dict[str, Any]]:
    is_duplicate = row.duplicate_of is not None and not options.allow_duplicates
    parts = (row.amount,) if is_duplicate else (row.parts or (row.amount,))
    key = row_key(row)
    # Occurrences count rows, not parts: every part of a row shares one.
    occurrences[key] += 1
    transactions = []
    for part, amount in enumerate(parts, 1):
        transactions.append(
            {
                "identity": identity,
                "source_row": row.source_row,
                "part": part,
                "parts": len(parts),
                "generation": 1,
                "occurrence": occurrences[key],
                "row_key": key,
                "number": row.number,
                "operator": row.operator,
                "type": row.type,
                "amount": amount,
                "package_id": row.package_id,
                "reference": row.reference,
                "state": State.DUPLICATE if is_duplicate else State.PLANNED,
                "reason": "duplicate_row" if is_duplicate else None,
                "duplicate_of": row.duplicate_of,
                "warnings": row.warnings,
                "notes": row.notes,
                "raw": row.raw,
            }
        )
    return transactions


def _invalid_transaction(row: RejectedRow) -> dict[str, Any]:
    raw_text = "|".join(f"{name}={value}" for name, value in sorted(row.raw.items()))
    return {
        "identity": f"invalid|{row.source_row}|{raw_text}",
        "source_row": row.source_row,
        "part": 1,
        "parts": 1,
        "generation": 1,
        "occurrence": 1,
        "row_key": f"invalid|{row.source_row}",
        "state": State.INVALID,
        "reason": ",".join(row.reasons),
        "message": " ".join(problem.message for problem in row.problems),
        "raw": row.raw,
    }


def _supersede_older_versions(
    journal: Journal, target: str, day: str, file_name: str
) -> int:
    unsent: list[str] = []
    for batch in journal.batches_of_file(target, day, file_name):
        unsent.extend(
            tx.trxid
            for tx in journal.transactions(batch.batch_id, (State.PLANNED, State.HELD))
        )
    if unsent:
        journal.transition_many(
            unsent, State.SUPERSEDED, cause="a newer version of the file was planned"
        )
    return len(unsent)


def find_repeat(
    journal: Journal,
    tx: Transaction,
    target: str,
    window_hours: float,
    now: datetime | None = None,
) -> str | None:
    """Return the trxid that another batch already paid or has in flight."""
    return find_repeat_of_key(
        journal, tx.row_key, tx.occurrence, tx.batch_id, target, window_hours, now
    )


def find_repeat_of_key(
    journal: Journal,
    key: str,
    occurrence: int,
    batch_id: str,
    target: str,
    window_hours: float,
    now: datetime | None = None,
) -> str | None:
    """Return the other batch's trxid that a row with this key repeats.

    Equal rows are counted: the n-th equal row of this batch is a repeat only
    when other batches have at least n qualifying rows.
    """
    cutoff = (now or datetime.now(DHAKA)) - timedelta(hours=window_hours)
    # Rows of other batches, each with the trxids of its parts: a row counts
    # once however it was split, and as paid when any of its parts counts.
    rows: dict[tuple[str, int, int], list[Transaction]] = {}
    for other in journal.matching_transactions(target, key, batch_id):
        rows.setdefault(
            (other.batch_id, other.source_row, other.generation), []
        ).append(other)
    qualifying = [
        parts
        for parts in rows.values()
        if any(_counts_as_paid(other, cutoff) for other in parts)
    ]
    if len(qualifying) >= occurrence:
        return qualifying[occurrence - 1][0].trxid
    return None


def _counts_as_paid(other: Transaction, cutoff: datetime) -> bool:
    if other.state in _OPEN_FOR_REPEAT:
        return True
    if other.state in _SENT_FINAL and other.first_sent_at:
        return datetime.fromisoformat(other.first_sent_at) >= cutoff
    return False


def hold_repeats(
    journal: Journal,
    batch_id: str,
    target: str,
    options: PlanOptions,
    window_hours: float,
    trxids: Iterable[str] | None = None,
) -> list[str]:
    """Move unsent rows that repeat another batch's rows to ``repeat``."""
    if options.allow_repeat:
        return []
    candidates = journal.transactions(batch_id, (State.PLANNED, State.HELD))
    if trxids is not None:
        wanted = set(trxids)
        candidates = [tx for tx in candidates if tx.trxid in wanted]
    held = []
    for tx in candidates:
        repeat_of = find_repeat(journal, tx, target, window_hours)
        if repeat_of is not None:
            journal.transition(
                tx.trxid,
                State.REPEAT,
                cause="repeat of another batch",
                fields={"repeat_of": repeat_of, "reason": "repeat"},
            )
            held.append(tx.trxid)
    return held


def options_from_batch(batch: Batch) -> PlanOptions:
    """Return the plan options stored with a batch."""
    stored: Mapping[str, Any] = batch.options
    policy = stored.get("policy", {})
    return PlanOptions(
        skip_invalid=bool(stored.get("skip_invalid")),
        allow_duplicates=bool(stored.get("allow_duplicates")),
        allow_repeat=bool(stored.get("allow_repeat")),
        policy=AmountPolicy(
            minimum=policy.get("minimum", 9),
            operator_minimums=policy.get("operator_minimums", {}),
            operator_maximums=policy.get("operator_maximums", {}),
            split_above=policy.get("split_above"),
        ),
    )
