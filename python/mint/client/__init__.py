"""The Tinker-compatible clients: ServiceClient, TrainingClient, SamplingClient."""

from mint.client.futures import APIFuture
from mint.client.sampling import SamplingClient
from mint.client.service import ServiceClient
from mint.client.training import TrainingClient

__all__ = ["APIFuture", "SamplingClient", "ServiceClient", "TrainingClient"]
