"""Per-tenant weighted fair share: virtual token counters.

Each tenant's counter advances by `tokens served / tenant_weight`; among waiting requests of the
same priority, the tenant with the smallest counter goes first. A tenant that becomes active
(new, or back after being idle) starts at the smallest counter of the active tenants (the
virtual clock), never below it: being idle banks no credit.
"""

from __future__ import annotations


class FairShare:
    def __init__(self) -> None:
        self._vtime: dict[str, float] = {}
        self._live: dict[str, int] = {}  # tenant -> unfinished sequences (waiting or running)
        self._clock = 0.0  # never decreases

    def vtime(self, tenant: str) -> float:
        return self._vtime.get(tenant, self._clock)

    @property
    def clock(self) -> float:
        live = [self._vtime[t] for t in self._live]
        if live:
            self._clock = max(self._clock, min(live))
        return self._clock

    def activate(self, tenant: str, count: int = 1) -> None:
        """`count` sequences of this tenant became unfinished."""
        if tenant not in self._live:
            start = self.clock
            self._vtime[tenant] = max(self._vtime.get(tenant, start), start)
        self._live[tenant] = self._live.get(tenant, 0) + count

    def deactivate(self, tenant: str, count: int = 1) -> None:
        left = self._live[tenant] - count
        if left > 0:
            self._live[tenant] = left
            return
        del self._live[tenant]
        # An idle tenant at or behind the clock would restart at the clock anyway: forget it.
        if self._vtime[tenant] <= self.clock:
            del self._vtime[tenant]

    def charge(self, tenant: str, num_tokens: int, weight: float) -> None:
        self._vtime[tenant] = self._vtime.get(tenant, self._clock) + num_tokens / max(weight, 1e-6)

    def num_live(self, tenant: str) -> int:
        return self._live.get(tenant, 0)

    @property
    def live_tenants(self) -> dict[str, int]:
        return dict(self._live)
