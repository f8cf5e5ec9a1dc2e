"""One set of metrics for the server: the first process's plus every worker's.

Each worker serves its own metrics on a private loopback port (child.py); on each
scrape the first process reads them and adds them to its own, sample by sample, so
``pacsd_associations_accepted_total`` counts every association whichever process
took it. Exceptions: ``pacsd_info`` and ``pacsd_start_time_seconds`` describe the
server and come from the first process; ``pacsd_addin_healthy`` and
``pacsd_store_journal_healthy`` are the lowest value (healthy only if healthy
everywhere); ``process_*`` describe one process (the first).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger("pacsd.core.workers")

_SERVER_WIDE = frozenset(("pacsd_info", "pacsd_start_time_seconds"))
_LOWEST = frozenset(("pacsd_addin_healthy", "pacsd_store_journal_healthy"))

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def read(port: int, timeout: float = 2.0) -> str:
    """A worker's metrics text, or "" if it does not answer (it may be restarting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as rsp:
            return str(rsp.read().decode("utf-8"))
    except (OSError, urllib.error.URLError) as exc:
        log.debug("no metrics from the worker on port %d: %s", port, exc)
        return ""


def merge(own: list[Metric], texts: Iterable[str]) -> list[Metric]:
    """``own`` with the samples of every text added in (see the module docstring)."""
    families = {metric.name: metric for metric in own}
    positions: dict[str, dict[SampleKey, int]] = {
        metric.name: {_key(s): i for i, s in enumerate(metric.samples)} for metric in own
    }
    for text in texts:
        for family in text_string_to_metric_families(text):
            name = family.name
            if name in _SERVER_WIDE or name.startswith("process_"):
                continue
            target = families.get(name)
            if target is None:
                target = families[name] = Metric(name, family.documentation, family.type)
                positions[name] = {}
                own.append(target)
            where = positions[name]
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = _key(sample)
                at = where.get(key)
                if at is None:
                    where[key] = len(target.samples)
                    target.samples.append(Sample(sample.name, sample.labels, sample.value))
                    continue
                old = target.samples[at]
                value = (
                    min(old.value, sample.value) if name in _LOWEST else old.value + sample.value
                )
                target.samples[at] = old._replace(value=value)
    return own


def _key(sample: Sample) -> SampleKey:
    return sample.name, tuple(sorted(sample.labels.items()))
