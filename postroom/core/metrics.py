"""Prometheus metrics: one `Metrics` object owns its registry and the few methods the pipeline calls.

The registry is private to the object (not prometheus-client's global one) so that tests and several
Postroom instances in one process never clash. Spool depth and oldest age are not counted by the pipeline:
a collector reads each watched spool's `counts()` at scrape time, so the numbers match `ls` exactly.

Label cardinality is bounded. Stages, results and outcomes come from fixed sets in the code; tenants,
outbound destinations and refusal/dead-letter reasons go through a `LabelGuard`: the first N distinct values
(plus any pre-registered with `known_tenants`) keep their own series, every later value is counted as
"other". A flood of mail for random tenants or to random domains therefore cannot grow the series set.

With `[smtp] workers` > 1 each worker process counts into prometheus-client's multiprocess files (the
supervisor sets PROMETHEUS_MULTIPROC_DIR before starting them) and the supervisor serves `MergedMetrics`:
the sum over workers, living and dead, plus the spool gauges it reads itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("postroom.metrics")

WebhookOutcome = Literal["delivered", "retry", "permanent"]

OTHER = "other"
NONE = "none"

# Filters range from in-memory throttles (sub-millisecond) to clamd on a large message (tens of seconds).
FILTER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Webhook attempts are bounded by [webhook] timeout (10 s by default).
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LabelGuard:
    """Keeps a label's value set bounded: first `limit` distinct values pass, later ones become "other"."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def allow(self, values: Iterable[str]) -> None:
        """Pre-register values (e.g. configured tenants) so they keep their series whatever arrives first."""
        with self._lock:
            self._seen.update(v for v in values if v)

    def __call__(self, value: str) -> str:
        if not value:
            return NONE
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


class SpoolCounts(Protocol):
    """What the spool collector needs: `postroom.core.spool.Spool` satisfies it, and so can the outbound
    queue."""

    def counts(self) -> Mapping[str, tuple[int, float | None]]: ...


class SpoolCollector(Collector):
    """Reads per-state depth and oldest age from each watched spool at scrape time."""

    def __init__(self) -> None:
        self._spools: dict[str, SpoolCounts] = {}
        self._lock = threading.Lock()

    def watch(self, queue: str, spool: SpoolCounts) -> None:
        with self._lock:
            self._spools[queue] = spool

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "postroom_spool_messages",
            "Messages in the spool, per queue and state.",
            labels=["queue", "state"],
        )
        age = GaugeMetricFamily(
            "postroom_spool_oldest_message_age_seconds",
            "Age of the oldest message per queue and state (0 when the state is empty).",
            labels=["queue", "state"],
        )
        with self._lock:
            spools = list(self._spools.items())
        for queue, spool in spools:
            try:
                counts = spool.counts()
            except OSError as exc:
                # A missing or unreadable spool must not break the whole scrape; /readyz reports it.
                log.warning("cannot read spool for metrics", extra={"queue": queue, "error": str(exc)})
                continue
            for state, (count, oldest) in counts.items():
                depth.add_metric([queue, state], count)
                age.add_metric([queue, state], oldest or 0.0)
        yield depth
        yield age

    def describe(self) -> Iterator[Metric]:
        # Declared without samples so the registry knows the names before any spool is watched.
        yield GaugeMetricFamily("postroom_spool_messages", "", labels=["queue", "state"])
        yield GaugeMetricFamily("postroom_spool_oldest_message_age_seconds", "", labels=["queue", "state"])


class Metrics:
    """Every Postroom metric, in a registry of its own. Methods are cheap and thread-safe."""

    def __init__(
        self,
        *,
        tenant_limit: int = 200,
        destination_limit: int = 50,
        reason_limit: int = 100,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenants = LabelGuard(tenant_limit)
        self.destinations = LabelGuard(destination_limit)
        # Reasons are stable keys from the code, but a bug that put free text there must not explode series.
        self.reasons = LabelGuard(reason_limit)
        self.spools = SpoolCollector()
        reg = self.registry
        reg.register(self.spools)
        if process_metrics:
            ProcessCollector(registry=reg)

        self._sessions = Counter("postroom_smtp_sessions", "SMTP sessions opened.", registry=reg)
        self._sessions_active = Gauge(
            "postroom_smtp_sessions_active",
            "SMTP sessions now open.",
            registry=reg,
            multiprocess_mode="livesum",  # workers: the sum over the living ones
        )
        self._accepted = Counter(
            "postroom_messages_accepted",
            "Messages queued with 250, per tenant (bounded: see LabelGuard).",
            ["tenant"],
            registry=reg,
        )
        self._refused = Counter(
            "postroom_messages_refused",
            "Refusals (4xx or 5xx) per SMTP stage, reason key and deciding filter ('none' for the listener).",
            ["stage", "reason", "filter"],
            registry=reg,
        )
        self._filter = Histogram(
            "postroom_filter_duration_seconds",
            "Time one filter check took, per filter, stage and result; _count counts the checks.",
            ["filter", "stage", "result"],
            buckets=FILTER_BUCKETS,
            registry=reg,
        )
        self._filter_children: dict[tuple[str, str, str], Histogram] = {}
        self._throttle = Counter(
            "postroom_throttle_hits", "Throttle limits hit, per kind of limit.", ["kind"], registry=reg
        )
        self._webhook = Histogram(
            "postroom_webhook_attempt_duration_seconds",
            "Duration of webhook attempts per outcome (delivered, retry, permanent); _count counts them.",
            ["outcome"],
            buckets=WEBHOOK_BUCKETS,
            registry=reg,
        )
        self._dead = Counter(
            "postroom_dead_letters", "Messages moved to dead/, per reason.", ["reason"], registry=reg
        )
        self._normalize_timeouts = Counter(
            "postroom_normalize_timeouts",
            "Messages over [delivery] normalize_timeout, delivered as the fallback ticket.",
            registry=reg,
        )
        self._outbound = Counter(
            "postroom_outbound_deliveries",
            "Outbound delivery attempts per destination (bounded) and outcome.",
            ["destination", "outcome"],
            registry=reg,
        )
        self._auth_lockouts = Counter(
            "postroom_submission_auth_lockouts",
            "Submission AUTH lockouts started, per scope (ip, ip_user, user).",
            ["scope"],
            registry=reg,
        )

    # ---- SMTP listener ------------------------------------------------------------------------------------

    def session_opened(self) -> None:
        self._sessions.inc()
        self._sessions_active.inc()

    def session_closed(self) -> None:
        self._sessions_active.dec()

    def message_accepted(self, tenant: str) -> None:
        self._accepted.labels(self.tenants(tenant)).inc()

    def message_refused(self, stage: str, reason: str, filter: str = "") -> None:
        self._refused.labels(stage, self.reasons(reason), filter or NONE).inc()

    def filter_checked(self, filter: str, stage: str, result: str, seconds: float) -> None:
        # Several checks per message: the labelled child is looked up in a dict of our own, as labels()
        # takes a lock and re-validates the values each time. Filters, stages and results are fixed sets.
        key = (filter, stage, result)
        child = self._filter_children.get(key)
        if child is None:
            child = self._filter_children[key] = self._filter.labels(filter, stage, result)
        child.observe(seconds)

    def throttle_hit(self, kind: str) -> None:
        self._throttle.labels(kind).inc()

    def known_tenants(self, tenants: Iterable[str]) -> None:
        """Tenants from the routing table keep their own series even after the guard is full."""
        self.tenants.allow(tenants)

    # ---- delivery -----------------------------------------------------------------------------------------

    def webhook_attempt(self, outcome: WebhookOutcome, seconds: float) -> None:
        self._webhook.labels(outcome).observe(seconds)

    def dead_lettered(self, reason: str) -> None:
        self._dead.labels(self.reasons(reason)).inc()

    def normalize_timed_out(self) -> None:
        self._normalize_timeouts.inc()

    def outbound_delivery(self, destination: str, outcome: str) -> None:
        """`destination` is a domain or a class of them (e.g. "gmail.com"); bounded by the guard."""
        self._outbound.labels(self.destinations(destination.lower()), outcome).inc()

    def auth_lockout(self, scope: str) -> None:
        self._auth_lockouts.labels(scope).inc()

    # ---- spool and exposition -----------------------------------------------------------------------------

    def watch_spool(self, queue: str, spool: SpoolCounts) -> None:
        """Expose a spool's depth and oldest age; `queue` is "inbound" or "outbound"."""
        self.spools.watch(queue, spool)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from the scraper's Accept header.

        Blocks on disk (the spool collector lists directories): call it from a worker thread.
        """
        return render_registry(self.registry, accept)


class MergedMetrics:
    """The supervisor's /metrics: every worker's metrics from the multiprocess directory, summed."""

    def __init__(self, directory: str) -> None:
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]
        self.spools = SpoolCollector()
        self.registry.register(self.spools)
        ProcessCollector(registry=self.registry)  # the supervisor's own process

    def watch_spool(self, queue: str, spool: SpoolCounts) -> None:
        self.spools.watch(queue, spool)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        return render_registry(self.registry, accept)


class Renders(Protocol):
    """What the ops endpoint serves on /metrics: `Metrics` in one process, `MergedMetrics` over workers."""

    def render(self, accept: str | None = None) -> tuple[bytes, str]: ...


def render_registry(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
