"""A pacsd with two engine processes, and a control-plane channel to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from tests.conftest import PacsdProcess


@pytest.fixture
def server(start_pacsd: Callable[..., PacsdProcess]) -> PacsdProcess:
    return start_pacsd(env={"PACSD_WORKERS": "2"})


@pytest.fixture
def channel(server: PacsdProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.endpoint) as ch:
        yield ch
