"""The framework's own floor for bench_serving: a BentoML service whose /recommend validates the
same request model and answers a constant list, served with the same workers and config as
recops' service. The gap between it and recops' /recommend is what recops' work costs."""

from __future__ import annotations

import os
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field

JSONObject = Annotated[dict, ContentType("application/json")]
ITEMS = [{"item_id": i, "title": f"item {i}", "score": 1.0 / (i + 1)} for i in range(10)]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[int, Field(strict=True, ge=0)]
    k: Annotated[int, Field(strict=True, ge=1)] = 10


@bentoml.service(name="floor", workers=int(os.environ.get("FLOOR_WORKERS", "1")))
class Floor:
    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    async def recommend(self, user_id: int, k: int = 10) -> JSONObject:
        return {"user_id": user_id, "items": ITEMS[:k], "fallback": None}

    def __is_ready__(self) -> bool:
        return True
