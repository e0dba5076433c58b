"""Honouring the homeserver's rate limiter: wait ``retry_after_ms`` and send the request again.

An aiohttp client middleware, so every request the bridge makes (messages, reactions, typing,
receipts, presence) is covered, whichever library call made it. The wait runs on the persona's
clock, which tests inject.
"""

from __future__ import annotations

import json

import structlog
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from .._time import Clock

__all__ = ["RateLimitRetry"]

log = structlog.get_logger("personad.matrix")

# When the homeserver says neither how long nor in its body: the spec's suggestion of a backoff.
_DEFAULT_WAIT_S = 2.0
_MAX_WAIT_S = 300.0


class RateLimitRetry:
    """Retries a request answered 429 ``M_LIMIT_EXCEEDED`` after the time the server asks."""

    def __init__(self, clock: Clock, retries: int) -> None:
        self._clock = clock
        self._retries = retries
        # Waits taken, in seconds (for the log and for tests).
        self.waits: list[float] = []

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        response = await handler(request)
        for attempt in range(1, self._retries + 1):
            if response.status != 429:
                break
            wait = await _wait_of(response)
            response.release()
            self.waits.append(wait)
            log.info(
                "matrix_rate_limited",
                path=request.url.path,
                retry_after_s=round(wait, 3),
                attempt=attempt,
            )
            await self._clock.sleep(wait)
            response = await handler(request)
        return response


async def _wait_of(response: ClientResponse) -> float:
    """Seconds to wait: ``retry_after_ms`` from the body, else the Retry-After header."""
    try:
        body = json.loads(await response.read())
        ms = body.get("retry_after_ms") if isinstance(body, dict) else None
    except (ValueError, UnicodeDecodeError):
        ms = None
    if isinstance(ms, int | float) and ms >= 0:
        return min(ms / 1000, _MAX_WAIT_S)
    header = response.headers.get("Retry-After", "")
    if header.isdigit():
        return min(float(header), _MAX_WAIT_S)
    return _DEFAULT_WAIT_S
