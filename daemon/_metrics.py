"""Prometheus metrics, one registry per daemon so that several can live in one process (tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_GEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _StateCollector(Collector):
    """Reads queue depths and loaded models at scrape time instead of tracking every change."""

    def __init__(
        self,
        depths: Callable[[], Mapping[tuple[str, str], int]],
        loaded: Callable[[], Iterable[str]],
        kv_bytes: Callable[[], Mapping[str, tuple[int, int]]],
        kv_discarded: Callable[[], Mapping[tuple[str, str], int]],
    ) -> None:
        self._depths = depths
        self._loaded = loaded
        self._kv_bytes = kv_bytes
        self._kv_discarded = kv_discarded

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "personad_queue_depth",
            "Requests waiting in a model's queue.",
            labels=["model", "priority"],
        )
        for (model, priority), n in sorted(self._depths().items()):
            depth.add_metric([model, priority], n)
        loaded = GaugeMetricFamily(
            "personad_model_loaded", "1 for each model resident in memory.", labels=["model"]
        )
        for model in sorted(self._loaded()):
            loaded.add_metric([model], 1)
        kv = GaugeMetricFamily(
            "personad_kv_cache_bytes", "Bytes of stored KV states.", labels=["model", "where"]
        )
        for model, (ram, disk) in sorted(self._kv_bytes().items()):
            kv.add_metric([model, "ram"], ram)
            kv.add_metric([model, "disk"], disk)
        # Counted by each model's KV store (which has no registry); the manager keeps the
        # totals of unloaded models, so the counter never goes down.
        discarded = CounterMetricFamily(
            "personad_kv_states_discarded",
            "KV state files thrown away: malformed, truncated, other_model, unreadable, or a "
            "partial write left by a crash.",
            labels=["model", "reason"],
        )
        for (model, reason), n in sorted(self._kv_discarded().items()):
            discarded.add_metric([model, reason], n)
        return [depth, loaded, kv, discarded]


class _RunnerCollector(Collector):
    """Runner restarts, crashes by kind and liveness, read from the runner book."""

    def __init__(self, runners: Callable[[], Mapping[str, Any]]) -> None:
        self._runners = runners

    def collect(self) -> Iterable[Metric]:
        restarts = CounterMetricFamily(
            "personad_runner_restarts",
            "Times a model's runner process was restarted after a crash or a failed probe.",
            labels=["model"],
        )
        crashes = CounterMetricFamily(
            "personad_runner_crashes",
            "Runner crashes by reason: the signal (SIGKILL, SIGABRT...), exit_N, "
            "probe_timeout (killed for missing the liveness probe) or load_failed.",
            labels=["model", "reason"],
        )
        up = GaugeMetricFamily(
            "personad_runner_up",
            "1 while the model's runner is ready, 0 while it restarts or has failed.",
            labels=["model", "state"],
        )
        for model, status in sorted(self._runners().items()):
            restarts.add_metric([model], status.restarts)
            for reason, n in sorted(status.crashes.items()):
                crashes.add_metric([model, reason], n)
            if status.state != "stopped":
                up.add_metric([model, status.state], 1 if status.state == "ready" else 0)
        return [restarts, crashes, up]


class Metrics:
    """The daemon's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_wait = Histogram(
            "personad_queue_wait_seconds",
            "Time a request waited in the queue before it ran.",
            ["model", "priority"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "personad_prompt_tokens",
            "Prompt tokens evaluated.",
            ["model"],
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "personad_generated_tokens",
            "Tokens generated.",
            ["model"],
            registry=self.registry,
        )
        self.generation_seconds = Histogram(
            "personad_generation_seconds",
            "Time a request held the model's worker.",
            ["model"],
            buckets=_GEN_BUCKETS,
            registry=self.registry,
        )
        self.kv_lookups = Counter(
            "personad_kv_cache_lookups",
            "Prompts served from a stored KV state (hit), from the state still live in the "
            "context or a slot (live), or evaluated from the start (miss).",
            ["model", "result"],
            registry=self.registry,
        )
        self.kv_tokens = Counter(
            "personad_kv_cache_tokens",
            "Prompt tokens restored from KV state versus evaluated.",
            ["model", "kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "personad_requests",
            "Requests answered, by outcome.",
            ["model", "outcome"],
            registry=self.registry,
        )

    def watch(
        self,
        depths: Callable[[], Mapping[tuple[str, str], int]],
        loaded: Callable[[], Iterable[str]],
        kv_bytes: Callable[[], Mapping[str, tuple[int, int]]],
        kv_discarded: Callable[[], Mapping[tuple[str, str], int]] = dict,
    ) -> None:
        """Expose live state (queue depths, loaded models, KV bytes, discards) when scraped."""
        self.registry.register(_StateCollector(depths, loaded, kv_bytes, kv_discarded))

    def watch_runners(self, runners: Callable[[], Mapping[str, Any]]) -> None:
        """Expose the runners' restarts, crashes and state (a ``RunnerStatus`` per model)."""
        self.registry.register(_RunnerCollector(runners))
