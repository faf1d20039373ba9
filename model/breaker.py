"""The generator client's circuit breaker: stop hammering a generator that is down, notice at once
when it is back.

States:

- **closed** — every request goes through. ``threshold`` consecutive failures open it.
- **open** — requests fail fast with :class:`GeneratorUnavailable` (``retry_after_s`` = seconds left
  of ``reset_s``). At most once per ``probe_interval_s`` seconds a refused request first asks the
  server's health endpoint (``health()``, bounded by ``health_timeout_s``); when it answers healthy,
  that request goes through as the half-open probe — so the first request after a recovery is
  served, not refused for the whole ``reset_s``. After ``reset_s`` a request goes through as the
  probe without asking.
- **half-open** — one probe request is in flight; the others fail fast. Its success closes the
  breaker, its failure opens it again (for another ``reset_s``); a probe that ends without a verdict
  (cancelled) lets the next request probe.

Times are :func:`time.monotonic` seconds. One event loop; no locks needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from model.errors import GeneratorUnavailable

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]


class CircuitBreaker:
    """Consecutive-failure circuit breaker with health-probed half-open state (see the module docstring).

    ``failures``: consecutive failures that open it (≥ 1). ``reset_s``: how long it stays open without a
    healthy probe (seconds). ``health``: async ``() -> bool`` that never raises (``None``: no probing,
    only ``reset_s``). ``probe_interval_s``: least time between two health probes while open.
    """

    def __init__(
        self,
        failures: int,
        reset_s: float,
        *,
        health: HealthCheck | None = None,
        probe_interval_s: float = 1.0,
        health_timeout_s: float = 2.0,
    ) -> None:
        self.threshold = max(1, failures)
        self.reset_s = reset_s
        self.health = health
        self.probe_interval_s = probe_interval_s
        self.health_timeout_s = health_timeout_s
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self._health_at = 0.0  # when health was last asked (or the breaker last opened)

    @property
    def is_open(self) -> bool:
        """``True`` while open and within ``reset_s`` of the last failure."""
        return self.opened_at is not None and time.monotonic() < self.opened_at + self.reset_s

    def _refuse(self, left: float) -> GeneratorUnavailable:
        return GeneratorUnavailable(
            "The generator is unavailable right now; please try again shortly.", retry_after_s=max(left, 1.0)
        )

    async def admit(self) -> bool:
        """Let a request through or refuse it.

        Returns ``False`` when closed, ``True`` when this request is the half-open probe (the caller
        must then report :meth:`success`, :meth:`failure` or :meth:`end_probe`). Raises
        :class:`GeneratorUnavailable` while open and no probe is allowed.
        """
        if self.opened_at is None:
            return False
        now = time.monotonic()
        left = self.opened_at + self.reset_s - now
        if self.probing:
            raise self._refuse(left)
        if left <= 0:
            self.probing = True
            return True
        if self.health is None or now - self._health_at < self.probe_interval_s:
            raise self._refuse(left)
        self._health_at = now
        self.probing = True  # one health probe at a time; concurrent requests are refused meanwhile
        try:
            async with asyncio.timeout(self.health_timeout_s):
                healthy = await self.health()
        except TimeoutError:
            healthy = False
        except BaseException:
            self.probing = False
            raise
        if not healthy or self.opened_at is None:
            self.probing = False
            if self.opened_at is None:  # closed meanwhile by another request's success
                return False
            raise self._refuse(self.opened_at + self.reset_s - time.monotonic())
        log.info("generator answers /health again: letting one request through (half-open)")
        return True

    def end_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let the next request probe."""
        self.probing = False

    def success(self) -> None:
        """The server answered: close the breaker."""
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        """A request failed because of the server (unreachable, 5xx, cut, unreadable)."""
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            if self.opened_at is None:
                log.warning("generator circuit breaker open for %.0f s after %d failures", self.reset_s, self.failures)
            self.opened_at = self._health_at = time.monotonic()
