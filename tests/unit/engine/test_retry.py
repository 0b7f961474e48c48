from __future__ import annotations

import random

from lobflows.engine import retry
from lobflows.spec import models

POLICY = models.RetryPolicy(
    max_attempts=6, initial_delay_seconds=1, multiplier=2, max_delay_seconds=5
)


def test_delay_seconds_grows_with_every_retry_whatever_the_jitter():
    for seed in range(200):
        rng = random.Random(seed)
        delays = [
            retry.delay_seconds(POLICY, failed_attempt=n, rng=rng) for n in range(1, 5)
        ]
        assert delays == sorted(delays)
        assert 0 <= delays[0] <= 1 <= delays[1] <= 2 <= delays[2] <= 4 <= delays[3] <= 5


def test_delay_seconds_is_capped():
    assert retry.delay_seconds(POLICY, failed_attempt=30, rng=random.Random(1)) == 5


def test_delay_seconds_spreads_runs_that_failed_together():
    rng = random.Random(7)

    delays = {
        round(retry.delay_seconds(POLICY, failed_attempt=3, rng=rng), 3)
        for _ in range(50)
    }

    assert len(delays) > 40


def test_delay_seconds_honours_retry_after_as_a_floor():
    delay = retry.delay_seconds(
        POLICY, failed_attempt=1, retry_after_seconds=30, rng=random.Random(3)
    )

    assert 30 <= delay <= 31


def test_should_retry_stops_at_max_attempts_and_on_permanent_errors():
    assert retry.should_retry(POLICY, attempt=5, retryable=True)
    assert not retry.should_retry(POLICY, attempt=6, retryable=True)
    assert not retry.should_retry(POLICY, attempt=1, retryable=False)
