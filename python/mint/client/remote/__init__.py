"""Remote clients: the ServiceClient / TrainingClient / SamplingClient / RestClient API over HTTP to a
``mint serve`` (the Tinker REST protocol, JSON bodies). ``mint.ServiceClient(base_url=...)`` returns a
RemoteServiceClient; every other client comes from it."""

from mint.client.remote.futures import RemoteFuture
from mint.client.remote.rest import RemoteRestClient
from mint.client.remote.sampling import RemoteSamplingClient
from mint.client.remote.service import RemoteServiceClient
from mint.client.remote.training import RemoteTrainingClient

__all__ = ["RemoteFuture", "RemoteRestClient", "RemoteSamplingClient", "RemoteServiceClient", "RemoteTrainingClient"]
