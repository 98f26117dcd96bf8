"""A service's ``headroom:``: spare capacity held above the sizing policy's count, as insurance.

Written as a whole number of replicas (``headroom: 2``) or as seconds of the recent peak rate
with a unit (``headroom: 30s``, ``1m``); :mod:`docktor.agent.core.headroom` turns it into
replicas at each decision. Its own module so that the config model stays one screenful per
concern; the model imports it, not the other way round.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docktor.tools.sdk import parse_duration

_HOW = "must be a whole number of replicas (2) or seconds of the recent peak rate with a unit (30s, 1m)"


class Headroom(BaseModel):
    """Replicas, or seconds of the recent peak rate, held above the policy's count (0: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    replicas: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if isinstance(data, bool):  # YAML's yes/no: neither a count nor a duration
            raise ValueError(_HOW)
        if isinstance(data, int):
            if data < 0:
                raise ValueError(f"{_HOW}, not negative")
            return {"replicas": data}
        if isinstance(data, float):
            if not math.isfinite(data) or data < 0 or not data.is_integer():
                raise ValueError(_HOW)
            return {"replicas": int(data)}
        if isinstance(data, str):
            text = data.strip()
            if text.isdigit():
                return {"replicas": int(text)}
            if not text or text[-1].isdigit():  # a bare number is replicas, and those are whole
                raise ValueError(_HOW)
            try:
                seconds = parse_duration(text)
            except ValueError:
                raise ValueError(_HOW) from None
            return {"seconds": seconds}
        if not isinstance(data, dict | Headroom):
            raise ValueError(_HOW)
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Headroom:
        if self.replicas and self.seconds:
            raise ValueError("replicas or seconds, not both")
        return self

    def __bool__(self) -> bool:
        return bool(self.replicas or self.seconds)

    def text(self) -> str:
        """As a user writes it: ``2``, ``30s``, ``0``."""
        return f"{self.seconds:g}s" if self.seconds else str(self.replicas)


#: no headroom: the policy's count as it is
NO_HEADROOM = Headroom()
