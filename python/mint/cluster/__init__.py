"""Several ``mint serve`` workers behind one adapter-affinity router (docs/SCALING.md, step 1).

``python -m mint.cluster --workers 2 --port 8000 --base-model NAME`` starts the workers (one engine each,
sharing ``$MINT_HOME`` and ``MINT_API_KEYS``) and the router; clients use the router's URL as they would
a single ``mint serve``.
"""

from mint.cluster.launch import Cluster
from mint.cluster.router import Router, create_router_app

__all__ = ["Cluster", "Router", "create_router_app"]
