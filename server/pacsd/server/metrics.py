"""Prometheus text endpoint: what the server has done, read when scraped.

Nothing is counted here on the DICOM path. The tracker, the add-in records, the
log bus and the store counter already count what they see (under their own short
locks); ``PacsdCollector`` turns their snapshots into metric families on each scrape.
So an idle endpoint costs nothing, and a busy server pays no per-message metric
overhead. The collector lives in its own ``CollectorRegistry`` (never the global
one), so an add-in that registers its own metrics globally cannot clash with ours.
Metric names and labels are documented in docs/metrics.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pacsd.server.addins.record import LATENCY_BUCKETS, AddinState
from pacsd.server.control.grpc_server import grpc_address
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

log = logging.getLogger("pacsd.core.metrics")

#: Rejection reasons always exported (with 0), so dashboards see the series from start.
REJECTION_REASONS = ("paused", "limit", "policy", "addin", "negotiation", "tls")


class MetricsBindError(Exception):
    def __init__(self, host: str, port: int, err: OSError) -> None:
        self.host, self.port = host, port
        super().__init__(
            f"metrics port {grpc_address(host, port)} cannot be bound: {err.strerror or err}"
        )


class StoreCounter:
    """Instances and bytes stored since start (fed by the archive's stored callback)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.instances = 0
        self.bytes = 0

    def add(self, size: int) -> None:
        with self._lock:
            self.instances += 1
            self.bytes += size

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.instances, self.bytes


class PacsdCollector(Collector):
    """Reads the runtime's counters at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def collect(self) -> Iterator[Metric]:
        own = list(self._own())
        supervisor = self._rt.supervisor
        if supervisor is None:
            yield from own
            return
        from pacsd.server.workers import metrics as worker_metrics

        texts = [
            worker_metrics.read(w.metrics_port) for w in supervisor.serving() if w.metrics_port
        ]
        yield from worker_metrics.merge(own, texts)

    def _own(self) -> Iterator[Metric]:
        rt = self._rt
        info = GaugeMetricFamily("pacsd_info", "pacsd version (always 1).", labels=["version"])
        info.add_metric([rt.version], 1)
        yield info
        yield GaugeMetricFamily(
            "pacsd_start_time_seconds",
            "When the process started, seconds since the epoch.",
            value=rt.started_at.timestamp(),
        )
        yield from self._associations()
        yield from self._addins()
        stored_instances, stored_bytes = rt.stored.snapshot()
        yield CounterMetricFamily(
            "pacsd_stored_instances",
            "Instances stored durably (file and index row committed).",
            value=stored_instances,
        )
        yield CounterMetricFamily(
            "pacsd_stored_bytes", "Bytes of instance files stored.", value=stored_bytes
        )
        yield from self._journal()
        streams, dropped = rt.logbus.stats()
        yield GaugeMetricFamily("pacsd_log_streams", "Live log streams open.", value=streams)
        yield CounterMetricFamily(
            "pacsd_log_records_dropped",
            "Log records dropped because a live stream's reader fell behind.",
            value=dropped,
        )
        streams, dropped = rt.listener.tracker.events.stats()
        yield GaugeMetricFamily(
            "pacsd_event_streams", "Association event streams open.", value=streams
        )
        yield CounterMetricFamily(
            "pacsd_events_dropped",
            "Association events dropped because a stream's reader fell behind.",
            value=dropped,
        )

    def _journal(self) -> Iterator[Metric]:
        archive = getattr(self._rt, "archive", None)
        stats = archive.journal_stats() if archive is not None else None
        if stats is None:  # store_journal_mb = 0, or it could not be made
            return
        yield CounterMetricFamily(
            "pacsd_store_journal_records",
            "Records written to the store journal (one per C-STORE).",
            value=stats["records"],
        )
        yield CounterMetricFamily(
            "pacsd_store_journal_checkpoints",
            "Store journal checkpoints (syncfs of the data, fsync of the index).",
            value=stats["checkpoints"],
        )
        yield GaugeMetricFamily(
            "pacsd_store_journal_used_bytes",
            "Bytes of the store journal still holding records a crash would need.",
            value=stats["used_bytes"],
        )
        yield GaugeMetricFamily(
            "pacsd_store_journal_healthy",
            "1 while the store journal works; 0 after a failed flush (see the log).",
            value=stats["healthy"],
        )

    def _associations(self) -> Iterator[Metric]:
        t = self._rt.listener.tracker.traffic()
        yield GaugeMetricFamily(
            "pacsd_associations_active", "Associations open now.", value=t.active
        )
        yield CounterMetricFamily(
            "pacsd_associations_accepted",
            "Associations accepted.",
            value=t.counters.associations_accepted,
        )
        rejected = CounterMetricFamily(
            "pacsd_associations_rejected", "Associations rejected, by reason.", labels=["reason"]
        )
        for reason in sorted({*REJECTION_REASONS, *t.rejected}):
            rejected.add_metric([reason], t.rejected.get(reason, 0))
        yield rejected
        yield CounterMetricFamily(
            "pacsd_associations_aborted",
            "Associations that ended with an A-ABORT (either side).",
            value=t.counters.associations_aborted,
        )
        messages = CounterMetricFamily(
            "pacsd_dimse_messages",
            "DIMSE messages, by service, direction (received/sent) and type (request/response).",
            labels=["service", "direction", "type"],
        )
        for (service, direction, kind), count in sorted(t.messages.items()):
            messages.add_metric([service, direction, kind], count)
        yield messages
        statuses = CounterMetricFamily(
            "pacsd_dimse_responses",
            "DIMSE responses, by service, direction and status code (0x0000 success, "
            "0xFF00 pending, ...).",
            labels=["service", "direction", "status"],
        )
        for (service, direction, status), count in sorted(t.statuses.items()):
            statuses.add_metric([service, direction, f"0x{status:04X}"], count)
        yield statuses
        yield CounterMetricFamily(
            "pacsd_received_bytes",
            "Bytes received on DICOM associations (PDUs, all associations).",
            value=t.bytes_received,
        )
        yield CounterMetricFamily(
            "pacsd_sent_bytes",
            "Bytes sent on DICOM associations (PDUs, all associations).",
            value=t.bytes_sent,
        )

    def _addins(self) -> Iterator[Metric]:
        labels = ["addin"]
        calls = CounterMetricFamily("pacsd_addin_calls", "Add-in handler calls.", labels=labels)
        failures = CounterMetricFamily(
            "pacsd_addin_failures",
            "Add-in calls that raised, timed out or answered nonsense (hooks included).",
            labels=labels,
        )
        timeouts = CounterMetricFamily(
            "pacsd_addin_timeouts", "Add-in handler calls past their time limit.", labels=labels
        )
        latency = HistogramMetricFamily(
            "pacsd_addin_call_duration_seconds",
            "How long add-in handler calls took.",
            labels=labels,
        )
        healthy = GaugeMetricFamily(
            "pacsd_addin_healthy",
            "1 for an enabled, healthy add-in; 0 for a disabled, failed or unhealthy one.",
            labels=labels,
        )
        for record in self._rt.addins.records():
            if record.state is AddinState.AVAILABLE:
                continue
            s = record.snapshot_stats()
            calls.add_metric([record.name], s.calls)
            failures.add_metric([record.name], s.failures)
            timeouts.add_metric([record.name], s.timeouts)
            cumulative: list[tuple[str, float]] = []
            running = 0
            for bound, count in zip((*LATENCY_BUCKETS, None), s.buckets, strict=True):
                running += count
                cumulative.append(("+Inf" if bound is None else repr(bound), running))
            latency.add_metric([record.name], cumulative, sum_value=s.total_latency)
            ok = record.state is AddinState.ENABLED and record.healthy
            healthy.add_metric([record.name], 1 if ok else 0)
        yield from (calls, failures, timeouts, latency, healthy)


class MetricsEndpoint:
    """The HTTP server that answers ``GET /metrics`` (prometheus_client's WSGI server,
    on a daemon thread of its own)."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PacsdCollector(runtime))
        # CPU, memory, open files of this process: the usual process_* metrics.
        ProcessCollector(registry=self.registry)
        self._server: Any = None
        self.host = ""
        self.port = 0

    def start(self, host: str, port: int) -> int:
        """Bind and serve; returns the port bound. Raises MetricsBindError."""
        try:
            self._server, _thread = start_http_server(port, host, self.registry)
        except OSError as exc:
            raise MetricsBindError(host, port, exc) from exc
        self.host, self.port = host, int(self._server.server_port)
        log.info("metrics on http://%s/metrics", grpc_address(host, self.port))
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
