"""The top-level ``discover:`` block: services found while the daemon runs, besides those the file lists.

``discover: {swarm_labels: true}`` makes a daemon on a Swarm manager scale every service whose
``deploy.labels`` opt in (``docktor.enable=true``) with the service block of ``docktor.yaml``
flattened into ``docktor.*`` labels (:mod:`docktor.agent.config.swarm_labels`), polled every
``interval``, in one stack (``swarm_stack``) or all. Its own module, as the headroom setting is: the config model imports it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from docktor.tools.sdk import PositiveSeconds


class DiscoverConfig(BaseModel):
    """Where else the daemon looks for services to scale."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: scale the Swarm services whose deploy.labels say docktor.enable=true
    swarm_labels: bool = False
    #: how often the engine is asked which services are labelled (created, changed, removed)
    interval: PositiveSeconds = 10.0
    #: only the services of this stack (the name given to ``docker stack deploy``); empty: every stack
    swarm_stack: str | None = None
