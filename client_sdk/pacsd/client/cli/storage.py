"""Commands for ``pacsd.admin.v1.StorageService``: ``pacsctl storage ...``.

``studies`` shows 100 studies unless told otherwise: an archive can hold millions,
and a listing that floods the terminal (or a pipe) by default helps nobody; the JSON
says how many matched in all (``total_size``), so a script can tell it was cut.
``delete`` is idempotent like the other changes, so cleanup scripts can re-run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from pacsd.admin.v1 import storage_pb2
from pacsd.client._json import message_to_dict
from pacsd.client.cli import render
from pacsd.client.cli._base import CliContext
from pacsd.client.storage import Deletion

#: Studies ``storage studies`` shows without --limit.
DEFAULT_LIMIT = 100
LEVELS = ("study", "series", "instance")
_DAY = re.compile(r"^[0-9]{8}$")

# -- rendering ---------------------------------------------------------------------------


def size_text(size: int) -> str:
    """``1.5 MiB``: binary units, since operators compare with ``du -h``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def stats_text(s: storage_pb2.StorageStats) -> str:
    return render.table(
        [
            ["PATIENTS", str(s.patients)],
            ["STUDIES", str(s.studies)],
            ["SERIES", str(s.series)],
            ["INSTANCES", str(s.instances)],
            ["SIZE", f"{size_text(s.bytes)} ({s.bytes} bytes)"],
            ["DATA DIR", s.data_dir],
            ["INDEX", s.index_backend],
        ]
    )


def studies_text(studies: Sequence[storage_pb2.Study], total: int) -> str:
    if not studies:
        return "no studies"
    text = render.table(
        [
            [
                s.study_date or "-",
                s.patient_id or "-",
                _one_line(s.patient_name) or "-",
                ",".join(s.modalities) or "-",
                str(s.series),
                str(s.instances),
                size_text(s.bytes),
                s.study_instance_uid,
                _one_line(s.study_description) or "-",
            ]
            for s in studies
        ],
        header=[
            "DATE",
            "PATIENT ID",
            "PATIENT NAME",
            "MODALITIES",
            "SERIES",
            "INSTANCES",
            "SIZE",
            "STUDY INSTANCE UID",
            "DESCRIPTION",
        ],
    )
    if total > len(studies):
        text += f"\n{len(studies)} of {total} studies shown; --limit 0 shows all"
    return text


def deletion_text(level: str, uid: str, result: Deletion) -> str:
    if not result.changed:
        return f"{level} {uid} is not stored (no change)"
    noun = "instance" if result.instances == 1 else "instances"
    return f"{level} {uid} deleted: {result.instances} {noun}, {size_text(result.bytes)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Day(click.ParamType):
    """A YYYYMMDD date, checked here so that a typo is a usage error (exit 2) and
    nothing is sent."""

    name = "YYYYMMDD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text:  # the default: no bound
            return text
        try:
            if not _DAY.match(text):
                raise ValueError(text)
            datetime.strptime(text, "%Y%m%d")
        except ValueError:
            self.fail(f"{text!r} is not a date as YYYYMMDD", param, ctx)
        return text


def _cli(ctx: click.Context) -> CliContext:
    cli = ctx.find_object(CliContext)
    assert cli is not None  # the root group always creates it
    return cli


# -- commands ----------------------------------------------------------------------------


@click.group()
def storage() -> None:
    """Look into the archive and delete from it.

    Counts, sizes and study lists come from the index; deletes remove the files and
    then the index rows, and cannot be undone.
    """


@storage.command("stats")
@click.pass_context
def storage_stats(ctx: click.Context) -> None:
    """Patients, studies, series, instances and bytes stored."""
    cli = _cli(ctx)
    stats = cli.client().storage.stats()
    cli.emit({"stats": message_to_dict(stats)}, stats_text(stats))


@storage.command("studies")
@click.option("--patient-id", default="", metavar="ID", help="Only this patient's studies.")
@click.option("--from", "date_from", type=Day(), default="", help="Study date on or after.")
@click.option("--to", "date_to", type=Day(), default="", help="Study date on or before.")
@click.option("--modality", default="", metavar="CODE", help="With a series of it (CT, MR...).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help="Show at most N studies; 0 shows all.",
)
@click.pass_context
def storage_studies(
    ctx: click.Context,
    patient_id: str,
    date_from: str,
    date_to: str,
    modality: str,
    limit: int,
) -> None:
    """Stored studies, newest study date first."""
    cli = _cli(ctx)
    studies = cli.client().storage.studies(
        patient_id=patient_id,
        date_from=date_from,
        date_to=date_to,
        modality=modality,
        limit=limit or None,
    )
    cli.emit(
        {"studies": [message_to_dict(s) for s in studies], "total_size": studies.total_size},
        studies_text(studies, studies.total_size),
    )


@storage.command("delete")
@click.argument("level", type=click.Choice(LEVELS))
@click.argument("uid")
@click.pass_context
def storage_delete(ctx: click.Context, level: str, uid: str) -> None:
    """Delete a study, series or instance by UID, files and index rows.

    Deleting what is not stored changes nothing (exit 0). There is no undo.
    """
    cli = _cli(ctx)
    api = cli.client().storage
    delete = {
        "study": api.delete_study,
        "series": api.delete_series,
        "instance": api.delete_instance,
    }[level]
    result = delete(uid)
    cli.emit(
        {
            "changed": result.changed,
            "instances_deleted": result.instances,
            "bytes_deleted": result.bytes,
        },
        deletion_text(level, uid, result),
    )


COMMANDS: tuple[click.Command, ...] = (storage,)
