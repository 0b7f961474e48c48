"""When to try a failed step again.

Delays grow exponentially and are spread with jitter so that many runs
failing together do not come back together. The n-th retry waits a random
time between the caps of retry n-1 and n (0 for the first), so every wait
is longer than the one before while the spread stays as wide as each band.
A ``Retry-After`` from the other side is a floor, plus a little jitter.
"""

from __future__ import annotations

import random

from lobflows.spec import models

RETRY_AFTER_JITTER_SECONDS = 1.0


def cap_seconds(policy: models.RetryPolicy, retry: int) -> float:
    """The longest wait before the given retry (1 = the first retry)."""
    if retry <= 0:
        return 0.0
    cap = policy.initial_delay_seconds * policy.multiplier ** (retry - 1)
    return min(cap, policy.max_delay_seconds)


def delay_seconds(
    policy: models.RetryPolicy,
    *,
    failed_attempt: int,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """How long to wait after attempt number `failed_attempt` failed."""
    rng = rng or random
    low = cap_seconds(policy, failed_attempt - 1)
    high = cap_seconds(policy, failed_attempt)
    delay = rng.uniform(low, high) if high > low else high
    if retry_after_seconds is not None and retry_after_seconds > delay:
        spread = min(RETRY_AFTER_JITTER_SECONDS, retry_after_seconds * 0.1)
        delay = retry_after_seconds + rng.uniform(0, spread)
    return delay


def should_retry(policy: models.RetryPolicy, *, attempt: int, retryable: bool) -> bool:
    return retryable and attempt < policy.max_attempts
