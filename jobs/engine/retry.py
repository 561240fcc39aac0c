"""What happens to a failed attempt: another attempt later, or failure for good (DESIGN §4).

``retry_limit`` and ``retry_delay`` are read when the failure happens, so an operator's change applies
to the next failure without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.engine.bus import MAX_COUNTDOWN_SECONDS
from settings_app.services import settings_get_ints


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: int
    limit: int

    @property
    def use_countdown(self) -> bool:
        return self.retry and self.delay <= MAX_COUNTDOWN_SECONDS


def decide(*, attempt: int, permanent: bool) -> RetryDecision:
    """``attempt`` is the 1-based number of the attempt that just failed."""
    values = settings_get_ints("retry_limit", "retry_delay")
    limit, delay = values["retry_limit"], values["retry_delay"]
    return RetryDecision(retry=not permanent and attempt <= limit, delay=delay, limit=limit)
