"""Real DICOM peers for tests: DCMTK's storescp as a subprocess, on a free loopback port.

Shared by the AE-registry and DICOM-client tests. A missing DCMTK tool fails the test
(``conftest.dcmtk``); it is never skipped.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import dcmtk, dcmtk_env

#: Secondary Capture Image Storage: small instances without pixel data are fine for it.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"peer exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class StoreSCP:
    port: int
    output_dir: Path
    proc: subprocess.Popen[bytes]
    ae_title: str = "STORESCP"

    def files(self) -> list[Path]:
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())

    def file_for(self, sop_instance_uid: str, timeout: float = 5) -> Path:
        """The file storescp wrote for an instance (it names files <modality>.<uid>)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in self.output_dir.iterdir():
                if path.name.endswith("." + sop_instance_uid):
                    return path
            time.sleep(0.05)
        pytest.fail(f"storescp wrote no file for {sop_instance_uid} in {self.output_dir}")


@contextmanager
def storescp(tmp_path: Path, *extra: str, ignore: bool = False) -> Iterator[StoreSCP]:
    """DCMTK storescp with TCP_NODELAY=1, killed afterwards."""
    port = free_port()
    out = tmp_path / f"storescp-{port}"
    out.mkdir()
    args = [dcmtk("storescp"), "--output-directory", str(out), *extra]
    if ignore:
        args.append("--ignore")
    proc = subprocess.Popen(
        [*args, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dcmtk_env(),
    )
    try:
        wait_for_port(port, proc)
        yield StoreSCP(port, out, proc)
    finally:
        proc.kill()
        proc.wait()


def small_instance(patient_id: str = "PAT1", **extra: str) -> Dataset:
    """A minimal Secondary Capture instance, Explicit VR Little Endian."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.Modality = "OT"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def storescu(
    port: int,
    files: Iterable[Path],
    *,
    calling: str = "MODALITY",
    extra: Sequence[str] = (),
    timeout: float = 120,
    verbose: bool = True,
) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu sending ``files`` to pacsd (AE PACSD) over one association."""
    return subprocess.run(
        [
            dcmtk("storescu"),
            *(["-v"] if verbose else []),
            "-aet",
            calling,
            "-aec",
            "PACSD",
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dcmtk_env(),
    )
