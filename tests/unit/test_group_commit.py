"""Group commit without a committer thread: the storing thread commits, others join.

Real threads and a real commit function (one that records its batches and can be told
to block or fail); no mocks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from pacsd.server.storage.group_commit import CommitterClosed, GroupCommitter


class Recorder:
    """A commit function: records each batch; ``gate`` holds a commit until set."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.bad: set[Any] = set()

    def __call__(self, records: Sequence[Any]) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.bad & set(records):
            raise ValueError(f"bad record in {sorted(records)}")
        self.batches.append(list(records))
        self.threads.append(threading.current_thread().name)


def test_alone_a_record_commits_on_the_callers_thread() -> None:
    commit = Recorder()
    committer = GroupCommitter(commit)
    committer.add(1)  # type: ignore[arg-type]
    assert commit.batches == [[1]]
    assert commit.threads == [threading.current_thread().name]
    assert (committer.batches, committer.records) == (1, 1)


def test_records_queued_during_a_commit_share_the_next_transaction() -> None:
    commit = Recorder()
    committer = GroupCommitter(commit)
    commit.gate.clear()
    leader = threading.Thread(target=committer.add, args=(0,), name="leader")
    leader.start()
    assert commit.entered.wait(10)
    futures = [committer.submit(n) for n in range(1, 6)]  # type: ignore[arg-type]
    assert not any(f.done() for f in futures)  # they wait for the running commit
    commit.gate.set()
    for future in futures:
        future.result(10)
    leader.join(10)
    assert commit.batches == [[0], [1, 2, 3, 4, 5]]
    assert commit.threads == ["leader", "leader"]


def test_a_bad_record_fails_alone() -> None:
    commit = Recorder()
    commit.bad = {3}
    committer = GroupCommitter(commit)
    commit.gate.clear()
    leader = threading.Thread(target=committer.add, args=(0,))
    leader.start()
    assert commit.entered.wait(10)
    futures = {n: committer.submit(n) for n in (1, 2, 3, 4)}  # type: ignore[arg-type]
    commit.gate.set()
    leader.join(10)
    with pytest.raises(ValueError, match="bad record"):
        futures[3].result(10)
    for n in (1, 2, 4):
        futures[n].result(10)
    assert [1] in commit.batches and [2] in commit.batches and [4] in commit.batches


def test_close_waits_for_the_running_commit_then_refuses() -> None:
    commit = Recorder()
    committer = GroupCommitter(commit)
    commit.gate.clear()
    leader = threading.Thread(target=committer.add, args=(0,))
    leader.start()
    assert commit.entered.wait(10)
    closer = threading.Thread(target=committer.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still committing
    commit.gate.set()
    closer.join(10)
    leader.join(10)
    assert commit.batches == [[0]]
    with pytest.raises(CommitterClosed):
        committer.add(1)  # type: ignore[arg-type]
