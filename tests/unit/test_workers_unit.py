"""Pieces of the worker model that need no processes: which calls are repeated on
workers, and how workers' metrics add up."""

from __future__ import annotations

from pacsd.admin.v1 import (
    addins_pb2,
    aetitles_pb2,
    associations_pb2,
    logs_pb2,
    security_pb2,
    server_pb2,
    storage_pb2,
)
from pacsd.server.control.audit import audited
from pacsd.server.workers.metrics import merge
from pacsd.server.workers.replication import APPLIED_ONCE, REPLICATED
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

MODULES = (
    server_pb2,
    addins_pb2,
    aetitles_pb2,
    associations_pb2,
    logs_pb2,
    security_pb2,
    storage_pb2,
)


def _methods() -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_state_changing_call_is_repeated_on_workers_or_applied_once() -> None:
    methods = _methods()
    assert methods >= REPLICATED, sorted(REPLICATED - methods)  # no typo goes unnoticed
    assert methods >= APPLIED_ONCE, sorted(APPLIED_ONCE - methods)
    assert not REPLICATED & APPLIED_ONCE
    changing = {m for m in methods if audited(m)}
    # A new state-changing RPC needs a decision: repeated on workers, or applied once.
    assert changing == REPLICATED | APPLIED_ONCE, sorted(changing ^ (REPLICATED | APPLIED_ONCE))


def _worker_text(accepted: float, healthy: float) -> str:
    return (
        "# HELP pacsd_associations_accepted_total Associations accepted.\n"
        "# TYPE pacsd_associations_accepted_total counter\n"
        f"pacsd_associations_accepted_total {accepted}\n"
        "# HELP pacsd_addin_healthy 1 for healthy.\n"
        "# TYPE pacsd_addin_healthy gauge\n"
        f'pacsd_addin_healthy{{addin="storage"}} {healthy}\n'
        "# HELP pacsd_info version.\n"
        "# TYPE pacsd_info gauge\n"
        'pacsd_info{version="9.9"} 1.0\n'
        "# HELP process_open_fds fds.\n"
        "# TYPE process_open_fds gauge\n"
        "process_open_fds 999.0\n"
        "# HELP pacsd_only_in_workers_total something.\n"
        "# TYPE pacsd_only_in_workers_total counter\n"
        "pacsd_only_in_workers_total 2.0\n"
    )


def _own() -> list[Metric]:
    accepted = CounterMetricFamily("pacsd_associations_accepted", "Accepted.", value=3)
    healthy = GaugeMetricFamily("pacsd_addin_healthy", "Healthy.", labels=["addin"])
    healthy.add_metric(["storage"], 1)
    info = GaugeMetricFamily("pacsd_info", "Version.", labels=["version"])
    info.add_metric(["0.1.0"], 1)
    return [accepted, healthy, info]


def _values(metrics: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}


def test_worker_metrics_add_up_except_server_wide_and_health() -> None:
    merged = merge(_own(), [_worker_text(5, 1), _worker_text(7, 0)])
    values = _values(merged)
    assert values[("pacsd_associations_accepted_total", ())] == 15
    assert values[("pacsd_addin_healthy", (("addin", "storage"),))] == 0  # unhealthy somewhere
    assert values[("pacsd_info", (("version", "0.1.0"),))] == 1  # the first process's
    assert ("pacsd_info", (("version", "9.9"),)) not in values
    assert ("process_open_fds", ()) not in values
    assert values[("pacsd_only_in_workers_total", ())] == 4
    # What merge returns is valid exposition text again.
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self) -> list[Metric]:
            return merged

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {"pacsd_associations_accepted", "pacsd_only_in_workers"} <= names


def test_no_worker_text_leaves_own_metrics_alone() -> None:
    assert _values(merge(_own(), [""])) == _values(_own())
