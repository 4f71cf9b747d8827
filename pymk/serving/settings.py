"""The service's settings: one pydantic settings object, read from `PYMK_*` environment variables.

`pymk serve` flags override the environment; handlers receive the object through FastAPI's dependency
`get_settings`, so a test can swap it.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """Every knob of the service (environment: `PYMK_<NAME>`, e.g. `PYMK_REDIS_URL`)."""

    model_config = SettingsConfigDict(env_prefix="PYMK_", extra="ignore")

    model: str = Field("", description="model directory from `pymk build`")
    redis_url: str | None = Field(None, description="Redis for the L2 cache, user actions and published stores")
    redis_timeout_ms: float = Field(50.0, gt=0, description="socket timeout of one Redis call")
    redis_retry_s: float = Field(1.0, ge=0, description="after a Redis failure, serve without it this long")
    cache_ttl_s: int = Field(900, ge=1, description="cached recommendations expire after this")
    cache_size: int = Field(100_000, ge=0, description="in-process LRU entries (embedded default; 0 = off)")
    cache_depth: int = Field(100, ge=1, description="recommendations kept per cached user (k above: a miss)")
    default_k: int = Field(20, ge=1)
    max_k: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4096, ge=64, description="larger request bodies are refused with 413")
    stream: bool = Field(True, description="follow posted friendships: every worker tails the edge-event log, "
                         "swaps the live graph into Stage 1 and refreshes the GNN embeddings the model has")
    stream_radius: int = Field(1, ge=0, description="a new edge A-B refreshes the embeddings within this many hops "
                               "of A and B (1: A, B and their friends, the brief's policy; the GNN's layers: all)")
    stream_log: str | None = Field(None, description="edge-event log file without Redis (default: "
                                   "DIR/stream/events.log, or the log an updated model was updated from); with "
                                   "Redis, the stream pymk:stream:<model lineage>:edges, shared by its versions")
    apply_wait_s: float = Field(10.0, ge=0, description="a change posted to this worker is applied before the "
                                "request answers, waiting at most this long for its stream worker")
    read_fence_s: float = Field(2.0, ge=0, description="a request first waits until this worker applied every change "
                                "the event log holds (acknowledged by any worker), at most this long, then answers "
                                "flagged degraded ('stream'); 0: off (other workers' changes show within a poll)")
    stream_block_ms: int = Field(200, ge=1, description="how long a worker waits on the log per poll")
    executor: str = Field("local", pattern="^(local|ray)$", description="where a sharded model's shard servers "
                          "run: local (in this process) or ray (one actor per shard, on the cluster at "
                          "ray_address or a local one)")
    tier: bool | None = Field(None, description="a sharded model served as a stateless ranking tier that maps no "
                              "adjacency: every list read from the shard servers, per request (default: with "
                              "executor=ray); false: the service also maps the whole graph, as an unsharded one does")
    ppr_rounds: int | None = Field(None, ge=0, description="a ranking tier's PPR push rounds through the shard "
                                   "servers, over the model's candidates.ppr.rounds (fewer: faster, less exact; 0: "
                                   "until every residual is below eps * degree)")
    ray_address: str | None = Field(None, description="Ray cluster to attach the shard servers to (default: a "
                                    "local cluster, started with the service)")
    shard_timeout_ms: float = Field(1000.0, gt=0, description="per-call deadline of a shard server; past it the "
                                    "request answers without that shard, flagged degraded ('shard N')")
    shard_server_cpus: float = Field(0.25, ge=0, description="CPUs each Ray shard server reserves (executor=ray); "
                                     "a publish swap holds two versions' servers at once, so the cluster needs room "
                                     "for twice shards x this")
    publish_poll_s: float = Field(1.0, ge=0, description="how often each worker reads its model lineage's "
                                  "publish pointer and swaps to the version `pymk publish` named (0: never)")
    heap_trim_s: float = Field(10.0, ge=0, description="give freed heap memory back to the OS this often (glibc "
                               "keeps what request threads free; 0: never)")
    gc_freeze: bool = Field(True, description="after start-up, move what it made out of the garbage collector's "
                            "generations, so full collections mid-request scan only what requests made since")
    docs: bool = Field(True, description="serve the OpenAPI spec and the /docs and /redoc pages")
    user_names: str | None = Field(None, description="a CSV file 'id,name' (header first) of display names the "
                                   "console shows beside ids (admin scope only); read at start, a malformed file "
                                   "stops the service naming the line")
    metrics_auth: bool = Field(False, description="/metrics asks for an admin key (when the model has keys)")
    rate_limit: float = Field(0.0, ge=0, description="requests per second per API key (without keys: per client "
                              "address), shared by the workers through Redis when configured; 0 = no limit")
    rate_burst: int = Field(0, ge=0, description="requests a caller may make at once (0: twice rate_limit)")
    cold_path: str | None = Field(None, description="tiered embeddings: the cold tier's RocksDB (default: "
                                  "DIR/serving/emb_cold, written by `pymk publish --hot-users N`)")


def get_settings() -> ServeSettings:
    """The FastAPI dependency; each app overrides it with the settings it was created with."""
    return ServeSettings()
