"""Run the command line with ``python -m bulk_topup``."""

from bulk_topup.cli import main

main()
