#!/usr/bin/env python3
"""Query benchmark: C-FIND latency on a large index (issue 8's one-million-instance target).

The index is filled through pacsd's own index API (not over DICOM, which would take
hours): ``--instances`` synthetic instances (default 1,000,000) spread as 10 instances per
series, 4 series per study, 2 studies per patient, with realistic spreads of dates,
accession numbers, names and modalities. The rows name a node that is not the server's,
so the server's startup reconciliation leaves them alone (their files do not exist).

Then ``pacsd serve`` opens that index and a pynetdicom SCU, on one association, sends
each query ``--repeat`` times and times each C-FIND from request to final response
(``p50``/``p95``) and to the first match (``first``: what a viewer's list waits for):

* STUDY level: PatientID, PatientName wildcard (``SMITH^J*``), StudyDate range (one
  week), AccessionNumber, StudyInstanceUID;
* SERIES level: StudyInstanceUID (+ Modality), SeriesInstanceUID;
* IMAGE level: SeriesInstanceUID, SOPInstanceUID.

A second table times the same queries with a lean client (``LeanFindClient``: a
blocking socket, only the PDU framing and each response's Status read, as a C client
would), which separates the server's latency from the pynetdicom SCU's own decoding.

``srv CPU`` is the server's user + system CPU per query (mean over the runs, from /proc,
the server process and its engine workers; 10 ms ticks): what the server spends,
apart from what the pynetdicom client spends decoding every response.

The peer measured in the same run is a C-ECHO on the same association: the floor of a
DIMSE round trip through pacsd, so ``ratio`` = C-FIND p50 / C-ECHO p50 is the cost of
the query itself. The issue's target is a p50 under 20 ms for every key. The filled
index is kept under ``--workdir`` (reused when its row count matches) because filling
a million rows takes minutes.

    python bench/query.py [--instances N] [--repeat N] [--workdir DIR] [--json] [--pacsd PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 10, 4, 2
PER_PATIENT = PER_SERIES * SERIES_PER_STUDY * STUDIES_PER_PATIENT
SYNTHETIC_NODE = "bench-synthetic"
LISTENING = re.compile(r"^listening dicom=(\S+):(\d+) control=(\S+):(\d+)$")
_SURNAMES = """SMITH JOHNSON WILLIAMS BROWN JONES GARCIA MILLER DAVIS RODRIGUEZ MARTINEZ
HERNANDEZ LOPEZ GONZALEZ WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE PEREZ
THOMPSON WHITE HARRIS SANCHEZ CLARK RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT"""
SURNAMES = tuple(_SURNAMES.split())
_GIVEN = "JAMES MARY JOHN PATRICIA ROBERT JENNIFER MICHAEL LINDA DAVID ELIZABETH JOSEPH"
GIVEN = tuple(_GIVEN.split())
MODALITIES = ("CT", "MR", "CR", "US", "DX", "PT")


def uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.10.1234." + ".".join(str(p) for p in parts)


def records(count: int, seed: int = 8) -> Iterator[Any]:
    from pacsd.server.storage.attributes import InstanceRecord

    rng = random.Random(seed)
    for p in range(count // PER_PATIENT + 1):
        name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}"
        for s in range(STUDIES_PER_PATIENT):
            day = rng.randrange(0, 3650)
            date = time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400))
            study_no = p * STUDIES_PER_PATIENT + s
            for r in range(SERIES_PER_STUDY):
                modality = MODALITIES[(study_no + r) % len(MODALITIES)]
                for i in range(PER_SERIES):
                    n = ((study_no * SERIES_PER_STUDY) + r) * PER_SERIES + i
                    if n >= count:
                        return
                    yield InstanceRecord(
                        patient_id=f"PID{p:08d}",
                        patient_name=name,
                        birth_date="19700101",
                        sex="O",
                        study_uid=uid(1, study_no),
                        study_date=date,
                        study_time="120000",
                        accession_number=f"ACC{study_no:09d}",
                        study_id=str(s + 1),
                        study_description="synthetic",
                        referring_physician="",
                        series_uid=uid(2, study_no, r),
                        modality=modality,
                        series_number=str(r + 1),
                        series_description="",
                        series_date=date,
                        body_part="",
                        sop_instance_uid=uid(3, study_no, r, i),
                        sop_class_uid=CT_IMAGE_STORAGE,
                        instance_number=str(i + 1),
                        transfer_syntax=EXPLICIT_LE,
                        path=f"/nonexistent/{n}.dcm",
                        size=0,
                        node=SYNTHETIC_NODE,
                    )


def rows_in(index_db: Path) -> int:
    if not index_db.exists():
        return 0
    with sqlite3.connect(index_db) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])
        except sqlite3.Error:
            return 0


def fill(data_dir: Path, count: int, batch: int = 5000) -> float:
    from pacsd.server.storage.index.db import open_index_db
    from pacsd.server.storage.index.repository import Index

    index = Index(open_index_db("", data_dir))
    started = time.perf_counter()
    pending: list[Any] = []
    done = 0
    try:
        for record in records(count):
            pending.append(record)
            if len(pending) == batch:
                index.add(pending)
                done += len(pending)
                pending = []
                if done % 100_000 == 0:
                    rate = done / (time.perf_counter() - started)
                    print(f"  filled {done:,} rows ({rate:,.0f}/s)", file=sys.stderr)
        if pending:
            index.add(pending)
    finally:
        index.db.close()
    return time.perf_counter() - started


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int


def start_pacsd(data_dir: Path, pacsd: str | None = None) -> Server:
    pacsd = pacsd or shutil.which("pacsd") or str(Path(sys.executable).with_name("pacsd"))
    proc = subprocess.Popen(
        [pacsd, "serve", "--data-dir", str(data_dir), "--dicom-port", "0", "--control-port", "0"],
        stdout=subprocess.PIPE,
        stderr=open(data_dir / "pacsd.stderr", "w"),  # noqa: SIM115 - lives with the process
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300  # the startup reconciliation reads the index
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = LISTENING.match(line.strip())
        if match:
            return Server(proc, int(match.group(2)))
    proc.kill()
    raise SystemExit(f"pacsd did not start: {(data_dir / 'pacsd.stderr').read_text()[-2000:]}")


def query_identifier(level: str, keys: dict[str, str]) -> Any:
    """A C-FIND identifier: the level's return keys empty, ``keys`` matched."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in RETURN_KEYS[level]:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def queries(count: int) -> list[tuple[str, str, dict[str, str]]]:
    """(label, level, keys) with values that exist in the synthetic index."""
    study = min(count // (PER_SERIES * SERIES_PER_STUDY) // 2, 10**9)
    return [
        ("study: PatientID", "STUDY", {"PatientID": f"PID{study // 2:08d}"}),
        ("study: PatientName SMITH^J*", "STUDY", {"PatientName": "SMITH^J*"}),
        ("study: StudyDate one week", "STUDY", {"StudyDate": "20150601-20150607"}),
        ("study: AccessionNumber", "STUDY", {"AccessionNumber": f"ACC{study:09d}"}),
        ("study: StudyInstanceUID", "STUDY", {"StudyInstanceUID": uid(1, study)}),
        (
            "series: StudyInstanceUID+Modality",
            "SERIES",
            {"StudyInstanceUID": uid(1, study), "Modality": MODALITIES[(study + 1) % 6]},
        ),
        (
            "series: SeriesInstanceUID",
            "SERIES",
            {"StudyInstanceUID": uid(1, study), "SeriesInstanceUID": uid(2, study, 1)},
        ),
        (
            "image: SeriesInstanceUID",
            "IMAGE",
            {"StudyInstanceUID": uid(1, study), "SeriesInstanceUID": uid(2, study, 1)},
        ),
        (
            "image: SOPInstanceUID",
            "IMAGE",
            {
                "StudyInstanceUID": uid(1, study),
                "SeriesInstanceUID": uid(2, study, 1),
                "SOPInstanceUID": uid(3, study, 1, 3),
            },
        ),
    ]


RETURN_KEYS = {
    "STUDY": ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyInstanceUID"),
    "SERIES": ("Modality", "SeriesNumber", "SeriesInstanceUID"),
    "IMAGE": ("InstanceNumber", "SOPInstanceUID"),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def server_cpu_ms(pid: int) -> float:
    """User + system CPU (ms) of the server and its descendants (engine workers), from
    /proc; 0.0 where /proc is not available."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = int(fields[11]) + int(fields[12])
    family, changed = {pid}, True
    while changed:
        grown = family | {child for child, parent in parents.items() if parent in family}
        changed, family = grown != family, grown
    return sum(times.get(p, 0) for p in family) * 1000 / tick


class LeanFindClient:
    """A C-FIND SCU that does no more than a C client would: one blocking socket
    (TCP_NODELAY), each request encoded before the clock starts, and per response only
    the PDU framing and the command set's Status read; identifiers are skipped, not
    decoded. What it measures is the server's latency; the pynetdicom SCU adds its own
    decoding (~0.3 ms per response) and two polling threads."""

    def __init__(self, port: int) -> None:
        import socket

        from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
        from pynetdicom.pdu import A_ASSOCIATE_RQ
        from pynetdicom.pdu_primitives import (
            A_ASSOCIATE,
            ImplementationClassUIDNotification,
            MaximumLengthNotification,
        )
        from pynetdicom.presentation import build_context
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
        from pynetdicom.transport import AddressInformation

        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rq = A_ASSOCIATE()
        rq.application_context_name = "1.2.840.10008.3.1.1.1"
        rq.calling_ae_title, rq.called_ae_title = "QUERYLEAN", "PACSD"
        rq.calling_presentation_address = AddressInformation(HOST, 0)
        rq.called_presentation_address = AddressInformation(HOST, port)
        cx = build_context(StudyRootQueryRetrieveInformationModelFind, ["1.2.840.10008.1.2"])
        cx.context_id = 1
        rq.presentation_context_definition_list = [cx]
        length = MaximumLengthNotification()
        length.maximum_length_received = 131072
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        rq.user_information = [length, impl]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(rq)
        self.sock.sendall(pdu.encode())
        kind, _ = self._pdu()
        if kind != 0x02:
            raise SystemExit(f"lean client: association refused (PDU type 0x{kind:02X})")
        self.message_id = 0

    def _read(self, size: int) -> bytes:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if not n:
                raise SystemExit("lean client: connection closed")
            got += n
        return bytes(buffer)

    def _pdu(self) -> tuple[int, bytes]:
        head = self._read(6)
        return head[0], self._read(int.from_bytes(head[2:6], "big"))

    def request(self, identifier: Any) -> bytes:
        """The C-FIND-RQ's PDUs (encoded with pynetdicom, before timing)."""
        from io import BytesIO

        from pynetdicom.dimse_messages import C_FIND_RQ
        from pynetdicom.dimse_primitives import C_FIND
        from pynetdicom.dsutils import encode
        from pynetdicom.pdu import P_DATA_TF
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        self.message_id = self.message_id % 65535 + 1
        primitive = C_FIND()
        primitive.MessageID = self.message_id
        primitive.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
        primitive.Identifier = BytesIO(encode(identifier, True, True))
        msg = C_FIND_RQ()
        msg.primitive_to_message(primitive)
        out = b""
        for pdata in msg.encode_msg(1, 131072):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            out += pdu.encode()
        return out

    def find(self, request: bytes) -> tuple[int, float | None]:
        """Send one C-FIND-RQ; (matches, ms to the first match) once the final status is in."""
        t0 = time.perf_counter()
        self.sock.sendall(request)
        matches, first, command = 0, None, b""
        while True:
            kind, body = self._pdu()
            if kind != 0x04:
                raise SystemExit(f"lean client: unexpected PDU type 0x{kind:02X}")
            offset = 0
            while offset < len(body):
                length = int.from_bytes(body[offset : offset + 4], "big")
                flags = body[offset + 5]
                if flags & 0x01:  # a command fragment (data fragments are skipped)
                    command += body[offset + 6 : offset + 4 + length]
                    if flags & 0x02:
                        status = _status(command)
                        command = b""
                        if status in (0xFF00, 0xFF01):
                            matches += 1
                            if first is None:
                                first = (time.perf_counter() - t0) * 1000
                        elif status == 0x0000:
                            return matches, first
                        else:
                            raise SystemExit(f"lean client: C-FIND status 0x{status:04X}")
                offset += 4 + length

    def close(self) -> None:
        self.sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        try:
            self._pdu()
        finally:
            self.sock.close()


def _status(command: bytes) -> int:
    """Status (0000,0900) from an Implicit VR Little Endian command set."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, offset)
        if (group, element) == (0x0000, 0x0900):
            return int.from_bytes(command[offset + 8 : offset + 10], "little")
        offset += 8 + length
    raise SystemExit("lean client: response without a Status")


def lean_measure(port: int, count: int, repeat: int) -> dict[str, dict[str, Any]]:
    """Per query: p50/p95 and p50 to the first match with ``LeanFindClient``."""

    client = LeanFindClient(port)
    out: dict[str, dict[str, Any]] = {}
    try:
        for label, level, keys in queries(count):
            ds = query_identifier(level, keys)
            times, firsts, matches = [], [], 0
            for _ in range(repeat):
                request = client.request(ds)
                t0 = time.perf_counter()
                matches, first = client.find(request)
                times.append((time.perf_counter() - t0) * 1000)
                if first is not None:
                    firsts.append(first)
            out[label] = {
                "matches": matches,
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(percentile(times, 0.95), 2),
                "first_p50_ms": round(statistics.median(firsts), 2) if firsts else None,
            }
    finally:
        client.close()
    return out


def measure(port: int, count: int, repeat: int, server_pid: int = 0) -> dict[str, Any]:
    from pynetdicom import AE
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind,
        Verification,
    )

    ae = AE(ae_title="QUERYBENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    assoc = ae.associate(HOST, port, ae_title="PACSD")
    if not assoc.is_established:
        raise SystemExit("association with pacsd failed")
    try:
        echo = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            assoc.send_c_echo()
            echo.append((time.perf_counter() - t0) * 1000)
        results = []
        for label, level, keys in queries(count):
            times, firsts, matches = [], [], 0
            cpu_before = server_cpu_ms(server_pid) if server_pid else 0.0
            for _ in range(repeat):
                ds = query_identifier(level, keys)
                t0 = time.perf_counter()
                found = 0
                for status, identifier in assoc.send_c_find(
                    ds, StudyRootQueryRetrieveInformationModelFind
                ):
                    if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                        if not found:
                            firsts.append((time.perf_counter() - t0) * 1000)
                        found += 1
                    elif status and status.Status != 0x0000:
                        raise SystemExit(f"{label}: C-FIND status 0x{status.Status:04X}")
                times.append((time.perf_counter() - t0) * 1000)
                matches = found
            cpu = (server_cpu_ms(server_pid) - cpu_before) / repeat if server_pid else None
            results.append(
                {
                    "query": label,
                    "matches": matches,
                    "p50_ms": round(statistics.median(times), 2),
                    "p95_ms": round(percentile(times, 0.95), 2),
                    "first_p50_ms": round(statistics.median(firsts), 2) if firsts else None,
                    # mean over the runs; /proc counts in 10 ms ticks, so coarse
                    "server_cpu_ms": None if cpu is None else round(cpu, 1),
                }
            )
    finally:
        assoc.release()
    echo_p50 = statistics.median(echo)
    for item in results:
        item["ratio_to_echo"] = round(item["p50_ms"] / echo_p50, 1)
    return {"echo_p50_ms": round(echo_p50, 2), "queries": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pacsd-bench-query"))
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    parser.add_argument("--pacsd", help="pacsd console script to run (default: on PATH)")
    args = parser.parse_args(argv)

    data_dir = args.workdir / f"data-{args.instances}"
    fill_seconds = None
    if rows_in(data_dir / "index.db") != args.instances:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        print(f"filling an index with {args.instances:,} instances ...", file=sys.stderr)
        fill_seconds = fill(data_dir, args.instances)
    server = start_pacsd(data_dir, args.pacsd)
    try:
        report = measure(server.port, args.instances, args.repeat, server.proc.pid)
        lean = lean_measure(server.port, args.instances, args.repeat)
        for item in report["queries"]:
            item["lean"] = lean[item["query"]]
    finally:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
    report = {
        "instances": args.instances,
        "fill_seconds": None if fill_seconds is None else round(fill_seconds, 1),
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        **report,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"C-FIND on {args.instances:,} instances, {args.repeat} runs each (one association)")
    if fill_seconds is not None:
        print(f"index filled in {fill_seconds:.0f} s")
    print(f"C-ECHO (peer: a DIMSE round trip) p50 {report['echo_p50_ms']:.2f} ms")
    print(
        f"{'query':<36} {'matches':>7} {'p50 ms':>8} {'p95 ms':>8} {'first':>7} "
        f"{'x echo':>7} {'srv CPU':>8}  < 20 ms"
    )
    for item in report["queries"]:
        ok = "yes" if item["p50_ms"] < 20 else "NO"
        print(
            f"{item['query']:<36} {item['matches']:>7} {item['p50_ms']:>8.2f} "
            f"{item['p95_ms']:>8.2f} {item['first_p50_ms'] or 0:>7.2f} "
            f"{item['ratio_to_echo']:>7.1f} {item['server_cpu_ms'] or 0:>8.1f}  {ok}"
        )
    print("same queries, lean client (framing and Status only; identifiers not decoded):")
    print(f"{'query':<36} {'matches':>7} {'p50 ms':>8} {'p95 ms':>8} {'first':>7}  < 20 ms")
    for item in report["queries"]:
        lean = item["lean"]
        ok = "yes" if lean["p50_ms"] < 20 else "NO"
        print(
            f"{item['query']:<36} {lean['matches']:>7} {lean['p50_ms']:>8.2f} "
            f"{lean['p95_ms']:>8.2f} {lean['first_p50_ms'] or 0:>7.2f}  {ok}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
