"""A C-GET over TLS sends the stored file a PDU at a time, even to a peer that stalls.

On TLS the upper layer's thread writes every PDU (an ``SSLSocket`` is not written by
two threads), so the C-GET's sub-operation queues its P-DATA to that thread. The peer
here (pynetdicom in a child process, mutual TLS) is stopped with SIGSTOP once the
instance starts arriving: pacsd can then write nothing, and its C-GET must wait for
room (``stored_send.wait_for_room``) rather than read the rest of the 64 MiB file into
the queue. The peer gets the instance whole after SIGCONT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread

from tests.conftest import PacsdProcess
from tests.integration.dicom_peers import storescu
from tests.integration.test_retrieve_streams import (
    PATIENT,
    grows_less_than_a_quarter,
    peak_kib,
    reset_peak,
    write_big,
)
from tests.security.dicom_tls_peers import make_pki, tls_config, tls_port

#: The stalling peer: a C-GET SCU over mutual TLS that prints "receiving" at the first
#: P-DATA of the sub-operation, then, once done, the size it got and the final status.
PEER = r"""
import ssl, sys
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelGet as GET
from pydicom.dataset import Dataset

port, ca, cert, key, patient, sop_class = sys.argv[1:7]
context = ssl.create_default_context(cafile=ca)
context.load_cert_chain(cert, key)
seen = []

def on_pdu(event):
    if not seen and isinstance(event.pdu, P_DATA_TF):
        seen.append(True)
        print("receiving", flush=True)

def on_store(event):
    print("stored", len(event.request.DataSet.getvalue()), flush=True)
    return 0x0000

ae = AE(ae_title="MODALITY")
ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
ae.add_requested_context(GET)
ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
assoc = ae.associate(
    "127.0.0.1", int(port), ae_title="PACSD",
    ext_neg=[build_role(sop_class, scp_role=True)],
    evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_PDU_RECV, on_pdu)],
    tls_args=(context, "127.0.0.1"),
)
assert assoc.is_established
query = Dataset()
query.QueryRetrieveLevel = "PATIENT"
query.PatientID = patient
statuses = [status.Status for status, _ in assoc.send_c_get(query, GET)]
assoc.release()
print("status", hex(statuses[-1]), flush=True)
"""


def test_a_get_over_tls_to_a_stalled_peer_does_not_read_the_file_ahead(
    start_pacsd: object, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    config = tls_config(tmp_path, pki, core={"workers": 1}, require_client_cert=True)
    server: PacsdProcess = start_pacsd(["--config", str(config)])  # type: ignore[operator]
    big = write_big(tmp_path / "big.dcm")
    sent = storescu(server.dicom_port, [big], timeout=120)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    sop_class = str(dcmread(big, stop_before_pixels=True).SOPClassUID)

    before = reset_peak(server.proc.pid)
    peer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PEER,
            str(tls_port(server)),
            str(pki.ca),
            str(pki.client.cert),
            str(pki.client.key),
            PATIENT,
            sop_class,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert peer.stdout is not None
        first = peer.stdout.readline()
        assert first.strip() == "receiving", first + peer.stdout.read()
        os.kill(peer.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)  # pacsd can write nothing meanwhile
        finally:
            os.kill(peer.pid, signal.SIGCONT)
        output, _ = peer.communicate(timeout=120)
    finally:
        peer.kill()
        peer.wait()
    assert peer.returncode == 0, output
    assert "status 0x0" in output.splitlines()[-1], output
    assert f"stored {big.stat().st_size - _meta_end(big)}" in output, output
    grows_less_than_a_quarter(before, peak_kib(server.proc.pid))


def _meta_end(path: Path) -> int:
    """Where the data set starts in a Part 10 file (what a C-STORE carries)."""
    with path.open("rb") as fh:
        head = fh.read(144)
    return 144 + int.from_bytes(head[140:144], "little")
