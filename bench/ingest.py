#!/usr/bin/env python3
"""Ingest benchmark: DCMTK ``storescu`` sends one corpus to pacsd and to three peers.

In one run, the same synthetic corpus is sent with DCMTK ``storescu`` (``TCP_NODELAY=1``) to

* ``pacsd``    -- ``pacsd serve`` with a fresh data dir: durable, indexed storage (the default);
* ``storescp`` -- DCMTK ``storescp``, one process (no ``--fork``), writing files with ``-od``;
* ``orthanc``  -- Orthanc (Debian's package) with its own configuration on loopback ports:
  default SQLite index, uncompressed file storage, ``SyncStorageArea`` on (durable);
* ``plain``    -- a plain pynetdicom storage SCP (this file, run as ``ingest.py _plain-scp DIR``):
  all ``StoragePresentationContexts``, default ``maximum_pdu_size``, an ``EVT_C_STORE`` handler
  that writes ``event.encoded_dataset()`` to a file and returns ``0x0000``;

for large (~0.5 MB: 512x512 16-bit MONOCHROME2 CT, Explicit VR Little Endian) and small
(~10 kB) instances, over 1 association and over 4 concurrent associations (4 ``storescu``
processes, each sending a quarter of the files). Each figure is the median of ``--repeat``
runs; each run starts its server fresh (new output dir), times from the first ``storescu``
start to the last ``storescu`` exit, checks that every ``storescu`` exited 0 and that the
server received every instance (pacsd: rows in ``DATA_DIR/index.db`` ``instances``; the
others: files written), then stops the server with SIGTERM. One more figure, pacsd with small
instances over 1 association, is measured with ``storescu`` left at its default (Nagle on).

Run ``bench/ingest.py --help``; ``bench/README.md`` describes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

TARGETS = ("pacsd", "storescp", "orthanc", "plain")
LABELS = {
    "pacsd": "pacsd",
    "storescp": "DCMTK storescp",
    "orthanc": "Orthanc",
    "plain": "plain pynetdicom",
}
SIZES = ("large", "small")
ASSOCIATIONS = (1, 4)
PARTS = 4  # the corpus is split in quarters, one per storescu in the 4-association runs
HOST = "127.0.0.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# (rows, columns) of 16-bit pixels: 512 KiB of pixels, and ~9 KiB (+ ~0.9 kB of header).
SHAPES = {"large": (512, 512), "small": (64, 72)}
PER_SERIES = 100
PLAIN_SCP_COMMAND = "_plain-scp"
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 30.0
MB = 1_000_000


class BenchError(Exception):
    """A measurement could not be made or did not verify; the message says why."""


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tools:
    storescu: str
    storescp: str
    pacsd: str
    python: str
    dcmtk_version: str
    #: Orthanc's executable, when the run includes it.
    orthanc: str = ""
    orthanc_version: str = ""


def _version_text(path: str) -> str:
    """What ``path --version`` prints on stdout."""
    try:
        return subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{path} --version failed: {exc}") from exc


def _dcmtk(tool: str) -> tuple[str, str]:
    """DCMTK's ``tool`` and its version ("?" when it does not say)."""
    # pynetdicom installs its own storescu/storescp beside the interpreter: skip that folder.
    skip = {Path(sys.executable).parent.resolve()}
    search = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() not in skip
    )
    path = shutil.which(tool, path=search)
    if path is None:
        raise BenchError(
            f"DCMTK's {tool} was not found on PATH; install DCMTK (apt-get install dcmtk)"
        )
    out = _version_text(path)
    if "dcmtk" not in out.lower():
        raise BenchError(f"{path} is not DCMTK's {tool} (its --version does not say dcmtk)")
    first = out.strip().splitlines()
    match = re.search(r"v(\d+\.\d+\.\d+)", first[0] if first else "")
    return path, match[1] if match else "?"


def _orthanc() -> tuple[str, str]:
    path = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )
    if path is None:
        raise BenchError("Orthanc was not found; install it (apt-get install orthanc)")
    match = re.search(r"Orthanc (\d+\.\d+\.\d+)", _version_text(path))
    if match is None:
        raise BenchError(f"{path} --version does not say which Orthanc it is")
    return path, match[1]


def find_tools(pacsd: str | None, with_orthanc: bool = True) -> Tools:
    storescu, dcmtk_version = _dcmtk("storescu")
    storescp, _ = _dcmtk("storescp")
    if pacsd is None:
        beside = Path(sys.executable).parent / "pacsd"
        pacsd = str(beside) if beside.exists() else shutil.which("pacsd")
    if pacsd is None or not Path(pacsd).exists():
        raise BenchError(
            "the pacsd console script was not found beside this interpreter nor on PATH; "
            "pip install -e . or pass --pacsd PATH"
        )
    try:
        import pynetdicom  # noqa: F401  (the plain SCP runs with this interpreter)
    except ImportError as exc:
        raise BenchError(f"{sys.executable} cannot import pynetdicom for the plain SCP") from exc
    orthanc, orthanc_version = _orthanc() if with_orthanc else ("", "")
    return Tools(
        storescu,
        storescp,
        pacsd,
        sys.executable,
        dcmtk_version,
        orthanc,
        orthanc_version,
    )


# -------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    size: str
    count: int
    bytes: int
    parts: list[Path]  # PARTS folders; file i is in parts[i % PARTS]

    @property
    def mean_bytes(self) -> float:
        return self.bytes / self.count


def make_corpus(root: Path, size: str, count: int, seed: int) -> Corpus:
    """``count`` CT instances, Explicit VR Little Endian, in series of PER_SERIES."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    rows, cols = SHAPES[size]
    rng = random.Random(seed)
    parts = [root / size / f"part{n}" for n in range(PARTS)]
    for part in parts:
        part.mkdir(parents=True)
    total = 0
    study = series = frame_of_reference = ""  # set at i == 0
    for i in range(count):
        if i % PER_SERIES == 0:
            series = generate_uid()
            if i % (2 * PER_SERIES) == 0:
                study, frame_of_reference = generate_uid(), generate_uid()
        number = i % PER_SERIES + 1
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = f"ACC{i // (2 * PER_SERIES):05d}"
        ds.Modality = "CT"
        ds.Manufacturer = "pacsd-bench"
        ds.StudyDescription = "BENCH CHEST"
        ds.SeriesDescription = f"AXIAL {size.upper()}"
        ds.PatientName = f"BENCH^PATIENT{i // (2 * PER_SERIES):03d}"
        ds.PatientID = f"BENCH{i // (2 * PER_SERIES):05d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.SliceThickness = "1.0"
        ds.KVP = "120"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = i // PER_SERIES + 1
        ds.InstanceNumber = number
        ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-number:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SliceLocation = f"{-number:.1f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = ["0.976562", "0.976562"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = rng.randbytes(rows * cols * 2)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = parts[i % PARTS] / f"{i:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return Corpus(size, count, total, parts)


def subset_corpus(root: Path, corpus: Corpus, count: int) -> Corpus:
    """The first ``count`` files of ``corpus`` in one folder (hard links where possible)."""
    folder = root / f"{corpus.size}-first{count}"
    folder.mkdir(parents=True)
    files = sorted(p for part in corpus.parts for p in part.iterdir())[:count]
    total = 0
    for src in files:
        dst = folder / src.name
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        total += dst.stat().st_size
    return Corpus(corpus.size, len(files), total, [folder])


# ------------------------------------------------------------------------- servers


class _Lines:
    """Drains a child's stdout on a thread; ``wait_for`` returns the first matching line."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if match := pattern.search(line):
                return match
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n    ".join(text[-lines:])


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, with_children: bool) -> float:
    """CPU seconds (user + system) of ``pid``; 0.0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14..17.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every CPU since boot (``/proc/stat``); None elsewhere.

    Busy is everything but idle and iowait. Over a measurement it tells whether the
    figure was bound by the machine's CPUs, which the server and the senders share.
    """
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


def _busy_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    if before is None or after is None or after[1] <= before[1]:
        return float("nan")
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def _children_cpu() -> float:
    """CPU seconds of every child this process has waited for (the storescu senders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


@dataclass
class Server:
    target: str
    proc: subprocess.Popen[str]
    port: int
    ae_title: str
    out_dir: Path
    stderr_path: Path
    ok_exit_codes: tuple[int, ...]
    count_received: Callable[[Server], int]

    def cpu_seconds(self) -> float:
        """CPU used so far by the server process and its descendants (Linux /proc)."""
        if not Path("/proc/self/stat").exists():
            return float("nan")
        return _proc_cpu(self.proc.pid, True) + sum(
            _proc_cpu(child, False) for child in _descendants(self.proc.pid)
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.target} exited early with code {self.proc.returncode}:\n    "
                + _tail(self.stderr_path)
            )

    def stop(self) -> None:
        """SIGTERM, then wait; an unclean or slow stop is an error (it is killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise BenchError(
                    f"{self.target} did not stop within {SERVER_STOP_TIMEOUT:.0f}s of SIGTERM"
                ) from None
        if self.proc.returncode not in self.ok_exit_codes:
            raise BenchError(
                f"{self.target} exited with code {self.proc.returncode} after SIGTERM:\n    "
                + _tail(self.stderr_path)
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _count_files(server: Server) -> int:
    return sum(1 for p in server.out_dir.rglob("*") if p.is_file())


def _count_pacsd_rows(server: Server) -> int:
    db = server.out_dir / "index.db"
    if not db.exists():
        raise BenchError(f"pacsd left no index at {db}")
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    finally:
        conn.close()


def _spawn(
    cmd: Sequence[str], mdir: Path, name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path]:
    stderr_path = mdir / f"{name}.stderr"
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=mdir,
            env=env,
        )
    return proc, stderr_path


def _await_line(
    proc: subprocess.Popen[str], stderr_path: Path, pattern: re.Pattern[str], what: str
) -> re.Match[str]:
    assert proc.stdout is not None
    match = _Lines(proc.stdout).wait_for(pattern, SERVER_START_TIMEOUT)
    if match is None:
        exited = proc.poll()
        if exited is None:
            proc.kill()
            proc.wait()
        why = (
            f"did not report its port within {SERVER_START_TIMEOUT:.0f}s"
            if exited is None
            else f"exited with code {exited} before reporting its port"
        )
        raise BenchError(f"{what} {why}:\n    " + _tail(stderr_path))
    return match


PACSD_LISTENING = re.compile(r"^listening dicom=(\S+):(\d+) control=(\S+):(\d+)$")


def start_pacsd(
    tools: Tools, mdir: Path, extra: Sequence[str], workers: int | None = None
) -> Server:
    """``pacsd serve`` on free ports; ``workers`` sets ``PACSD_WORKERS`` (the number of
    engine processes sharing the DICOM port), unset leaves pacsd's default."""
    data = mdir / "data"
    cmd = [
        tools.pacsd,
        "serve",
        "--dicom-host",
        HOST,
        "--dicom-port",
        "0",
        "--control-host",
        HOST,
        "--control-port",
        "0",
        "--data-dir",
        str(data),
        "--ae-title",
        "PACSD",
        *extra,
    ]
    env = None
    if workers is not None:
        env = {**os.environ, "PACSD_WORKERS": str(workers)}
    proc, stderr_path = _spawn(cmd, mdir, "pacsd", env)
    match = _await_line(proc, stderr_path, PACSD_LISTENING, "pacsd serve")
    _await_buckets(stderr_path, workers or _cpus())
    return Server("pacsd", proc, int(match[2]), "PACSD", data, stderr_path, (0,), _count_pacsd_rows)


PACSD_BUCKETS_READY = "bucket folders ready"


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _await_buckets(stderr_path: Path, processes: int) -> None:
    """Wait until each engine process has its blob store's 4096 bucket folders: a new
    data folder makes them once, at startup (``BlobStore.prepare_buckets``), and that
    one-time setup is not ingest, so it is kept out of the measurement."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        text = stderr_path.read_text(errors="replace")
        if text.count(PACSD_BUCKETS_READY) >= processes:
            return
        time.sleep(0.02)
    _progress(f"warning: pacsd did not report {processes} x '{PACSD_BUCKETS_READY}'")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_port(proc: subprocess.Popen[str], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start_storescp(tools: Tools, mdir: Path, extra: Sequence[str]) -> Server:
    out = mdir / "out"
    out.mkdir()
    for _attempt in range(3):  # a free port may be taken between probe and bind
        port = _free_port()
        cmd = [tools.storescp, "-aet", "STORESCP", "-od", str(out), "-dhl", "+xa", *extra]
        # Debian's DCMTK leaves Nagle on unless told: its C-STORE-RSP would then wait
        # ~40 ms for the sender's delayed ACK.
        env = {**os.environ, "TCP_NODELAY": "1"}
        proc, stderr_path = _spawn([*cmd, str(port)], mdir, "storescp", env)
        if _wait_port(proc, port, SERVER_START_TIMEOUT):
            # storescp has no SIGTERM handler: being killed by it is its clean stop.
            return Server(
                "storescp",
                proc,
                port,
                "STORESCP",
                out,
                stderr_path,
                (0, -signal.SIGTERM),
                _count_files,
            )
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise BenchError(f"storescp did not start listening:\n    {_tail(mdir / 'storescp.stderr')}")


def start_orthanc(tools: Tools, mdir: Path, extra: Sequence[str]) -> Server:
    """Orthanc with its default SQLite index and file storage, durable writes on
    (``SyncStorageArea``), no compression, HTTP on loopback only (not used)."""
    storage = mdir / "orthanc-storage"
    for _attempt in range(3):  # a free port may be taken between probe and bind
        port, http_port = _free_port(), _free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(mdir / "orthanc-index"),
            "StorageCompression": False,
            "SyncStorageArea": True,
            "DicomServerEnabled": True,
            "DicomAet": "ORTHANC",
            "DicomPort": port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "DicomThreadsCount": 4,
            "HttpServerEnabled": True,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "ConcurrentJobs": 1,
            **json.loads("{" + ",".join(extra) + "}"),
        }
        config_path = mdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        # Orthanc speaks DICOM through DCMTK, which keeps Nagle on unless told.
        env = {**os.environ, "TCP_NODELAY": "1"}
        proc, stderr_path = _spawn([tools.orthanc, str(config_path)], mdir, "orthanc", env)
        if _wait_port(proc, port, SERVER_START_TIMEOUT):
            return Server(
                "orthanc", proc, port, "ORTHANC", storage, stderr_path, (0,), _count_files
            )
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise BenchError(f"Orthanc did not start listening:\n    {_tail(mdir / 'orthanc.stderr')}")


PLAIN_LISTENING = re.compile(r"^listening port=(\d+)$")


def start_plain(tools: Tools, mdir: Path, extra: Sequence[str]) -> Server:
    out = mdir / "out"
    out.mkdir()
    cmd = [tools.python, str(Path(__file__).resolve()), PLAIN_SCP_COMMAND, str(out), *extra]
    proc, stderr_path = _spawn(cmd, mdir, "plain")
    match = _await_line(proc, stderr_path, PLAIN_LISTENING, "the plain pynetdicom SCP")
    return Server("plain", proc, int(match[1]), "PLAIN", out, stderr_path, (0,), _count_files)


STARTERS: dict[str, Callable[[Tools, Path, Sequence[str]], Server]] = {
    "pacsd": start_pacsd,
    "storescp": start_storescp,
    "orthanc": start_orthanc,
    "plain": start_plain,
}


def plain_scp(out_dir: Path) -> int:
    """The plain baseline: pynetdicom 3.0.4 defaults, one file per C-STORE."""
    from pynetdicom import AE, StoragePresentationContexts, evt

    uid_ok = re.compile(r"^[0-9.]{1,64}$")
    counter = iter(range(sys.maxsize))
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if not uid_ok.match(uid):
            with lock:
                uid = f"unnamed-{next(counter)}"
        with open(out_dir / f"{uid}.dcm", "wb") as f:
            f.write(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title="PLAIN")
    ae.supported_contexts = StoragePresentationContexts
    server = ae.start_server((HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None  # block=False returns the running server
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    print(f"listening port={server.server_address[1]}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 0


# ---------------------------------------------------------------------- measuring


@dataclass
class Run:
    seconds: float
    instances_per_s: float
    mb_per_s: float
    server_cpu_ms_per_instance: float
    #: CPU of the storescu processes (they share the machine with the server).
    sender_cpu_ms_per_instance: float
    #: Share of all CPUs busy while the instances were sent (anything on the machine).
    machine_busy_pct: float


@dataclass
class Result:
    target: str
    size: str
    associations: int
    tcp_nodelay: bool
    count: int
    bytes: int
    runs: list[Run] = field(default_factory=list)

    @property
    def instances_per_s(self) -> float:
        return statistics.median(r.instances_per_s for r in self.runs)

    @property
    def mb_per_s(self) -> float:
        return statistics.median(r.mb_per_s for r in self.runs)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(r.server_cpu_ms_per_instance for r in self.runs)

    @property
    def sender_cpu_ms(self) -> float:
        return statistics.median(r.sender_cpu_ms_per_instance for r in self.runs)

    @property
    def busy_pct(self) -> float:
        return statistics.median(r.machine_busy_pct for r in self.runs)

    @property
    def cpu_cap(self) -> float:
        """Instances/s this machine's CPUs would allow at these costs, fully busy: the
        server and the senders share them. A target above it needs less CPU per
        instance, not more overlap."""
        spent = self.cpu_ms + self.sender_cpu_ms
        cpus = os.cpu_count() or 1
        return cpus * 1000.0 / spent if spent > 0 else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "runs"},
            "median_instances_per_s": round(self.instances_per_s, 2),
            "median_mb_per_s": round(self.mb_per_s, 2),
            "median_server_cpu_ms_per_instance": round(self.cpu_ms, 3),
            "median_sender_cpu_ms_per_instance": round(self.sender_cpu_ms, 3),
            "median_machine_busy_pct": round(self.busy_pct, 1),
            "cpu_cap_instances_per_s": round(self.cpu_cap, 1),
            "runs": [{k: round(v, 4) for k, v in asdict(run).items()} for run in self.runs],
        }


def run_storescu(
    tools: Tools,
    server: Server,
    groups: list[list[Path]],
    nodelay: bool,
    timeout: float,
    mdir: Path,
) -> float:
    """Start one storescu per group at once; seconds from the first start to the last exit."""
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    ends: list[float] = [0.0] * len(groups)

    def waiter(i: int) -> None:
        procs[i].wait()
        ends[i] = time.perf_counter()

    threads: list[threading.Thread] = []
    start = time.perf_counter()
    try:
        for i, dirs in enumerate(groups):
            log = mdir / f"storescu{i}.log"
            logs.append(log)
            cmd = [
                tools.storescu,
                "-aet", "BENCH",
                "-aec", server.ae_title,
                "-ta", "120",  # a single-process storescp accepts one association at a time
                "-td", "120",
                "+sd",
                HOST, str(server.port),
                *map(str, dirs),
            ]  # fmt: skip
            with log.open("w") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=mdir
                    )
                )
            threads.append(threading.Thread(target=waiter, args=(i,), daemon=True))
            threads[-1].start()
        deadline = start + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
        if any(thread.is_alive() for thread in threads):
            raise BenchError(f"storescu to {server.target} did not finish within {timeout:.0f}s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs, strict=True):
        if proc.returncode != 0:
            raise BenchError(
                f"storescu to {server.target} exited with code {proc.returncode}:\n    "
                + _tail(log)
            )
    return max(ends) - start


def measure(
    tools: Tools,
    target: str,
    corpus: Corpus,
    associations: int,
    nodelay: bool,
    work: Path,
    opts: argparse.Namespace,
) -> Run:
    mdir = Path(tempfile.mkdtemp(prefix=f"{target}-{corpus.size}-x{associations}-", dir=work))
    try:
        extra = {
            "pacsd": opts.pacsd_arg,
            "storescp": opts.storescp_arg,
            "orthanc": opts.orthanc_setting,
            "plain": [],
        }[target]
        if target == "pacsd":
            server = start_pacsd(tools, mdir, extra, opts.pacsd_workers)
        else:
            server = STARTERS[target](tools, mdir, extra)
        try:
            if associations == 1:
                groups = [corpus.parts]
            elif associations == len(corpus.parts):
                groups = [[part] for part in corpus.parts]
            else:
                raise BenchError(f"{associations} associations need {associations} parts")
            cpu_before = server.cpu_seconds()
            senders_before = _children_cpu()
            machine_before = _machine_ticks()
            seconds = run_storescu(tools, server, groups, nodelay, opts.timeout, mdir)
            busy = _busy_pct(machine_before, _machine_ticks())
            senders_used = _children_cpu() - senders_before  # every storescu was waited for
            cpu_used = server.cpu_seconds() - cpu_before
            server.check_alive()
            server.stop()
        finally:
            server.kill()
        received = server.count_received(server)
        if received != corpus.count:
            raise BenchError(
                f"{target} received {received} of {corpus.count} {corpus.size} instances "
                f"over {associations} association(s)"
            )
    finally:
        if opts.cleanup_each:
            shutil.rmtree(mdir, ignore_errors=True)
        # Otherwise what a measurement stored stays until the end of the run: deleting
        # hundreds of files taxes the next measurement's file creation (ext4 without a
        # journal skips inodes deleted in the last minutes, ``recently_deleted``: a
        # quarter of pacsd's CPU in a perf profile here), whichever target it measures.
        # Flush what this server left in the page cache so it is not written during the
        # next measurement (storescp and the plain SCP do not fsync; pacsd does).
        os.sync()
    return Run(
        seconds=seconds,
        instances_per_s=corpus.count / seconds,
        mb_per_s=corpus.bytes / MB / seconds,
        server_cpu_ms_per_instance=cpu_used * 1000 / corpus.count,
        sender_cpu_ms_per_instance=senders_used * 1000 / corpus.count,
        machine_busy_pct=busy,
    )


# ------------------------------------------------------------------------- output


def _ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None:
        return None
    return a.instances_per_s / b.instances_per_s


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report(
    results: dict[tuple[str, str, int], Result],
    nagle: Result | None,
    corpora: dict[str, Corpus],
    tools: Tools,
    opts: argparse.Namespace,
    elapsed: float,
) -> dict[str, Any]:
    import pydicom
    import pynetdicom

    print()
    print(
        "pacsd ingest benchmark: DCMTK storescu -> pacsd / DCMTK storescp / Orthanc / "
        "plain pynetdicom"
    )
    print(
        f"  storescu {tools.dcmtk_version} with TCP_NODELAY=1; pynetdicom {pynetdicom.__version__},"
        f" pydicom {pydicom.__version__}, Python {platform.python_version()};"
        f" {os.cpu_count()} CPUs; loopback; median of {opts.repeat} run(s)"
    )
    load = (opts.load_before, _loadavg())
    if None not in load:
        print(
            f"  1-min load average {load[0]:.2f} before, {load[1]:.2f} after "
            "(other work on the machine skews every figure)"
        )
    if opts.pacsd_workers is not None:
        print(f"  pacsd started with PACSD_WORKERS={opts.pacsd_workers}")
    for corpus in corpora.values():
        rows, cols = SHAPES[corpus.size]
        print(
            f"  {corpus.size}: {corpus.count} x {corpus.mean_bytes / 1000:.1f} kB "
            f"(CT {rows}x{cols} 16-bit MONOCHROME2, Explicit VR LE), "
            f"{corpus.bytes / MB:.1f} MB in all"
        )
    print()
    header = (
        f"{'size':<6} {'assoc':>5}  {'target':<17} {'inst/s':>9} {'MB/s':>8} "
        f"{'srv CPU ms/inst':>15} {'scu CPU ms/inst':>15} {'busy %':>6} {'CPU cap':>8}"
        "  runs (inst/s)"
    )
    print(header)
    print("-" * len(header))
    for size in SIZES:
        for assoc in ASSOCIATIONS:
            for target in opts.targets:
                r = results.get((target, size, assoc))
                if r is None:
                    continue
                runs = " ".join(f"{run.instances_per_s:.1f}" for run in r.runs)
                print(
                    f"{size:<6} {assoc:>5}  {LABELS[target]:<17} {r.instances_per_s:>9.1f} "
                    f"{r.mb_per_s:>8.1f} {r.cpu_ms:>15.2f} {r.sender_cpu_ms:>15.2f} "
                    f"{r.busy_pct:>6.0f} {r.cpu_cap:>8.0f}  {runs}"
                )
    print(
        f"  busy %: all {os.cpu_count()} CPUs, while the instances were sent (server, storescu and"
        " anything else); near 100 the figure is bound by this machine's CPUs"
    )
    print(
        f"  CPU cap: {os.cpu_count()} CPUs / (srv + scu CPU per instance), the inst/s these"
        " costs allow with every CPU busy"
    )
    print()
    ratios = []
    for size in SIZES:
        for assoc in ASSOCIATIONS:
            p = results.get(("pacsd", size, assoc))
            vs_scp = _ratio(p, results.get(("storescp", size, assoc)))
            vs_plain = _ratio(p, results.get(("plain", size, assoc)))
            vs_orthanc = _ratio(p, results.get(("orthanc", size, assoc)))
            ratios.append(
                {
                    "size": size,
                    "associations": assoc,
                    "pacsd_over_storescp": vs_scp,
                    "pacsd_over_orthanc": vs_orthanc,
                    "pacsd_over_plain": vs_plain,
                }
            )
            if p is not None:
                print(
                    f"ratio {size} x{assoc}: pacsd/storescp={_fmt_ratio(vs_scp)} "
                    f"pacsd/orthanc={_fmt_ratio(vs_orthanc)} "
                    f"pacsd/plain={_fmt_ratio(vs_plain)}"
                )
    nagle_json: dict[str, Any] | None = None
    if nagle is not None:
        same = results.get(("pacsd", nagle.size, nagle.associations))
        vs = _ratio(nagle, same)
        print(
            f"default Nagle (storescu without TCP_NODELAY, {nagle.count} instances): pacsd "
            f"{nagle.size} x{nagle.associations}: {nagle.instances_per_s:.1f} inst/s, "
            f"{nagle.mb_per_s:.1f} MB/s ({_fmt_ratio(vs)} x the TCP_NODELAY=1 figure)"
        )
        nagle_json = {**nagle.as_json(), "over_tcp_nodelay": vs}
    measured = sum(len(r.runs) for r in results.values()) + (len(nagle.runs) if nagle else 0)
    print(
        f"verified: {measured} measurements, every storescu exited 0 and every target "
        f"received every instance ({elapsed:.0f}s in all)"
    )
    return {
        "benchmark": "ingest",
        "pacsd_workers": opts.pacsd_workers,
        "tools": {
            "storescu": tools.storescu,
            "storescp": tools.storescp,
            "orthanc": tools.orthanc,
            "orthanc_version": tools.orthanc_version,
            "pacsd": tools.pacsd,
            "dcmtk": tools.dcmtk_version,
            "pynetdicom": pynetdicom.__version__,
            "pydicom": pydicom.__version__,
            "python": platform.python_version(),
        },
        "cpus": os.cpu_count(),
        "loadavg_1min": {"before": load[0], "after": load[1]},
        "repeat": opts.repeat,
        "unit_mb": MB,
        "corpus": {
            c.size: {"count": c.count, "bytes": c.bytes, "shape": SHAPES[c.size]}
            for c in corpora.values()
        },
        "results": [r.as_json() for r in results.values()],
        "ratios": ratios,
        "default_nagle": nagle_json,
        "elapsed_s": round(elapsed, 1),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ingest.py",
        description="C-STORE ingest: storescu -> pacsd, DCMTK storescp, Orthanc and plain "
        "pynetdicom.",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="large instances per measurement (default 400; --quick: 40); "
        "small instances are 5x this unless --small-count is given",
    )
    parser.add_argument("--small-count", type=int, default=None, help="small instances")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 40 large, 200 small, 50 for the Nagle figure, --repeat 1 unless given",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per figure, median reported (3)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default: all)",
    )
    parser.add_argument(
        "--no-nagle", action="store_true", help="skip the default-Nagle pacsd figure"
    )
    parser.add_argument(
        "--nagle-count",
        type=int,
        default=None,
        help="small instances sent for the default-Nagle pacsd figure (200, --quick: 50; at "
        "most the small count): each one stalls on delayed ACKs, a full corpus takes minutes",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed for one measurement's sends"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the corpus and every server's output go (one disk; default: system tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the corpus (prints its path)")
    parser.add_argument(
        "--cleanup-each",
        action="store_true",
        help="delete each measurement's stored files at once, not at the end of the run "
        "(less disk: the default keeps them all, about count x 0.5 MB x 18 for the large "
        "corpus)",
    )
    parser.add_argument("--pacsd", default=None, help="pacsd console script to run")
    parser.add_argument(
        "--pacsd-arg", action="append", default=[], help="extra argument for pacsd serve"
    )
    parser.add_argument(
        "--pacsd-workers",
        type=int,
        default=None,
        metavar="N",
        help="start pacsd with PACSD_WORKERS=N (engine processes sharing the DICOM port)",
    )
    parser.add_argument(
        "--storescp-arg", action="append", default=[], help="extra argument for storescp"
    )
    parser.add_argument(
        "--orthanc-setting",
        action="append",
        default=[],
        metavar="'\"NAME\": JSON'",
        help="extra Orthanc configuration entry, e.g. '\"StorageCompression\": true'",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the pixel data")
    opts = parser.parse_args(argv)
    defaults = {"count": 400, "repeat": 3, "nagle_count": 200}
    if opts.quick:
        defaults = {"count": 40, "repeat": 1, "nagle_count": 50}
    for name, value in defaults.items():
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    opts.small_count = opts.small_count if opts.small_count is not None else 5 * opts.count
    if opts.pacsd_workers is not None and opts.pacsd_workers < 1:
        parser.error("--pacsd-workers must be at least 1")
    if min(opts.count, opts.small_count, opts.repeat, opts.nagle_count) < 1:
        parser.error("--count, --small-count, --nagle-count and --repeat must be at least 1")
    opts.nagle_count = min(opts.nagle_count, opts.small_count)
    opts.targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    unknown = set(opts.targets) - set(TARGETS)
    if unknown or not opts.targets:
        parser.error(f"--targets: choose from {','.join(TARGETS)}")
    return opts


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(opts: argparse.Namespace) -> int:
    started = time.perf_counter()
    opts.load_before = _loadavg()
    tools = find_tools(opts.pacsd, with_orthanc="orthanc" in opts.targets)
    base = opts.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pacsd-bench-ingest-", dir=base))
    try:
        corpora: dict[str, Corpus] = {}
        for n, (size, count) in enumerate((("large", opts.count), ("small", opts.small_count))):
            _progress(f"building {count} {size} instances in {work / 'corpus'}")
            corpora[size] = make_corpus(work / "corpus", size, count, opts.seed + n)
        nagle_corpus = subset_corpus(work / "corpus", corpora["small"], opts.nagle_count)
        plan: list[tuple[str, str, int, bool]] = []
        for rep in range(opts.repeat):
            for size in SIZES:
                for assoc in ASSOCIATIONS:
                    # rotate the order so that no target always runs first or last
                    shift = rep % len(opts.targets)
                    for target in opts.targets[shift:] + opts.targets[:shift]:
                        plan.append((target, size, assoc, True))
            if "pacsd" in opts.targets and not opts.no_nagle:
                plan.append(("pacsd", "small", 1, False))  # on nagle_corpus
        results: dict[tuple[str, str, int], Result] = {}
        nagle: Result | None = None
        for n, (target, size, assoc, nodelay) in enumerate(plan, 1):
            corpus = corpora[size] if nodelay else nagle_corpus
            if nodelay:
                key = (target, size, assoc)
                result = results.setdefault(
                    key, Result(target, size, assoc, True, corpus.count, corpus.bytes)
                )
            else:
                nagle = nagle or Result(target, size, assoc, False, corpus.count, corpus.bytes)
                result = nagle
            one = measure(tools, target, corpus, assoc, nodelay, work, opts)
            result.runs.append(one)
            _progress(
                f"[{n:>2}/{len(plan)}] {target:<8} {size:<5} x{assoc}"
                f"{'' if nodelay else ' (Nagle)'}: {one.instances_per_s:7.1f} inst/s "
                f"{one.mb_per_s:6.1f} MB/s in {one.seconds:6.2f}s, "
                f"server CPU {one.server_cpu_ms_per_instance:.2f} ms/inst, "
                f"storescu CPU {one.sender_cpu_ms_per_instance:.2f} ms/inst, "
                f"machine {one.machine_busy_pct:.0f}% busy"
            )
        figures = report(results, nagle, corpora, tools, opts, time.perf_counter() - started)
        if opts.json is not None:
            opts.json.write_text(json.dumps(figures, indent=2) + "\n")
            print(f"figures written to {opts.json}")
    finally:
        if opts.keep:
            for child in work.iterdir():
                if child.name != "corpus":
                    shutil.rmtree(child, ignore_errors=True)
            print(f"corpus kept in {work / 'corpus'}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [PLAIN_SCP_COMMAND]:
        if len(args) != 2:
            print(f"usage: ingest.py {PLAIN_SCP_COMMAND} OUT_DIR", file=sys.stderr)
            return 2
        return plain_scp(Path(args[1]))
    opts = parse_args(args)
    try:
        return run(opts)
    except BenchError as exc:
        print(f"ingest.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ingest.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
