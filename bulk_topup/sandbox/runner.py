"""Starting and stopping the sandbox: in a thread of this process, or blocking.

``start_sandbox`` runs the server on its own event loop in a daemon thread, for
``run --sandbox`` and tests. ``serve_sandbox`` runs it in the foreground until
SIGINT or SIGTERM, for ``bulk-topup sandbox serve``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

from bulk_topup.errors import ConfigError
from bulk_topup.sandbox.api import SandboxApp
from bulk_topup.sandbox.config import LOOPBACK_HOST, SandboxConfig, validate_config
from bulk_topup.sandbox.faults import Draws
from bulk_topup.sandbox.ledger import Ledger
from bulk_topup.sandbox.server import HttpServer
from bulk_topup.sandbox.webhooks import WebhookRates, WebhookSender

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0


class SandboxService:
    """One sandbox's ledger, webhook sender and HTTP server on the running loop."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._ledger: Ledger | None = None
        self._webhooks: WebhookSender | None = None
        self._server: HttpServer | None = None

    async def start(self) -> int:
        """Open the ledger, start listening and return the port.

        Raises ConfigError when the state file or the port cannot be used.
        """
        config = self._config
        ledger = Ledger.open(
            config.state_path,
            balance=config.balance,
            drive_balance=config.drive_balance,
        )
        self._ledger = ledger
        self._webhooks = self._start_webhooks(ledger)
        app = SandboxApp(config, ledger, self._clock, self._webhooks)
        self._server = HttpServer(app.handle)
        try:
            port = await self._server.start(LOOPBACK_HOST, config.port)
        except OSError as error:
            await self.stop()
            raise ConfigError(
                f"Cannot listen on {LOOPBACK_HOST}:{config.port}: {error.strerror}. "
                "Choose another --port, or 0 for a free one."
            ) from error
        logger.info(
            "Sandbox listening on http://%s:%d, ledger %s",
            LOOPBACK_HOST,
            port,
            config.state_path or "in memory",
        )

        return port

    async def stop(self) -> None:
        """Stop the server and the webhook pushes, then close the ledger."""
        if self._server is not None:
            await self._server.stop()
        if self._webhooks is not None:
            await self._webhooks.close()
        if self._ledger is not None:
            self._ledger.close()
        logger.info("Sandbox stopped")

    def _start_webhooks(self, ledger: Ledger) -> WebhookSender | None:
        config = self._config
        if config.webhook_url is None or config.webhook_token is None:
            return None
        rates = WebhookRates(
            duplicate=config.webhook_duplicate,
            reorder=config.webhook_reorder,
            forge=config.webhook_forge,
        )
        sender = WebhookSender(
            config.webhook_url, config.webhook_token, Draws(config.seed), rates
        )
        # Charges made before a restart still owe their final push. Those that
        # settled while the sandbox was down get none, like a missed delivery.
        now = self._clock()
        for charge in ledger.unsettled_charges(now):
            sender.push_settlement(charge, now)

        return sender


class RunningSandbox:
    """A sandbox serving from a daemon thread; stop it, or use it with ``with``."""

    def __init__(
        self,
        service: SandboxService,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        port: int,
    ) -> None:
        self._service = service
        self._loop = loop
        self._thread = thread
        self._stopped = False
        self.port = port
        self.url = f"http://{LOOPBACK_HOST}:{port}"

    def stop(self) -> None:
        """Stop serving and close the ledger; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._service.stop(), self._loop)
        try:
            future.result(timeout=STOP_TIMEOUT_SECONDS)
        finally:
            _end_loop(self._loop, self._thread)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(config: SandboxConfig, *, clock: Clock = time.time) -> RunningSandbox:
    """Start a sandbox in a daemon thread and return once it listens.

    ``clock`` returns Unix seconds; tests pass their own to move charges from
    Processing to their outcome without waiting. Raises ConfigError for an
    unusable setting, state file or port.
    """
    validate_config(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_forever, name="bulk-topup-sandbox", daemon=True
    )
    thread.start()
    service = SandboxService(config, clock)
    future = asyncio.run_coroutine_threadsafe(service.start(), loop)
    try:
        port = future.result(timeout=START_TIMEOUT_SECONDS)
    except BaseException:
        _end_loop(loop, thread)
        raise

    return RunningSandbox(service, loop, thread, port)


def serve_sandbox(config: SandboxConfig, *, clock: Clock = time.time) -> None:
    """Serve a sandbox until SIGINT or SIGTERM, then stop cleanly.

    The first line on stdout is ``listening on http://127.0.0.1:PORT``, flushed
    at once, so that a script can read the port. Raises ConfigError for an
    unusable setting, state file or port.
    """
    validate_config(config)
    asyncio.run(_serve_until_signal(config, clock))


async def _serve_until_signal(config: SandboxConfig, clock: Clock) -> None:
    service = SandboxService(config, clock)
    port = await service.start()
    print(f"listening on http://{LOOPBACK_HOST}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)
        await service.stop()


def _end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=STOP_TIMEOUT_SECONDS)
    if not thread.is_alive():
        loop.close()
