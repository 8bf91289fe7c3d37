"""OpenAI-compatible simulator: fake deployments with latency and faults.

Also speaks Anthropic's Messages API (``/v1/messages``) for LiteLLM's
``anthropic/<model>``. Every request is recorded per model
(``SimServer.last_request``) so tests can see what reached the provider.

Example:
    >>> from router.sim import Fault, SimModel, SimServer
    >>> flaky = SimModel(name="sim-flaky", error_rates={Fault.RATE_LIMIT: 0.05})
    >>> server = SimServer([flaky], seed=7)
"""

from router.sim.models import Fault, ModelStats, SimError, SimModel
from router.sim.recording import RecordedRequest
from router.sim.server import SimServer

__all__ = ["Fault", "ModelStats", "RecordedRequest", "SimError", "SimModel", "SimServer"]
