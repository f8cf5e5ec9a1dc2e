"""Helpers the observability tests share: config files, DCMTK senders, stream readers."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PacsdProcess, dcmtk, dcmtk_env
from tests.integration import dicom_peers

CALLING = "OBS_SCU"


def start_with(
    start_pacsd: Callable[..., PacsdProcess],
    tmp_path: Path,
    toml: str,
    args: Sequence[str] = (),
) -> PacsdProcess:
    """A pacsd started with ``toml`` as its settings file (plus ``args``)."""
    n = len(list(tmp_path.glob("settings-*.toml")))
    config = tmp_path / f"settings-{n}.toml"
    config.write_text(toml)
    return start_pacsd(["--config", str(config), *args])


def storescu(
    port: int,
    files: Iterable[Path],
    *,
    calling: str = CALLING,
    extra: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu sending ``files`` over one association."""
    return dicom_peers.storescu(
        port, files, calling=calling, extra=extra, timeout=timeout, verbose=False
    )


def echoscu(port: int, calling: str = CALLING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", "PACSD", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dcmtk_env(),
    )


class Reader:
    """Reads a stream on a thread, keeping each item with its arrival (wall-clock) time."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.items: list[tuple[float, Any]] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self.stream:
                with self._lock:
                    self.items.append((time.time(), item))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def snapshot(self) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self.items)

    def wait_for(
        self, predicate: Callable[[list[Any]], bool], timeout: float
    ) -> list[tuple[float, Any]]:
        """Poll until ``predicate(items)`` holds or ``timeout`` passes; the items then."""
        deadline = time.monotonic() + timeout
        while True:
            items = self.snapshot()
            if predicate([item for _, item in items]) or time.monotonic() >= deadline:
                return items
            time.sleep(0.02)

    def stop(self) -> None:
        self.stream.cancel()
        self._thread.join(5)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as rsp:
        text = rsp.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
