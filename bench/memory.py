#!/usr/bin/env python3
"""Memory benchmark: the server's peak RSS while it receives one very large instance,
and while it sends it back.

DCMTK ``storescu`` (``TCP_NODELAY=1``) sends one instance of ``--size-mb`` megabytes
(default 1024: a 2048-frame 512x512 16-bit multi-frame CT, Explicit VR Little Endian) to
each target, started fresh, one after the other:

* ``pacsd``    -- ``pacsd serve`` (spools P-DATA to disk as it arrives, indexes from the
  header);
* ``storescp`` -- DCMTK ``storescp``, started as in ``ingest.py`` (the peer: a C++ SCP,
  which assembles the dataset in memory before writing it);
* ``plain``    -- a plain pynetdicom SCP that writes ``event.encoded_dataset()`` (holds the
  whole dataset in memory, as pynetdicom does by default);
* ``orthanc``  -- Orthanc, started as in ``ingest.py`` (C-GET allowed).

For each: the process's resident set before the send (``VmRSS``), its peak over the whole
run (``VmHWM``, from ``/proc/PID/status``), the growth (peak - before), the seconds the
send took, and that the instance arrived whole (size of what the server wrote). Ratios:
pacsd's growth over storescp's, the plain SCP's and Orthanc's. The issue's target is a
pacsd peak under 200 MB.

The servers that serve retrieves (pacsd, Orthanc) then send the instance back: DCMTK
``getscu`` fetches it with a C-GET. Their peak is started again first (``clear_refs``,
see proc(5)), so the figure is the send's own: peak, growth over the RSS before the
C-GET, seconds, and that getscu got it whole. Ratio: pacsd's growth over Orthanc's.

    python bench/memory.py [--size-mb N] [--targets pacsd,storescp,plain,orthanc]
                           [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # the sibling benchmark: tools, server starters, storescu runner

TARGETS = ("pacsd", "storescp", "plain", "orthanc")
#: The targets that serve C-GET: their memory is measured while they send it back.
RETRIEVERS = ("pacsd", "orthanc")
FRAME = 512 * 512 * 2
MIB = 1024 * 1024


def build_instance(path: Path, size_mb: int) -> int:
    """A multi-frame CT of about ``size_mb`` MiB, written without holding the pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = max(1, size_mb * MIB // FRAME)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ingest.CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = "MEMBENCH", "Memory^Bench"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.StudyDate = "CT", "20260101"
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.save_as(path, enforce_file_format=True)
    pixels = frames * FRAME
    chunk = bytes(range(256)) * (MIB // 256)
    with path.open("ab") as f:
        # (7FE0,0010) OW, explicit VR little endian: tag, VR, 2 reserved, 4-byte length.
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels))
        for _ in range(pixels // MIB):
            f.write(chunk)
        f.write(chunk[: pixels % MIB])
    return path.stat().st_size


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ingest.BenchError(f"/proc/{pid}/status has no {field}")


def biggest_file(folder: Path) -> int:
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix != ".db"]
    return max(sizes, default=0)


def measure(
    tools: ingest.Tools, getscu: str, target: str, instance: Path, work: Path
) -> dict[str, Any]:
    mdir = Path(tempfile.mkdtemp(prefix=f"mem-{target}-", dir=work))
    got: dict[str, Any] | None = None
    try:
        if target == "pacsd":
            # One engine process: the figure is the RSS of the process that receives.
            server = ingest.start_pacsd(tools, mdir, [], workers=1)
        elif target == "orthanc":
            server = ingest.start_orthanc(tools, mdir, ['"DicomAlwaysAllowGet": true'])
        else:
            server = ingest.STARTERS[target](tools, mdir, [])
        try:
            time.sleep(0.5)  # let the server settle before reading its baseline
            before = status_kb(server.proc.pid, "VmRSS")
            seconds = ingest.run_storescu(tools, server, [[instance]], True, 1800, mdir)
            peak = status_kb(server.proc.pid, "VmHWM")
            # pacsd stores under DATA_DIR/blobs; the others write into their output folder.
            received = biggest_file(server.out_dir)
            if target in RETRIEVERS:
                got = measure_get(getscu, server, mdir / "got")
            server.check_alive()
            server.stop()
        finally:
            server.kill()
    finally:
        shutil.rmtree(mdir, ignore_errors=True)
        os.sync()
    return {
        "target": target,
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "growth_mb": round((peak - before) / 1024, 1),
        "seconds": round(seconds, 2),
        "received_bytes": received,
        "get": got,
    }


def measure_get(getscu: str, server: ingest.Server, out: Path) -> dict[str, Any]:
    """C-GET the instance back with getscu; the server's peak during it."""
    out.mkdir()
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")  # peak := RSS now
    before = status_kb(server.proc.pid, "VmHWM")
    started = time.perf_counter()
    run = subprocess.run(
        [
            getscu,
            "-aec",
            server.ae_title,
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=MEMBENCH",
            "127.0.0.1",
            str(server.port),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise ingest.BenchError(f"getscu from {server.target} failed:\n{run.stderr[-2000:]}")
    peak = status_kb(server.proc.pid, "VmHWM")
    return {
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "growth_mb": round((peak - before) / 1024, 1),
        "seconds": round(seconds, 2),
        "received_bytes": biggest_file(out),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="instance size in MiB")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if not targets or set(targets) - set(TARGETS):
        parser.error(f"--targets: choose from {','.join(TARGETS)}")
    try:
        tools = ingest.find_tools(None, with_orthanc="orthanc" in targets)
        getscu = ingest._dcmtk("getscu")[0]
    except ingest.BenchError as exc:
        print(f"memory.py: error: {exc}", file=sys.stderr)
        return 1
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pacsd-bench-memory-", dir=base))
    try:
        instance = work / "big.dcm"
        print(f"building a {args.size_mb} MiB instance in {instance}", file=sys.stderr)
        size = build_instance(instance, args.size_mb)
        results = []
        for target in targets:
            print(f"sending it to {target}", file=sys.stderr)
            result = measure(tools, getscu, target, instance, work)
            # pacsd and storescp keep the file as sent; the plain SCP drops the file meta.
            if result["received_bytes"] < size - 4096:
                raise ingest.BenchError(
                    f"{target} wrote {result['received_bytes']} bytes of a {size}-byte instance"
                )
            got = result["get"]
            if got is not None and got["received_bytes"] < size - 4096:
                raise ingest.BenchError(
                    f"getscu got {got['received_bytes']} bytes of a {size}-byte instance "
                    f"from {target}"
                )
            results.append(result)
    except ingest.BenchError as exc:
        print(f"memory.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    by_target = {r["target"]: r for r in results}
    print(f"one {size / MIB:.0f} MiB instance, storescu {tools.dcmtk_version} with TCP_NODELAY=1")
    print(f"{'target':<10} {'RSS before':>11} {'peak RSS':>9} {'growth':>8} {'send s':>7}")
    for r in results:
        print(
            f"{r['target']:<10} {r['rss_before_mb']:>8.1f} MB {r['peak_rss_mb']:>6.1f} MB "
            f"{r['growth_mb']:>5.1f} MB {r['seconds']:>7.2f}"
        )
    getters = [r for r in results if r["get"] is not None]
    if getters:
        print(f"sent back: a C-GET by getscu {tools.dcmtk_version}")
        print(f"{'target':<10} {'RSS before':>11} {'peak RSS':>9} {'growth':>8} {'get s':>7}")
        for r in getters:
            g = r["get"]
            print(
                f"{r['target']:<10} {g['rss_before_mb']:>8.1f} MB {g['peak_rss_mb']:>6.1f} MB "
                f"{g['growth_mb']:>5.1f} MB {g['seconds']:>7.2f}"
            )
    ratios = {}
    pacsd = by_target.get("pacsd")
    for peer in ("storescp", "plain", "orthanc"):
        if pacsd and peer in by_target and by_target[peer]["growth_mb"] > 0:
            ratios[f"pacsd_growth_over_{peer}"] = round(
                pacsd["growth_mb"] / by_target[peer]["growth_mb"], 4
            )
    orthanc = by_target.get("orthanc")
    if pacsd and orthanc and orthanc["get"]["growth_mb"] > 0:
        ratios["pacsd_get_growth_over_orthanc"] = round(
            pacsd["get"]["growth_mb"] / orthanc["get"]["growth_mb"], 4
        )
    if ratios:
        print("ratio " + " ".join(f"{k}={v}" for k, v in ratios.items()))
    if pacsd:
        verdict = "met" if pacsd["peak_rss_mb"] < 200 else "NOT met"
        print(f"target: pacsd peak RSS under 200 MB: {verdict} ({pacsd['peak_rss_mb']:.1f} MB)")
        peak = pacsd["get"]["peak_rss_mb"]
        verdict = "met" if peak < 200 else "NOT met"
        print(f"target: pacsd peak RSS under 200 MB sending it back: {verdict} ({peak:.1f} MB)")
    if args.json:
        args.json.write_text(
            json.dumps({"size_bytes": size, "results": results, "ratios": ratios}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
