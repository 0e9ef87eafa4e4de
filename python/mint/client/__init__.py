"""The Tinker-compatible clients: ServiceClient, TrainingClient, SamplingClient, RestClient."""

from mint.client.futures import APIFuture
from mint.client.rest import RestClient
from mint.client.sampling import SamplingClient
from mint.client.service import ServiceClient
from mint.client.training import TrainingClient

__all__ = ["APIFuture", "RestClient", "SamplingClient", "ServiceClient", "TrainingClient"]
