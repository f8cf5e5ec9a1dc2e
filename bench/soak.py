#!/usr/bin/env python3
"""Soak: mixed DICOM traffic from several clients for a long time, watching whether the
server's memory, open files and threads stay flat.

Each client (a thread, with its own associations) loops over: a C-STORE of a small
series on one association, a C-ECHO, a study-level C-FIND for its patient, and a C-MOVE
of one of its studies to a storage SCP this script runs (registered in the server's AE
registry with ``pacsctl ae add``). The server is a fresh ``pacsd serve`` (the console
script beside this interpreter) on free ports.

Every ``--sample-s`` seconds the server's RSS, thread count and open descriptors are read
from /proc. *Flat* means: the median of the last quarter of the samples is within the
allowed growth of the median of the first quarter (after ``--warmup-s``). The run fails
(exit status 1) on any failed operation, a growth beyond the limits, a traceback in the
server's log, or a server that does not stop cleanly on SIGTERM.

    python bench/soak.py                 # 10 minutes, 4 clients
    python bench/soak.py --minutes 1 --clients 8 --json soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pacsd.server.dicom.client import ClientAE
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

MOVE_DESTINATION = "SOAKDEST"


def instance(patient: str, study: str, series: str, number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = patient
    ds.PatientName = f"SOAK^{patient}"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyDate = "20260101"
    ds.Modality = "OT"
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = os.urandom(32 * 32)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


# -- the server -----------------------------------------------------------------------


@dataclass
class Usage:
    seconds: float
    rss_kib: int
    threads: int
    fds: int
    #: The SQLite index (``index.db`` and its WAL): its pages fill the page caches of
    #: the server's connections, memory outside Python's heap that grows with it.
    index_kib: int = 0


def _size_kib(*paths: Path) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total // 1024


def usage(pid: int, since: float, data_dir: Path | None = None) -> Usage:
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    index = 0
    if data_dir is not None:
        index = _size_kib(data_dir / "index.db", data_dir / "index.db-wal")
    return Usage(
        round(time.monotonic() - since, 1),
        int(fields["VmRSS"].split()[0]),
        int(fields["Threads"]),
        len(os.listdir(f"/proc/{pid}/fd")),
        index,
    )


def console_script(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"soak.py: error: no {name} console script beside {sys.executable}")
    return str(path)


#: Folder of the start-up hook that traces the server's allocations (``--tracemalloc``).
TRACEMALLOC_HOOK = Path(__file__).resolve().parent / "tracemalloc_hook"


def start_server(
    workdir: Path, trace_dir: Path | None = None, trace_every: float = 60.0
) -> tuple[subprocess.Popen[str], int, int, Path]:
    log = workdir / "pacsd.stderr"
    cmd = [console_script("pacsd"), "serve", "--dicom-port", "0", "--control-port", "0"]
    cmd += ["--data-dir", str(workdir / "data")]
    with log.open("w") as err:
        # One engine process: the figures are those of one PID (RSS, threads, fds).
        env = {**os.environ, "PACSD_WORKERS": "1"}
        if trace_dir is not None:
            path = os.pathsep.join(filter(None, [str(TRACEMALLOC_HOOK), env.get("PYTHONPATH")]))
            env.update(
                PYTHONPATH=path,
                PACSD_TRACEMALLOC_DIR=str(trace_dir),
                PACSD_TRACEMALLOC_EVERY=str(trace_every),
            )
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"soak.py: error: pacsd did not start: {line!r}\n{log.read_text()}")
    dicom, control = line.split()[1:3]
    return proc, int(dicom.rsplit(":", 1)[1]), int(control.rsplit(":", 1)[1]), log


class Destination:
    """The C-MOVE destination: a pynetdicom storage SCP that counts what it receives."""

    def __init__(self) -> None:
        self.received = 0
        self._lock = threading.Lock()
        ae = AE(ae_title=MOVE_DESTINATION)
        ae.supported_contexts = AllStoragePresentationContexts
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        assert server is not None  # block=False returns the running server
        self.server = server
        self.port = int(self.server.server_address[1])

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.received += 1
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


# -- the clients -----------------------------------------------------------------------


@dataclass
class Tally:
    ops: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def fail(self, op: str, why: str) -> None:
        with self.lock:
            self.ops[f"{op}_failed"] += 1
            if len(self.failures) < 20:
                self.failures.append(f"{op}: {why}")


def client(index: int, port: int, stop: threading.Event, tally: Tally, series_size: int) -> None:
    patient = f"SOAK{index}"
    studies: list[str] = []
    #: Studies whose association broke mid-series: the server may or may not have them.
    uncertain = 0
    # pacsd's ClientAE: plain pynetdicom as a requestor loses about 1 response in 4,000
    # (server/pacsd/server/dicom/client.py), which would show here as a failure.
    ae = ClientAE(ae_title=f"SOAKSCU{index}")
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    while not stop.is_set():
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
        if not assoc.is_established:
            tally.fail("associate", "not established")
            time.sleep(0.5)
            continue
        try:
            study, series = generate_uid(), generate_uid()
            uncertain += 1
            for n in range(series_size):
                sent = time.monotonic()
                status = assoc.send_c_store(instance(patient, study, series, n + 1))
                if int(getattr(status, "Status", -1)) == 0:
                    tally.ok("store")
                else:
                    tally.fail(
                        "store",
                        f"status {getattr(status, 'Status', None)} after"
                        f" {time.monotonic() - sent:.1f} s (aborted: {assoc.is_aborted})",
                    )
            studies.append(study)
            uncertain -= 1
            sent = time.monotonic()
            status = assoc.send_c_echo()
            if int(getattr(status, "Status", -1)) == 0:
                tally.ok("echo")
            else:
                tally.fail("echo", f"no success after {time.monotonic() - sent:.1f} s")
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = patient
            query.StudyInstanceUID = ""
            found = 0
            final = None
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                final = int(getattr(status, "Status", -1))
                found += identifier is not None and final in (0xFF00, 0xFF01)
            if final == 0 and len(studies) <= found <= len(studies) + uncertain:
                tally.ok("find")
            else:
                tally.fail("find", f"status {final}, {found} of {len(studies)} studies")
            move = Dataset()
            move.QueryRetrieveLevel = "STUDY"
            move.StudyInstanceUID = studies[len(studies) // 2]
            responses = list(
                assoc.send_c_move(
                    move, MOVE_DESTINATION, StudyRootQueryRetrieveInformationModelMove
                )
            )
            last = int(getattr(responses[-1][0], "Status", -1)) if responses else -1
            if last == 0:
                tally.ok("move")
            else:
                tally.fail("move", f"status {last}")
            assoc.release()
        except Exception as exc:  # a broken association is a failure to report
            tally.fail("association", f"{type(exc).__name__}: {exc}")
            if assoc.is_established:
                assoc.abort()


# -- the run --------------------------------------------------------------------------


@dataclass
class Report:
    minutes: float
    clients: int
    seconds: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    ops_per_s: float = 0.0
    moved_received: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)
    first_quarter: dict[str, float] = field(default_factory=dict)
    last_quarter: dict[str, float] = field(default_factory=dict)
    growth: dict[str, float] = field(default_factory=dict)
    tracemalloc: list[str] = field(default_factory=list)
    log_tracebacks: int = 0
    stopped_cleanly: bool = False
    failures: list[str] = field(default_factory=list)


def tracemalloc_growth(folder: Path, pid: int, skip: int, top: int = 15) -> list[str]:
    """What grew between the server's snapshot number ``skip`` (after the warm-up) and
    its last one: the source lines whose live allocations grew most, then the three
    largest growths with their call stacks."""
    snaps = sorted(folder.glob(f"snap-{pid}-*.pickle"))
    if len(snaps) < skip + 2:
        return [f"tracemalloc: only {len(snaps)} snapshots, need {skip + 2}"]
    first = tracemalloc.Snapshot.load(str(snaps[skip]))
    last = tracemalloc.Snapshot.load(str(snaps[-1]))
    total = sum(s.size for s in last.statistics("filename")) - sum(
        s.size for s in first.statistics("filename")
    )
    lines = [
        f"tracemalloc: {snaps[skip].name} -> {snaps[-1].name}:"
        f" traced memory {total / 1024:+.0f} KiB"
    ]
    for stat in last.compare_to(first, "lineno")[:top]:
        lines.append(f"  {stat}")
    for stat in last.compare_to(first, "traceback")[:3]:
        lines.append(f"  {stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks) at:")
        lines += [f"    {line}" for line in stat.traceback.format(most_recent_first=True)]
    return lines


def _median(samples: list[Usage], name: str) -> float:
    return float(statistics.median(getattr(s, name) for s in samples))


def run(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report(minutes=args.minutes, clients=args.clients)
    trace_dir = workdir / "tracemalloc" if args.tracemalloc else None
    proc, port, control, log = start_server(workdir, trace_dir, args.tracemalloc_every)
    destination = Destination()
    try:
        added = subprocess.run(
            [
                *(console_script("pacsctl"), "-e", f"127.0.0.1:{control}", "ae", "add"),
                *(MOVE_DESTINATION, "127.0.0.1", str(destination.port)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if added.returncode != 0:
            raise SystemExit(f"soak.py: error: pacsctl ae add failed: {added.stderr}")
        tally = Tally()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=client, args=(i, port, stop, tally, args.series_size), daemon=True
            )
            for i in range(args.clients)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
        samples: list[Usage] = []
        end = start + args.minutes * 60
        next_print = start + 60
        while time.monotonic() < end:
            time.sleep(min(args.sample_s, max(end - time.monotonic(), 0)))
            if proc.poll() is not None:
                tally.fail("server", f"exited with status {proc.returncode}")
                break
            samples.append(usage(proc.pid, start, workdir / "data"))
            if not args.quiet and time.monotonic() >= next_print:
                next_print += 60
                s = samples[-1]
                print(
                    f"... {s.seconds:.0f} s: {sum(tally.ops.values())} operations,"
                    f" rss {s.rss_kib} KiB, threads {s.threads}, fds {s.fds},"
                    f" index {s.index_kib} KiB",
                    flush=True,
                )
        stop.set()
        for t in threads:
            t.join(60)
        report.seconds = round(time.monotonic() - start, 1)
        report.ops = dict(sorted(tally.ops.items()))
        report.ops_per_s = round(sum(tally.ops.values()) / report.seconds, 1)
        report.moved_received = destination.received
        report.failures = list(tally.failures)
        report.samples = [asdict(s) for s in samples]
        steady = [s for s in samples if s.seconds >= args.warmup_s]
        if len(steady) >= 4:
            quarter = max(len(steady) // 4, 1)
            first, last = steady[:quarter], steady[-quarter:]
            for name in ("rss_kib", "threads", "fds", "index_kib"):
                report.first_quarter[name] = _median(first, name)
                report.last_quarter[name] = _median(last, name)
                report.growth[name] = report.last_quarter[name] - report.first_quarter[name]
            if report.growth["rss_kib"] > args.max_rss_growth_mib * 1024:
                report.failures.append(
                    f"RSS grew by {report.growth['rss_kib'] / 1024:.1f} MiB"
                    f" (limit {args.max_rss_growth_mib})"
                )
            if report.growth["threads"] > args.max_thread_growth:
                report.failures.append(f"threads grew by {report.growth['threads']:.0f}")
            if report.growth["fds"] > args.max_fd_growth:
                report.failures.append(f"open files grew by {report.growth['fds']:.0f}")
        else:
            report.failures.append(f"only {len(steady)} samples after the warm-up")
        for op in ("store", "echo", "find", "move"):
            if not report.ops.get(op):
                report.failures.append(f"no successful {op}")
    finally:
        destination.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                report.stopped_cleanly = proc.wait(60) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if not report.stopped_cleanly:
        report.failures.append("the server did not stop cleanly on SIGTERM")
    text = log.read_text(errors="replace")
    if args.log is not None:
        args.log.write_text(text)
    if trace_dir is not None:
        skip = int(args.warmup_s // args.tracemalloc_every)
        report.tracemalloc = tracemalloc_growth(trace_dir, proc.pid, skip)
    report.log_tracebacks = text.count("Traceback")
    if report.log_tracebacks:
        at = text.index("Traceback")
        report.failures.append("traceback in the server log:\n" + text[at : at + 1500])
    return report


def print_report(report: Report) -> None:
    print(
        f"soak: {report.clients} clients for {report.seconds} s,"
        f" {sum(report.ops.values())} operations ({report.ops_per_s}/s)"
    )
    print("operations: " + ", ".join(f"{k}={v}" for k, v in report.ops.items()))
    print(f"instances received by the move destination: {report.moved_received}")
    for name, unit in (("rss_kib", "KiB"), ("threads", ""), ("fds", ""), ("index_kib", "KiB")):
        if name in report.growth:
            print(
                f"server {name}: first quarter {report.first_quarter[name]:.0f}{unit},"
                f" last quarter {report.last_quarter[name]:.0f}{unit},"
                f" growth {report.growth[name]:+.0f}{unit}"
            )
    for line in report.tracemalloc:
        print(line)
    print(f"log: {report.log_tracebacks} tracebacks; stopped cleanly: {report.stopped_cleanly}")
    for failure in report.failures:
        print(f"FAILURE: {failure}")
    print("verified: flat and no failures" if not report.failures else "FAILED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="duration [10]")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients [4]")
    parser.add_argument("--series-size", type=int, default=5, help="instances per store [5]")
    parser.add_argument("--sample-s", type=float, default=5.0, help="sampling period [5]")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="not judged [30]")
    parser.add_argument("--max-rss-growth-mib", type=float, default=30.0, help="[30]")
    parser.add_argument("--max-thread-growth", type=int, default=4, help="[4]")
    parser.add_argument("--max-fd-growth", type=int, default=4, help="[4]")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--log", type=Path, help="keep a copy of the server's log here")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the server's allocations and print what grew after the warm-up"
        " (slows the server down)",
    )
    parser.add_argument(
        "--tracemalloc-every", type=float, default=60.0, help="snapshot period, s [60]"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pacsd-soak-", dir=args.workdir))
    try:
        report = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
