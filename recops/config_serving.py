"""The settings sections of the request path: the service (``serving``: workers, batching,
/search, the serving policy) and its durable logs (``feedback``: the feedback and impression
logs). Sections of the one :class:`recops.config.Settings`; kept here so recops/config.py stays
short."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from recops.config_base import Section


class ServingSettings(Section):
    SECTION: ClassVar[str] = "serving"
    # Old names accepted for one release: "explore_" says it is exploration, not privacy.
    RENAMED: ClassVar[dict[str, str]] = {"epsilon": "explore_epsilon"}

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    auth_token: SecretStr | None = None
    max_k: int = Field(100, ge=1)
    quantize: bool = False
    # `bentoml serve` worker processes, each computing one batch at a time on one torch
    # thread; 0: one per core (BentoML counts the cores this process may use).
    workers: int = Field(0, ge=0, le=256)
    # Adaptive batching of /recommend: the requests that arrive while one batch is computed
    # (at most this many) form the next; a lone request waits for nothing.
    max_batch: int = Field(64, ge=1, le=4096)
    # One log line per request (BentoML's access log) and an OpenTelemetry span per request
    # (useful only with a tracing exporter in BentoML's configuration). Off by default: together
    # they took ~30% of a worker's CPU at full load; a proxy in front usually logs access.
    access_log: bool = False
    request_tracing: bool = False
    # /search: the longest query taken (characters), how many items the query's text similarity
    # keeps as candidates, and the user's model score's weight when re-ranking them (0: the query
    # alone decides). The weight was chosen on ml-latest-small's validation split
    # (benchmarks/bench_search.py, serving/README.md "Search").
    max_query_chars: int = Field(256, ge=1, le=10_000)
    search_candidates: int = Field(100, ge=1, le=10_000)
    search_weight: float = Field(0.7, ge=0.0, le=1.0)
    # What /recommend shows of the model's ranking (recops.policy.policies, docs/policies.md):
    # "greedy" its top-k; "epsilon_greedy" with probability explore_epsilon a uniformly random
    # ordered k of its top policy_top_n instead. Served lists are logged with their propensities
    # (durable before the answer, one fsync per batch of requests). log_impressions unset: on
    # when the policy explores; off for greedy, whose log can estimate no other policy, and the
    # fsync would triple /recommend's latency at concurrency 1 (docs/policies.md). true: always.
    policy: Literal["greedy", "epsilon_greedy"] = "greedy"
    explore_epsilon: float = Field(0.1, ge=0.0, le=1.0, description=(
        "epsilon_greedy's exploration rate: the share of lists drawn at random from the "
        "model's top policy_top_n (not a privacy epsilon)."))
    policy_top_n: int = Field(20, ge=1, le=1000)
    log_impressions: bool | None = None

    def impressions_logged(self) -> bool:
        """Whether /recommend logs its lists: log_impressions, else whether the policy explores."""
        if self.log_impressions is not None:
            return self.log_impressions
        return self.policy != "greedy"


class FeedbackSettings(Section):
    # Where /feedback events are logged durably: "file" (JSONL under paths.feedback, one host)
    # or "postgres" (a table in stores.postgres_dsn's database, shared by every replica).
    backend: Literal["file", "postgres"] = "file"
    table: str = Field("recops_feedback", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Group commit: at most this many concurrent events share one fsync / one transaction.
    max_batch: int = Field(256, ge=1, le=10_000)
    # The impression log's table with the "postgres" backend (the file one is impressions.jsonl).
    impressions_table: str = Field("recops_impressions", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
