"""Per-key rate limits (RPM, TPM) and token quotas (per UTC day and month), in process memory.

- RPM: a sliding window of request times: never more than `rpm` requests in any 60 s.
- TPM: a token bucket of `tpm` tokens refilled at tpm/60 per second. Admission reserves
  prompt + max_tokens (x n); `settle` gives back what was not generated. Any 60 s window therefore
  admits at most 2 x TPM reserved tokens (a full bucket plus one minute of refill), and actual tokens
  never exceed the reservation.
- Quotas: used + reserved may never pass the quota: a request whose reservation does not fit gets
  429 `insufficient_quota` with Retry-After = the end of the period. Counters start from the usage
  records in the store (`seed`), so a restart does not reset them.
Checks and reservations happen on the event loop with no await between them, so concurrent
requests of one key cannot overshoot within one server process. With several server processes
sharing one database, each enforces the limits alone: overshoot is bounded by (processes - 1) x limit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jongleur.auth.errors import quota_exceeded, rate_limited
from jongleur.auth.principal import Principal


def day_start(now: float) -> float:
    return now - now % 86400


def month_start(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


def next_month(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return datetime(y, m, 1, tzinfo=UTC).timestamp()


@dataclass
class _KeyState:
    requests: deque[float] = field(default_factory=deque)
    bucket: float = -1.0  # < 0: full (not yet used)
    bucket_at: float = 0.0
    day: float = -1.0
    day_used: int = 0  # used + reserved
    month: float = -1.0
    month_used: int = 0


@dataclass
class Reservation:
    key_id: str
    tokens: int
    tpm: bool
    quota: bool
    settled: bool = False


class Limiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key_id: str) -> _KeyState:
        st = self._keys.get(key_id)
        if st is None:
            st = self._keys[key_id] = _KeyState()
        return st

    def hit(self, p: Principal) -> None:
        """Count one request against RPM (raises 429 when the window is full)."""
        rpm = p.policy.rpm
        if rpm is None:
            return
        now = self.clock()
        q = self._state(p.id).requests
        while q and q[0] <= now - 60:
            q.popleft()
        if len(q) >= rpm:
            raise rate_limited(f"rate limit reached: {rpm} requests per minute", q[0] + 60 - now)
        q.append(now)

    async def seed(self, p: Principal, tokens_since: Callable[[str, float], Awaitable[int]]) -> None:
        """Load the current day's and month's usage from the store (once per period)."""
        pol = p.policy
        if pol.daily_tokens is None and pol.monthly_tokens is None:
            return
        now = self.clock()
        st = self._state(p.id)
        if pol.daily_tokens is not None and st.day != day_start(now):
            used = await tokens_since(p.id, day_start(now))
            if st.day != day_start(now):
                st.day, st.day_used = day_start(now), used
        if pol.monthly_tokens is not None and st.month != month_start(now):
            used = await tokens_since(p.id, month_start(now))
            if st.month != month_start(now):
                st.month, st.month_used = month_start(now), used

    def reserve(self, p: Principal, tokens: int) -> Reservation:
        pol = p.policy
        now = self.clock()
        st = self._state(p.id)
        if pol.daily_tokens is not None:
            if st.day != day_start(now):
                st.day, st.day_used = day_start(now), 0
            if st.day_used + tokens > pol.daily_tokens:
                raise quota_exceeded(f"daily token quota of {pol.daily_tokens} reached", day_start(now) + 86400 - now)
        if pol.monthly_tokens is not None:
            if st.month != month_start(now):
                st.month, st.month_used = month_start(now), 0
            if st.month_used + tokens > pol.monthly_tokens:
                raise quota_exceeded(f"monthly token quota of {pol.monthly_tokens} reached", next_month(now) - now)
        if pol.tpm is not None:
            rate = pol.tpm / 60.0
            level = pol.tpm if st.bucket < 0 else min(pol.tpm, st.bucket + (now - st.bucket_at) * rate)
            if tokens > pol.tpm:
                raise rate_limited(f"this request needs {tokens} tokens (prompt + max_tokens), more than the "
                                   f"limit of {pol.tpm} tokens per minute", 60)
            if tokens > level:
                st.bucket, st.bucket_at = level, now
                raise rate_limited(f"rate limit reached: {pol.tpm} tokens per minute", (tokens - level) / rate)
            st.bucket, st.bucket_at = level - tokens, now
        quota = pol.daily_tokens is not None or pol.monthly_tokens is not None
        if pol.daily_tokens is not None:
            st.day_used += tokens
        if pol.monthly_tokens is not None:
            st.month_used += tokens
        return Reservation(p.id, tokens, tpm=pol.tpm is not None, quota=quota)

    def settle(self, p: Principal, res: Reservation, actual: int) -> None:
        """Give back what was reserved but not used."""
        if res.settled:
            return
        res.settled = True
        unused = max(0, res.tokens - actual)
        st = self._state(res.key_id)
        if res.tpm and p.policy.tpm is not None and st.bucket >= 0:
            st.bucket = min(float(p.policy.tpm), st.bucket + unused)
        if res.quota:
            st.day_used = max(0, st.day_used - unused)
            st.month_used = max(0, st.month_used - unused)
