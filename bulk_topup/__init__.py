"""Send mobile recharges in bulk through the Success TopUp API.

The pipeline reads a batch file, validates every row, plans one transaction per
row with a deterministic trxid, journals each step in SQLite before it happens,
sends under a rate limit, settles outcomes through ``/api/status`` and writes a
reconciliation report.
"""

__version__ = "0.1.0"
