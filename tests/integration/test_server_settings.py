"""ServerService.GetSettings / UpdateSettings and ``pacsctl settings`` on a real server:
each runtime setting is shown to take effect on the next association or request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pacsd.client import Client
from pacsd.client.errors import FailedPrecondition, InvalidArgument
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from tests.conftest import PacsdProcess, run_pacsctl
from tests.integration.dicom_peers import small_instance

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SLOW_ADDIN = Path(__file__).resolve().parents[1] / "addins" / "slow.py"


def associate(
    server: PacsdProcess, *contexts: str, evt_handlers: list[Any] | None = None
) -> Association:
    ae = AE(ae_title="SETTINGSCU")
    for uid in contexts or (VERIFICATION,):
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    return ae.associate(
        "127.0.0.1", server.dicom_port, ae_title=server.ae_title, evt_handlers=evt_handlers
    )


def test_settings_show_every_value_and_which_apply_at_runtime(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        result = client.server.settings()
    values = result.settings
    # As configured (the fixture asks for a free port); GetServer's listeners say
    # which port was bound.
    assert values["dicom_port"] == 0
    assert values["max_associations"] == 64
    assert values["log_level"] == "INFO"
    assert Path(values["data_dir"]).name == pacsd.data_dir.name
    assert "max_associations" in result.runtime_settings
    assert "dicom_port" not in result.runtime_settings


def test_max_associations_applies_to_the_next_association(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        update = client.server.update_settings(max_associations=1)
        assert update.changed and update.changed_fields == ("max_associations",)
        first = associate(pacsd)
        assert first.is_established
        second = associate(pacsd)
        # Transient rejection, service provider (presentation), local limit exceeded.
        assert second.is_rejected
        assert (second.acceptor.primitive.result, second.acceptor.primitive.diagnostic) == (2, 2)
        client.server.update_settings(max_associations=2)
        third = associate(pacsd)
        assert third.is_established
        third.release()
        first.release()


def test_access_policy_applies_to_the_next_association(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        client.server.update_settings(require_known_calling_ae=True)
        refused = associate(pacsd)
        # Permanent, service user, calling AE title not recognized.
        assert refused.is_rejected
        assert (refused.acceptor.primitive.result, refused.acceptor.primitive.diagnostic) == (1, 3)
        client.aetitles.create("SETTINGSCU", "127.0.0.1", 104)
        known = associate(pacsd)
        assert known.is_established
        known.release()
        client.server.update_settings(unknown_ae_permissions=["echo"])
        client.aetitles.delete("SETTINGSCU")
        client.server.update_settings(require_known_calling_ae=False)
        again = associate(pacsd, VERIFICATION, SECONDARY_CAPTURE)
        assert again.is_established
        assert int(again.send_c_echo().Status) == 0x0000
        ds = small_instance()  # Secondary Capture
        assert int(again.send_c_store(ds).Status) == 0x0124  # echo only: not authorized
        again.release()
        values = client.server.settings().settings
        assert values["unknown_ae_permissions"] == ["echo"]


def test_network_timeout_applies_to_new_associations(pacsd: PacsdProcess) -> None:
    before = associate(pacsd)
    time.sleep(1.5)
    assert before.is_established  # 60 s by default: still there
    before.release()
    with Client(pacsd.endpoint) as client:
        client.server.update_settings(network_timeout=0.5)
    idle = associate(pacsd)
    assert idle.is_established
    deadline = time.monotonic() + 10
    while idle.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert idle.is_aborted  # the server gave up on the idle peer


def test_handler_time_limit_applies_to_the_next_request(pacsd_no_storage: PacsdProcess) -> None:
    server = pacsd_no_storage
    with Client(server.endpoint) as client:
        client.addins.load(str(SLOW_ADDIN))
        statuses = []
        for limit in (60, 0.3):
            client.server.update_settings(handler_time_limit=limit)
            assoc = associate(server, SECONDARY_CAPTURE)
            ds = small_instance()  # Secondary Capture, which the slow add-in stores
            statuses.append(int(assoc.send_c_store(ds).Status))
            assoc.release()
    assert statuses[0] == 0x0000
    assert statuses[1] != 0x0000  # the slow handler (1.5 s) ran past 0.3 s


def test_a_store_past_its_limit_is_answered_then_the_association_aborted(
    pacsd_no_storage: PacsdProcess,
) -> None:
    """The handler runs on the association's own thread: at the limit the watchdog
    answers the request, then aborts the association, whose thread the handler still
    holds. The handler's late answer is never sent."""
    server = pacsd_no_storage
    received: list[tuple[int, int]] = []

    def on_message(event: Event) -> None:
        command = event.message.command_set
        received.append((int(command.MessageIDBeingRespondedTo), int(command.Status)))

    with Client(server.endpoint) as client:
        client.addins.load(str(SLOW_ADDIN))
        client.server.update_settings(handler_time_limit=0.3)
        assoc = associate(
            server, SECONDARY_CAPTURE, evt_handlers=[(evt.EVT_DIMSE_RECV, on_message)]
        )
        started = time.monotonic()
        status = int(assoc.send_c_store(small_instance(), msg_id=7).Status)
        # Answered at the limit, not when the 1.5 s handler returned, then aborted.
        assert time.monotonic() - started < 1.2
        deadline = time.monotonic() + 1
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert assoc.is_aborted and time.monotonic() - started < 1.2
        # The handler returns at 1.5 s: its answer must not follow.
        time.sleep(1.5)
        # The server serves on: a new association stores (the handler times out again).
        again = associate(server, SECONDARY_CAPTURE)
        assert int(again.send_c_store(small_instance(), msg_id=8).Status) == 0x0110
        slow = client.addins.get("slow")
    assert status == 0x0110
    assert received == [(7, 0x0110)]
    assert slow.counters.timeouts == 2
    server.wait_for_log("past its 0.3s time limit: the request had been answered")
    assert "Traceback" not in server.stderr()


def test_log_level_changes_the_default_level(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        update = client.server.update_settings(log_level="debug")
        assert update.settings["log_level"] == "DEBUG"
        assert client.logs.levels().default == "DEBUG"
        # SetLogLevel changes the same thing; GetSettings reports what is in force.
        client.logs.set_level("WARNING")
        assert client.server.settings().settings["log_level"] == "WARNING"


def test_updates_are_idempotent_and_validated_whole(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        dry = client.server.update_settings(max_associations=5, validate_only=True)
        assert dry.changed and dry.settings["max_associations"] == 5
        assert client.server.settings().settings["max_associations"] == 64

        assert client.server.update_settings(max_associations=5).changed
        again = client.server.update_settings(max_associations=5.0, grace_period=10)
        assert not again.changed and again.changed_fields == ()

        with pytest.raises(FailedPrecondition) as restart:
            client.server.update_settings(max_associations=6, dicom_port=1)
        assert restart.value.reason == "SETTING_REQUIRES_RESTART"
        assert restart.value.metadata["fields"] == "dicom_port"
        with pytest.raises(InvalidArgument) as invalid:
            client.server.update_settings(max_associations=6, grace_period=-1)
        assert "grace_period" in invalid.value.message
        with pytest.raises(InvalidArgument) as unknown:
            client.server.update_settings(max_assocations=6)
        assert unknown.value.metadata["field"] == "max_assocations"
        # None of the refused requests changed the valid value they carried.
        assert client.server.settings().settings["max_associations"] == 5
        # A restart-only setting stated with its current value is simply in sync.
        same = client.server.update_settings(ae_title=pacsd.ae_title)
        assert not same.changed


def test_pacsctl_settings(pacsd: PacsdProcess) -> None:
    shown = run_pacsctl(pacsd, "settings", "get", "max_associations", "dicom_port")
    assert shown.returncode == 0, shown
    assert shown.stdout.splitlines() == [
        "max_associations  64  (runtime)",
        "dicom_port        0",
    ]
    changed = run_pacsctl(
        pacsd, "-w", "json", "settings", "set", "log_level=DEBUG", "grace_period=2"
    )
    assert changed.returncode == 0, changed
    document = json.loads(changed.stdout)
    assert document["changed_fields"] == ["grace_period", "log_level"]
    assert document["settings"] == {"grace_period": 2, "log_level": "DEBUG"}
    same = run_pacsctl(pacsd, "settings", "set", "log_level=DEBUG")
    assert (same.returncode, same.stdout.strip()) == (0, "no change")
    refused = run_pacsctl(pacsd, "settings", "set", "data_dir=/tmp/elsewhere")
    assert refused.returncode == 1
    assert "SETTING_REQUIRES_RESTART" in refused.stderr
    usage = run_pacsctl(pacsd, "settings", "set", "novalue")
    assert usage.returncode == 2
