"""Active health probes: a cheap call to a deployment whose circuit is open.

A deployment opts in with `probe: {interval_s: 10}` in its YAML. While its
circuit is not closed, the prober asks the tracker every `interval_s` whether a trial
may go (`admit`, which moves a cooled-down circuit to half-open); when it
may, one tiny completion is sent and recorded like any attempt, so a
recovered deployment closes without waiting for user traffic to find out.

>>> prober = Prober(source, tracker, call=send_probe, clock=time.monotonic)  # doctest: +SKIP
>>> await prober.run_once()  # doctest: +SKIP
['sim-flaky']
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from router.errors import ProviderError
from router.health import AttemptResult, CircuitState, HealthTracker
from router.periodic import Periodic
from router.policy.reload import PolicySource
from router.schema import Deployment, Probe

log = logging.getLogger("router.health")

ProbeCall = Callable[[Deployment, Probe], Awaitable[None]]


class Prober:
    """Sends probes to unavailable deployments that asked for them."""

    def __init__(
        self,
        source: PolicySource,
        health: HealthTracker,
        *,
        call: ProbeCall,
        clock: Callable[[], float],
        tick_s: float = 1.0,
    ) -> None:
        self.source = source
        self.health = health
        self.call = call
        self.clock = clock
        self.tick_s = tick_s
        self._last: dict[str, float] = {}
        self._ticker = Periodic(tick_s, self.run_once, name="router-health-probes")

    async def run_once(self) -> list[str]:
        """Probe every due deployment once; return the names probed."""
        now = self.clock()
        probed = []
        for d in self.source.current.deployments.values():
            if d.probe is None or self.health.state(d.name) is CircuitState.CLOSED:
                continue
            if now - self._last.get(d.name, float("-inf")) < d.probe.interval_s:
                continue
            self._last[d.name] = now
            if not self.health.admit(d.name):
                continue  # still cooling down; try again next interval
            probed.append(d.name)
            await self._probe(d, d.probe)
        return probed

    async def _probe(self, d: Deployment, probe: Probe) -> None:
        self.health.begin(d.name)
        t0 = self.clock()
        try:
            await self.call(d, probe)
        except ProviderError as exc:
            self.health.record(AttemptResult(deployment=d.name, ok=False, latency_s=self.clock() - t0,
                                             error_kind=exc.kind, status_code=exc.status_code,
                                             retry_after_s=exc.retry_after))
            log.info("probe of %s failed: %s", d.name, exc.kind)
            return
        self.health.record(AttemptResult(deployment=d.name, ok=True, latency_s=self.clock() - t0))
        log.info("probe of %s succeeded", d.name)

    def start(self) -> None:
        """Run `run_once` every `tick_s` seconds in the background, if any deployment has a probe."""
        if any(d.probe for d in self.source.current.deployments.values()):
            self._ticker.start()

    async def aclose(self) -> None:
        await self._ticker.aclose()
