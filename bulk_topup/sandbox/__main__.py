"""Run the sandbox with ``python -m bulk_topup.sandbox [OPTIONS]``."""

from __future__ import annotations

import logging

from bulk_topup.sandbox.command import sandbox_serve_command

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sandbox_serve_command(prog_name="python -m bulk_topup.sandbox")
