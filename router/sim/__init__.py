"""OpenAI-compatible simulator: fake deployments with latency and faults.

Example:
    >>> from router.sim import Fault, SimModel, SimServer
    >>> flaky = SimModel(name="sim-flaky", error_rates={Fault.RATE_LIMIT: 0.05})
    >>> server = SimServer([flaky], seed=7)
"""

from router.sim.models import Fault, ModelStats, SimModel
from router.sim.server import SimServer

__all__ = ["Fault", "ModelStats", "SimModel", "SimServer"]
