"""A local implementation of the Success TopUp API with a ledger and faults.

It serves every API path on 127.0.0.1 and charges each trxid at most once, or
on every repeat with ``dedupe=False``. Charges settle after a delay. Injected
faults and webhook pushes let the client be tested against the failure that
matters most: a charge whose response is lost.

    with start_sandbox(SandboxConfig(processing_seconds=0.1)) as sandbox:
        httpx.post(sandbox.url + "/api/balance", json=credentials)
"""

from __future__ import annotations

from bulk_topup.sandbox.config import SandboxConfig
from bulk_topup.sandbox.faults import FAULT_NAMES, parse_fault
from bulk_topup.sandbox.runner import RunningSandbox, serve_sandbox, start_sandbox

__all__ = [
    "FAULT_NAMES",
    "RunningSandbox",
    "SandboxConfig",
    "parse_fault",
    "serve_sandbox",
    "start_sandbox",
]
