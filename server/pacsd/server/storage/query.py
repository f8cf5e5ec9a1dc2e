"""C-FIND matching (PS3.4 C.2.2.2) over the index, and the instances a C-MOVE/C-GET selects.

The identifier is compiled into one SQL ``WHERE`` clause with bound parameters only:
values never become SQL text, and column names come from the fixed tables below, never
from the request. The same SQL runs on SQLite and PostgreSQL; where the engines differ
(case sensitivity of ``LIKE``), each gets the construct that gives both the *same*
semantics:

- wildcards ``*``/``?`` on SQLite use ``GLOB`` (always case-sensitive; a literal ``[`` is
  escaped as ``[[]``), on PostgreSQL ``LIKE ... ESCAPE '!'`` (case-sensitive; ``%``, ``_``
  and ``!`` are escaped). SQLite's ``LIKE`` would fold ASCII case, so it is never used;
- PatientName and ReferringPhysicianName match case-insensitively, on their ``*_lc``
  columns (lower-cased by Python at indexing time), with the query lower-cased by Python
  too, so the folding is the same for non-ASCII letters on both engines.

What is matched where:

- keys with a column (``COLUMN_KEYS``): in SQL;
- ModalitiesInStudy: in SQL (``EXISTS`` over the study's series, any value matches);
- other indexed keys (kept in the level's ``attrs`` DICOM JSON, see ``attributes.py``):
  in Python, on the rows the SQL filter let through, with the same semantics;
- computed return keys (NumberOf...Related..., InstanceAvailability) are never matched;
  a value given for one is ignored (PS3.4 lists them as return keys only);
- keys of a level *below* the query level, sequences and keys the archive does not
  index are not matched (universal matching, as PS3.4 C.2.2.1 allows for unsupported
  optional keys) and come back empty.

Matching kinds: single value (exact), wildcard (``*``, ``?``) for text VRs, range
(``A-B``, ``-B``, ``A-``) for DA and TM (TM ranges compare HHMMSS; a shorter upper bound
covers its whole hour or minute; empty stored values never match a range), UID lists
(backslash-separated) for UI, single value for the rest (IS values such as SeriesNumber
compare as integers, so "01" matches "1"). A multi-valued query value matches when any of
its values matches (e.g. ``Modality=CT\\MR``). A value of ``*`` alone is universal
matching. Combined StudyDate+StudyTime (DT-style) range matching is not implemented:
each is matched on its own.

Responses hold exactly the requested keys, plus QueryRetrieveLevel and the unique keys
of the model's levels down to the query level. Values come from the columns, from
``attrs``, or are computed (NumberOf...Related..., ModalitiesInStudy, and
InstanceAvailability = ONLINE). Character sets: the index stores decoded text, and
pydicom decodes the query with its own Specific Character Set, so a query in ISO_IR 100
matches a name stored from ISO_IR 192 and vice versa. A response carries
``SpecificCharacterSet = ISO_IR 192`` when any text it returns is non-ASCII, and none
otherwise (the default repertoire).

Hierarchy: a C-FIND must name its level (valid for the model) and give the unique key of
every level above with one single value (baseline hierarchical search, PS3.4 C.4.1.2.2);
otherwise ``QueryError`` answers 0xA900. Values that cannot be parsed (a malformed date
range, a UID with wildcards) answer 0xC000. C-MOVE/C-GET need the unique key of their
level (single value or UID list); upper-level unique keys restrict the selection when
present but are not required, since many retrieve SCUs leave them out.

Rows are read in keyset-paginated batches (``id > last ORDER BY id LIMIT n``), each in
its own short read, so a slow peer never holds a database connection between responses
and ``cancelled()`` is checked between rows. Order is arrival order (the level table's
id): deterministic, and identical on both engines, unlike text collation.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pacsd.addin.status import DimseFailure, Status
from pacsd.addin.storage import QueryModel
from pacsd.server.storage import attributes
from pacsd.server.storage.index.repository import Index, StoredInstance
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

log = logging.getLogger("pacsd.core.query")

__all__ = [
    "COLUMN_KEYS",
    "LEVELS",
    "QueryError",
    "find",
    "glob_pattern",
    "like_pattern",
    "match_instances",
    "wildcard_regex",
]

LEVELS: tuple[str, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_RANK = {level: n for n, level in enumerate(LEVELS)}
MODEL_LEVELS: dict[QueryModel, tuple[str, ...]] = {
    QueryModel.PATIENT_ROOT: LEVELS,
    QueryModel.STUDY_ROOT: LEVELS[1:],
}
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_ALIAS = {"PATIENT": "p", "STUDY": "st", "SERIES": "se", "IMAGE": "i"}
_FROM = {
    "PATIENT": "patients p",
    "STUDY": "studies st JOIN patients p ON p.id = st.patient_fk",
    "SERIES": (
        "series se JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk"
    ),
    "IMAGE": (
        "instances i JOIN series se ON se.id = i.series_fk "
        "JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk"
    ),
}
#: Rows fetched per read. Small enough that a cancelled query stops quickly, large
#: enough that the per-query overhead does not dominate.
BATCH = 200

_QRL = Tag("QueryRetrieveLevel")
_CHARSET = Tag("SpecificCharacterSet")
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


class QueryError(DimseFailure):
    """The identifier cannot be answered; ``status`` is the C-FIND/MOVE/GET failure.

    A ``DimseFailure``, so an add-in that lets it propagate answers exactly this status.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.message = message

    def __str__(self) -> str:
        return f"0x{self.status:04X}: {self.message}"


def _invalid(message: str) -> QueryError:
    return QueryError(Status.IDENTIFIER_DOES_NOT_MATCH, message)


def _unprocessable(message: str) -> QueryError:
    return QueryError(Status.UNABLE_TO_PROCESS, message)


class Kind(Enum):
    """How a key's value is matched."""

    #: UID: single value or backslash-separated list; no wildcards.
    UID = "uid"
    #: DA: single value or range.
    DATE = "date"
    #: TM: single value or range.
    TIME = "time"
    #: Text: single value (case-sensitive) or wildcards.
    TEXT = "text"
    #: Person name: like TEXT, but case-insensitive.
    PERSON = "person"
    #: Numbers, AS, DT: single value only.
    EXACT = "exact"
    #: Not matchable (sequences): returned empty.
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Key:
    keyword: str
    level: str
    kind: Kind
    #: SQL expression of the column holding it; None when it lives in ``attrs``.
    column: str | None = None
    #: The column matched against (the ``*_lc`` copy for person names).
    match_column: str | None = None


#: Keys with a column of their own (schema.py); matched in SQL.
COLUMN_KEYS: dict[str, Key] = {
    k.keyword: k
    for k in (
        Key("PatientID", "PATIENT", Kind.TEXT, "p.patient_id"),
        Key("PatientName", "PATIENT", Kind.PERSON, "p.patient_name", "p.patient_name_lc"),
        Key("PatientBirthDate", "PATIENT", Kind.DATE, "p.birth_date"),
        Key("PatientSex", "PATIENT", Kind.TEXT, "p.sex"),
        Key("StudyInstanceUID", "STUDY", Kind.UID, "st.study_uid"),
        Key("StudyDate", "STUDY", Kind.DATE, "st.study_date"),
        Key("StudyTime", "STUDY", Kind.TIME, "st.study_time"),
        Key("AccessionNumber", "STUDY", Kind.TEXT, "st.accession_number"),
        Key("StudyID", "STUDY", Kind.TEXT, "st.study_id"),
        Key("StudyDescription", "STUDY", Kind.TEXT, "st.study_description"),
        Key(
            "ReferringPhysicianName",
            "STUDY",
            Kind.PERSON,
            "st.referring_physician",
            "st.referring_physician_lc",
        ),
        Key("SeriesInstanceUID", "SERIES", Kind.UID, "se.series_uid"),
        Key("Modality", "SERIES", Kind.TEXT, "se.modality"),
        Key("SeriesNumber", "SERIES", Kind.EXACT, "se.series_number"),
        Key("SeriesDescription", "SERIES", Kind.TEXT, "se.series_description"),
        Key("SeriesDate", "SERIES", Kind.DATE, "se.series_date"),
        Key("BodyPartExamined", "SERIES", Kind.TEXT, "se.body_part"),
        Key("SOPInstanceUID", "IMAGE", Kind.UID, "i.sop_instance_uid"),
        Key("SOPClassUID", "IMAGE", Kind.UID, "i.sop_class_uid"),
        Key("InstanceNumber", "IMAGE", Kind.EXACT, "i.instance_number"),
    )
}


def _kind_for_vr(vr: str) -> Kind:
    if vr == "DA":
        return Kind.DATE
    if vr == "TM":
        return Kind.TIME
    if vr == "UI":
        return Kind.UID
    if vr == "PN":
        return Kind.PERSON
    if vr == "SQ":
        return Kind.NONE
    if vr in _TEXT_VRS:
        return Kind.TEXT
    return Kind.EXACT


def _attrs_keys() -> dict[str, Key]:
    """Indexed keys without a column: they come from the level's ``attrs`` JSON."""
    keys: dict[str, Key] = {}
    for level, keywords in (
        ("PATIENT", attributes.PATIENT_KEYS),
        ("STUDY", attributes.STUDY_KEYS),
        ("SERIES", attributes.SERIES_KEYS),
        ("IMAGE", attributes.INSTANCE_KEYS),
    ):
        for keyword in keywords:
            if keyword not in COLUMN_KEYS:
                keys[keyword] = Key(keyword, level, _kind_for_vr(dictionary_VR(keyword)))
    return keys


ATTRS_KEYS: dict[str, Key] = _attrs_keys()

#: Return-only counts: keyword -> (level, correlated subquery).
COUNT_KEYS: dict[str, tuple[str, str]] = {
    "NumberOfPatientRelatedStudies": (
        "PATIENT",
        "(SELECT COUNT(*) FROM studies x WHERE x.patient_fk = p.id)",
    ),
    "NumberOfPatientRelatedSeries": (
        "PATIENT",
        "(SELECT COUNT(*) FROM series x JOIN studies y ON y.id = x.study_fk "
        "WHERE y.patient_fk = p.id)",
    ),
    "NumberOfPatientRelatedInstances": (
        "PATIENT",
        "(SELECT COUNT(*) FROM instances x JOIN series y ON y.id = x.series_fk "
        "JOIN studies z ON z.id = y.study_fk WHERE z.patient_fk = p.id)",
    ),
    "NumberOfStudyRelatedSeries": (
        "STUDY",
        "(SELECT COUNT(*) FROM series x WHERE x.study_fk = st.id)",
    ),
    "NumberOfStudyRelatedInstances": (
        "STUDY",
        "(SELECT COUNT(*) FROM instances x JOIN series y ON y.id = x.series_fk "
        "WHERE y.study_fk = st.id)",
    ),
    "NumberOfSeriesRelatedInstances": (
        "SERIES",
        "(SELECT COUNT(*) FROM instances x WHERE x.series_fk = se.id)",
    ),
}
_MODALITIES = "ModalitiesInStudy"
_AVAILABILITY = "InstanceAvailability"

#: Columns read per table alias (fixed; never from the request).
_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "p": ("id", "patient_id", "patient_name", "birth_date", "sex", "attrs"),
    "st": (
        "id",
        "study_uid",
        "study_date",
        "study_time",
        "accession_number",
        "study_id",
        "study_description",
        "referring_physician",
        "attrs",
    ),
    "se": (
        "id",
        "series_uid",
        "modality",
        "series_number",
        "series_description",
        "series_date",
        "body_part",
        "attrs",
    ),
    "i": ("id", "sop_instance_uid", "sop_class_uid", "instance_number", "attrs"),
}

# -- patterns -----------------------------------------------------------------------------

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def has_wildcards(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """DICOM wildcards -> a PostgreSQL ``LIKE`` pattern for ``ESCAPE '!'``.

    ``%``, ``_`` and ``!`` in the value are literal characters in DICOM, so they are
    escaped; ``*`` and ``?`` (which DICOM cannot escape) become ``%`` and ``_``.
    """
    out = []
    for ch in value:
        if ch in "!%_":
            out.append("!" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def glob_pattern(value: str) -> str:
    """DICOM wildcards -> an SQLite ``GLOB`` pattern (case-sensitive, unlike its LIKE).

    GLOB's own wildcards are ``*``, ``?`` (the same as DICOM's) and ``[...]``; a literal
    ``[`` is written as the one-character class ``[[]``. ``]`` outside a class is literal.
    """
    return value.replace("[", "[[]")


def wildcard_regex(value: str, ignore_case: bool = False) -> re.Pattern[str]:
    """The same wildcard semantics in Python, for keys matched outside SQL."""
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


# -- one key's condition ------------------------------------------------------------------


@dataclass(slots=True)
class Condition:
    """A compiled key: SQL with its parameters, or a Python predicate over stored values."""

    sql: str = ""
    params: tuple[Any, ...] = ()
    #: For keys matched in Python: (table alias, tag, predicate over the stored values).
    python: tuple[str, BaseTag, Callable[[list[str]], bool]] | None = None


def _query_values(elem: DataElement) -> list[str]:
    """The element's value(s) as stripped strings; [] for an empty (universal) value."""
    value = elem.value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    stripped = (str(v).strip() for v in items if v is not None)
    return [v for v in stripped if v]


def _parse_range(value: str, kind: Kind) -> tuple[str, str] | None:
    """``A-B``, ``-B``, ``A-`` -> (low, high) with "" for an open end; None if single."""
    if "-" not in value:
        return None
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    pattern = _DATE if kind is Kind.DATE else _TIME
    if (not low and not high) or "-" in high:
        raise _unprocessable(f"malformed range {value!r}")
    for part in (low, high):
        if part and not pattern.match(part):
            raise _unprocessable(f"malformed {kind.value} {part!r} in range {value!r}")
    return low, high


def _time_bounds(low: str, high: str) -> tuple[str, str]:
    """TM range bounds on HHMMSS: a low bound pads with zeros, a high one with its end."""
    lo = (low[:6] + "000000")[:6] if low else ""
    if high:
        digits = high[:6]
        hi = digits + "5959"[len(digits) - 2 :] if len(digits) < 6 else digits
    else:
        hi = ""
    return lo, hi


def _time_key(stored: str) -> str:
    return (stored + "000000")[:6]


def _normalise_exact(value: str) -> str:
    """IS-like values compare as numbers written canonically ("01" -> "1")."""
    try:
        return str(int(value))
    except ValueError:
        return value


def _single_sql(key: Key, value: str, column: str, dialect: str) -> tuple[str, list[Any]]:
    """SQL for one value of ``key`` against ``column`` (already lower-cased if PERSON)."""
    kind = key.kind
    if kind is Kind.PERSON:
        value = value.lower()
    if kind in (Kind.TEXT, Kind.PERSON) and has_wildcards(value):
        if dialect == "sqlite":
            return f"{column} GLOB ?", [glob_pattern(value)]
        return f"{column} LIKE ? ESCAPE '!'", [like_pattern(value)]
    if kind in (Kind.DATE, Kind.TIME):
        bounds = _parse_range(value, kind)
        if bounds is not None:
            low, high = bounds
            expr = column
            if kind is Kind.TIME:
                low, high = _time_bounds(low, high)
                expr = f"substr({column} || '000000', 1, 6)"
            parts, params = [f"{column} <> ''"], []
            if low:
                parts.append(f"{expr} >= ?")
                params.append(low)
            if high:
                parts.append(f"{expr} <= ?")
                params.append(high)
            return "(" + " AND ".join(parts) + ")", params
        pattern = _DATE if kind is Kind.DATE else _TIME
        if not pattern.match(value):
            raise _unprocessable(f"malformed {key.keyword} {value!r}")
    if kind is Kind.EXACT:
        canonical = _normalise_exact(value)
        if canonical.isdigit():
            # IS columns keep the text as sent ("01"): compare without leading zeros.
            return f"ltrim({column}, '0') = ?", [canonical.lstrip("0")]
    return f"{column} = ?", [value]


def _single_python(key: Key, value: str) -> Callable[[str], bool]:
    kind = key.kind
    if kind in (Kind.TEXT, Kind.PERSON) and has_wildcards(value):
        regex = wildcard_regex(value.lower() if kind is Kind.PERSON else value)
        if kind is Kind.PERSON:
            return lambda s: regex.fullmatch(s.lower()) is not None
        return lambda s: regex.fullmatch(s) is not None
    if kind is Kind.PERSON:
        lowered = value.lower()
        return lambda s: s.lower() == lowered
    if kind in (Kind.DATE, Kind.TIME):
        bounds = _parse_range(value, kind)
        if bounds is not None:
            low, high = bounds
            norm: Callable[[str], str] = lambda s: s  # noqa: E731
            if kind is Kind.TIME:
                low, high = _time_bounds(low, high)
                norm = _time_key
            return lambda s: (
                bool(s) and (not low or norm(s) >= low) and (not high or norm(s) <= high)
            )
        pattern = _DATE if kind is Kind.DATE else _TIME
        if not pattern.match(value):
            raise _unprocessable(f"malformed {key.keyword} {value!r}")
    if kind is Kind.EXACT:
        wanted = _normalise_exact(value)
        return lambda s: _normalise_exact(s) == wanted
    return lambda s: s == value


def _check_uids(key: Key, values: list[str]) -> None:
    for value in values:
        if has_wildcards(value) or not _UID.match(value) or len(value) > 64:
            raise _unprocessable(f"{key.keyword}: {value!r} is not a UID (no wildcards in UIDs)")


def compile_key(key: Key, values: list[str], dialect: str) -> Condition | None:
    """The condition for one key with a non-empty value; None when it matches everything."""
    if key.kind is Kind.NONE or not values or "*" in values:
        return None
    if key.kind is Kind.UID:
        _check_uids(key, values)
    if key.column is None:
        checks = [_single_python(key, v) for v in values]
        tag = Tag(key.keyword)

        def predicate(stored: list[str]) -> bool:
            return any(check(s) for s in stored for check in checks)

        return Condition(python=(_ALIAS[key.level], tag, predicate))
    column = key.match_column or key.column
    if key.kind is Kind.UID:
        marks = ", ".join("?" for _ in values)
        return Condition(f"{column} IN ({marks})", tuple(values))
    parts: list[str] = []
    params: list[Any] = []
    for value in values:
        sql, p = _single_sql(key, value, column, dialect)
        parts.append(sql)
        params.extend(p)
    sql = parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
    return Condition(sql, tuple(params))


def _modalities_condition(values: list[str], dialect: str) -> Condition | None:
    """ModalitiesInStudy: a study matches when one of its series matches any value."""
    if not values or "*" in values:
        return None
    key = Key("Modality", "SERIES", Kind.TEXT, "m.modality")
    parts: list[str] = []
    params: list[Any] = []
    for value in values:
        sql, p = _single_sql(key, value, "m.modality", dialect)
        parts.append(sql)
        params.extend(p)
    return Condition(
        "EXISTS (SELECT 1 FROM series m WHERE m.study_fk = st.id AND (" + " OR ".join(parts) + "))",
        tuple(params),
    )


# -- the identifier -----------------------------------------------------------------------


def _level(model: QueryModel, identifier: Dataset | None) -> str:
    if identifier is None:
        raise _invalid("no identifier")
    if _QRL not in identifier:
        raise _invalid("the identifier has no QueryRetrieveLevel")
    level = str(identifier[_QRL].value or "").strip().upper()
    if level not in MODEL_LEVELS[model]:
        allowed = ", ".join(MODEL_LEVELS[model])
        raise _invalid(f"QueryRetrieveLevel {level!r} is not one of {allowed} for this model")
    return level


def _keyword(elem: DataElement) -> str:
    try:
        return keyword_for_tag(elem.tag) or ""
    except Exception:
        return ""


def _single_unique(identifier: Dataset, keyword: str, level: str) -> str:
    """An upper level's unique key in a hierarchical query: exactly one plain value."""
    if keyword not in identifier:
        raise _invalid(f"a {level} query must give the {keyword} of each level above")
    values = _query_values(identifier[keyword])
    if len(values) != 1 or not values[0] or has_wildcards(values[0]):
        raise _invalid(f"{keyword} must hold one single value in a {level} query")
    return values[0]


@dataclass(slots=True)
class _Plan:
    level: str
    #: The model's levels down to and including ``level``: their unique keys are returned.
    path: tuple[str, ...]
    conditions: list[Condition]
    #: Requested elements in identifier order (QueryRetrieveLevel, charset excluded).
    requested: list[DataElement]
    counts: list[str]
    modalities: bool
    #: How each match is answered, worked out by the first row (it needs its columns).
    answers: _Answers | None = None


def _plan(model: QueryModel, identifier: Dataset | None, dialect: str) -> _Plan:
    level = _level(model, identifier)
    assert identifier is not None
    rank = _RANK[level]
    levels = MODEL_LEVELS[model]
    conditions: list[Condition] = []
    for upper in levels[: levels.index(level)]:
        keyword = UNIQUE_KEY[upper]
        value = _single_unique(identifier, keyword, level)
        unique = COLUMN_KEYS[keyword]
        if unique.kind is Kind.UID:
            _check_uids(unique, [value])
        conditions.append(Condition(f"{unique.column} = ?", (value,)))
    upper_keys = {UNIQUE_KEY[u] for u in levels[: levels.index(level)]}

    requested: list[DataElement] = []
    counts: list[str] = []
    modalities = False
    for elem in identifier:
        if elem.tag in (_QRL, _CHARSET) or elem.tag.group in (0x0000, 0x0002):
            continue
        requested.append(elem)
        keyword = _keyword(elem)
        if keyword in upper_keys:
            continue  # already compiled as the hierarchy's single value
        if keyword in COUNT_KEYS:
            if _RANK[COUNT_KEYS[keyword][0]] <= rank:
                counts.append(keyword)
            continue
        if keyword == _MODALITIES:
            if rank >= _RANK["STUDY"]:
                modalities = True
                cond = _modalities_condition(_query_values(elem), dialect)
                if cond is not None:
                    conditions.append(cond)
            continue
        key = COLUMN_KEYS.get(keyword) or ATTRS_KEYS.get(keyword)
        if key is None or _RANK[key.level] > rank or elem.VR == "SQ":
            continue  # unknown, sequence or lower level: returned empty, not matched
        cond = compile_key(key, _query_values(elem), dialect)
        if cond is not None:
            conditions.append(cond)
    path = levels[: levels.index(level) + 1]
    return _Plan(level, path, conditions, requested, counts, modalities)


# -- running it ---------------------------------------------------------------------------


def _select(plan: _Plan) -> tuple[list[str], dict[str, int]]:
    aliases = [_ALIAS[lv] for lv in LEVELS[: _RANK[plan.level] + 1]]
    exprs: list[str] = []
    for alias in aliases:
        exprs += [f"{alias}.{col}" for col in _TABLE_COLUMNS[alias]]
    exprs += [COUNT_KEYS[k][1] for k in plan.counts]
    positions = {e: n for n, e in enumerate(exprs)}
    for n, keyword in enumerate(plan.counts):
        positions[keyword] = len(exprs) - len(plan.counts) + n
    return exprs, positions


class _Row:
    """One result row, with each level's ``attrs`` decoded at most once."""

    __slots__ = ("_attrs", "modalities", "pos", "values")

    def __init__(self, values: Sequence[Any], pos: dict[str, int]) -> None:
        self.values = values
        self.pos = pos
        self._attrs: dict[str, Dataset] = {}
        self.modalities: list[str] = []

    def get(self, expr: str) -> Any:
        return self.values[self.pos[expr]]

    def attrs(self, alias: str) -> Dataset:
        ds = self._attrs.get(alias)
        if ds is None:
            raw = self.get(f"{alias}.attrs") or "{}"
            try:
                ds = Dataset.from_json(json.loads(raw) if isinstance(raw, str) else raw)
            except Exception as exc:  # a damaged row must not end the whole query
                log.warning(
                    "unreadable attrs in %s row %s: %s", alias, self.get(f"{alias}.id"), exc
                )
                ds = Dataset()
            self._attrs[alias] = ds
        return ds


def _stored_values(row: _Row, alias: str, tag: BaseTag) -> list[str]:
    ds = row.attrs(alias)
    if tag not in ds:
        return []
    value = ds[tag].value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def _element(tag: BaseTag, vr: str, value: Any) -> DataElement:
    try:
        return DataElement(tag, vr, value)
    except Exception:  # a stored value the VR refuses: say nothing rather than fail
        return DataElement(tag, vr, None)


def _response(plan: _Plan, row: _Row) -> Dataset:
    """The response identifier for one row (see ``_Answers``)."""
    answers = plan.answers
    if answers is None:
        answers = plan.answers = _Answers(plan, row.pos)
    fast = answers.build(row)
    return fast if fast is not None else _dataset_response(plan, row)


def _dataset_response(plan: _Plan, row: _Row) -> Dataset:
    """The response built element by element through pydicom: the reference the fast
    path must match byte for byte, and what answers rows it does not handle."""
    rank = _RANK[plan.level]
    rsp = Dataset()
    rsp.QueryRetrieveLevel = plan.level
    for elem in plan.requested:
        rsp.add(_answer(elem, row, rank))
    for lv in plan.path:  # Study Root has no patient level, so no PatientID unasked
        keyword = UNIQUE_KEY[lv]
        if keyword not in rsp:
            key = COLUMN_KEYS[keyword]
            assert key.column is not None
            rsp.add(_element(Tag(keyword), dictionary_VR(keyword), str(row.get(key.column))))
    if not _is_ascii(rsp):
        rsp.SpecificCharacterSet = "ISO_IR 192"
    return rsp


#: VRs whose value ``_raw_text`` writes (each an ASCII string; PS3.5 6.2), and the
#: byte that pads an odd length.
_RAW_VRS: dict[str, bytes] = {
    vr: b"\0" if vr == "UI" else b" "
    for vr in ("AE", "CS", "DA", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI")
}
#: VRs an empty element may be written as without pydicom (no sequences, no binary VRs
#: whose header pydicom may rewrite).
_EMPTY_VRS = frozenset(_RAW_VRS) | {
    "AS",
    "DS",
    "UC",
    "UR",
    "UT",
    "US",
    "SS",
    "UL",
    "SL",
    "FL",
    "FD",
}


_new_tuple = tuple.__new__


def _raw(tag: BaseTag, vr: str, data: bytes) -> RawDataElement:
    """An element holding its encoded value: pydicom decodes it when (if) it is read,
    and ``dimse_encode`` writes the bytes as they are."""
    # tuple.__new__: the named tuple's own __new__ is a third of the cost.
    return _new_tuple(RawDataElement, (tag, vr, len(data), data, 0, True, True, True, False))


def _raw_text(tag: BaseTag, vr: str, text: str) -> RawDataElement | None:
    """``text`` as the bytes pydicom writes for ``DataElement(tag, vr, text)``, or None
    where its conversions could change them (non-ASCII or control characters, several
    values, surrounding spaces, name groups, IS not in canonical form)."""
    if not text:
        return _raw(tag, vr, b"")
    if not (text.isascii() and text.isprintable()) or "\\" in text or text != text.strip():
        return None
    if (vr == "PN" and "=" in text) or (
        vr == "IS" and not (text.isdigit() and str(int(text)) == text)
    ):
        return None
    data = text.encode("ascii")
    return _raw(tag, vr, data + _RAW_VRS[vr] if len(data) % 2 else data)


class _Answers:
    """How to answer each requested key of a plan, worked out once per query.

    Building every match as pydicom ``DataElement``s (each value converted and
    validated) cost more than everything else a C-FIND does per match. Column values,
    counts, ModalitiesInStudy, InstanceAvailability and empty keys become raw elements
    (the encoded value); pydicom still decodes them on access, so the result is a
    complete ``Dataset`` for an add-in, and ``dimse_encode`` writes them as they are.
    Keys from ``attrs`` and sequences keep the ``DataElement`` path; a row with a value
    ``_raw_text`` declines is built by ``_dataset_response``. The bytes sent are the
    same either way (``tests/unit/test_query_answers.py``).
    """

    __slots__ = ("level", "plan", "rank", "steps")

    def __init__(self, plan: _Plan, pos: dict[str, int]) -> None:
        self.plan = plan
        self.rank = rank = _RANK[plan.level]
        self.level = _raw(_QRL, "CS", _pad(plan.level.encode("ascii"), b" "))
        #: (tag, vr, what, arg): what is "column" (arg: position), "count" (position),
        #: "modalities", "const" (arg: the element) or "other" (arg: requested element).
        self.steps: list[tuple[BaseTag, str, str, Any]] = []
        seen: set[BaseTag] = set()
        for elem in plan.requested:
            tag, vr = elem.tag, elem.VR
            keyword = _keyword(elem)
            seen.add(tag)
            key = COLUMN_KEYS.get(keyword)
            if vr == "SQ":
                self._other(elem)
            elif keyword in COUNT_KEYS and keyword in pos:
                self.steps.append((tag, "IS", "count", pos[keyword]))
            elif keyword == _MODALITIES and rank >= _RANK["STUDY"]:
                self.steps.append((tag, "CS", "modalities", None))
            elif keyword == _AVAILABILITY:
                self.steps.append((tag, "CS", "const", _raw(tag, "CS", b"ONLINE")))
            elif key is not None and _RANK[key.level] <= rank:
                assert key.column is not None
                column_vr = dictionary_VR(tag)
                if column_vr not in _RAW_VRS:
                    self._other(elem)
                else:
                    self.steps.append((tag, column_vr, "column", pos[key.column]))
            elif keyword in ATTRS_KEYS and _RANK[ATTRS_KEYS[keyword].level] <= rank:
                self._other(elem)
            elif vr in _EMPTY_VRS:
                self.steps.append((tag, vr, "const", _raw(tag, vr, b"")))
            else:
                self._other(elem)
        for lv in plan.path:
            keyword = UNIQUE_KEY[lv]
            tag = Tag(keyword)
            if tag not in seen:
                column = COLUMN_KEYS[keyword].column
                assert column is not None
                self.steps.append((tag, dictionary_VR(keyword), "unique", pos[column]))

    def _other(self, elem: DataElement) -> None:
        self.steps.append((elem.tag, elem.VR, "other", elem))

    def build(self, row: _Row) -> Dataset | None:
        """The row's response, or None when ``_dataset_response`` must build it."""
        values = row.values
        elements: dict[BaseTag, Any] = {_QRL: self.level}
        others: list[DataElement] = []
        for tag, vr, what, arg in self.steps:
            if what == "column":
                raw = _raw_text(tag, vr, str(values[arg] or ""))
            elif what == "unique":
                raw = _raw_text(tag, vr, str(values[arg]))
            elif what == "const":
                raw = arg
            elif what == "count":
                raw = _raw_text(tag, vr, str(int(values[arg])))
            elif what == "modalities":
                raw = _raw_modalities(tag, row.modalities)
            else:
                elements[tag] = answer = _answer(arg, row, self.rank)
                others.append(answer)
                continue
            if raw is None:
                return None
            elements[tag] = raw
        if others and not _is_ascii(others):
            elements[_CHARSET] = DataElement(_CHARSET, "CS", "ISO_IR 192")
        return _new_dataset(elements)


def _dataset_maker() -> Callable[[dict[BaseTag, Any]], Dataset]:
    """``Dataset(elements)`` without running ``Dataset.__init__`` (a dozen attribute
    assignments through pydicom's ``__setattr__``, more than the rest of a match):
    a fresh instance gets the state a new ``Dataset`` has, with its own containers.
    Used only when that state is exactly what ``__init__`` makes (checked once), so
    another pydicom version falls back to the constructor."""
    try:
        proto = vars(Dataset())
        containers = [k for k, v in proto.items() if isinstance(v, dict | list) and k != "_dict"]

        def make(elements: dict[BaseTag, Any]) -> Dataset:
            ds = Dataset.__new__(Dataset)
            state = ds.__dict__
            state.update(proto)
            for name in containers:
                state[name] = proto[name].copy()
            state["_dict"] = elements
            return ds

        probe = make({})
        fresh = Dataset()
        same = vars(probe) == vars(fresh) and all(
            vars(probe)[k] is not proto[k] for k in containers
        )
    except Exception:  # pragma: no cover - a pydicom whose Dataset has no __dict__
        same = False
    return make if same else Dataset


_new_dataset = _dataset_maker()


def _pad(data: bytes, pad: bytes) -> bytes:
    return data + pad if len(data) % 2 else data


def _raw_modalities(tag: BaseTag, modalities: list[str]) -> RawDataElement | None:
    for modality in modalities:
        if _raw_text(tag, "CS", modality) is None:
            return None
    return _raw(tag, "CS", _pad("\\".join(modalities).encode("ascii"), b" "))


def _answer(elem: DataElement, row: _Row, rank: int) -> DataElement:
    """The response element for one requested key: its value for this row, or empty."""
    tag, vr = elem.tag, elem.VR
    keyword = _keyword(elem)
    if vr == "SQ":
        return DataElement(tag, "SQ", [])
    if keyword in COUNT_KEYS and keyword in row.pos:
        return _element(tag, "IS", int(row.get(keyword)))
    if keyword == _MODALITIES and rank >= _RANK["STUDY"]:
        return _element(tag, "CS", list(row.modalities) or None)
    if keyword == _AVAILABILITY:
        return _element(tag, "CS", "ONLINE")
    key = COLUMN_KEYS.get(keyword)
    if key is not None and _RANK[key.level] <= rank:
        assert key.column is not None
        text = str(row.get(key.column) or "")
        return _element(tag, dictionary_VR(tag), text or None)
    key = ATTRS_KEYS.get(keyword)
    if key is not None and _RANK[key.level] <= rank:
        stored = row.attrs(_ALIAS[key.level])
        if tag in stored:
            found = stored[tag]
            return _element(tag, found.VR, found.value)
    return DataElement(tag, vr, None)


def _is_ascii(elements: Iterable[DataElement]) -> bool:
    for elem in elements:
        if elem.VR not in _TEXT_VRS or elem.value is None:
            continue
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        if not all(str(v).isascii() for v in values):
            return False
    return True


def find(
    index: Index,
    model: QueryModel,
    identifier: Dataset,
    *,
    limit: int = 0,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[Dataset]:
    """Response identifiers for a C-FIND, in arrival order; at most ``limit`` (0: all).

    The identifier is validated and compiled now, so ``QueryError`` is raised by this
    call rather than by the first ``next()``; rows are then read lazily in batches.

    Each match is a complete pydicom ``Dataset`` that an add-in may read and change.
    Most of its elements are held encoded (``RawDataElement``, as ``dcmread`` leaves
    them) and decoded by pydicom when first read; unread, they are sent as they are.
    """
    plan = _plan(model, identifier, index.dialect)
    return _run(index, plan, limit, cancelled)


def _run(index: Index, plan: _Plan, limit: int, cancelled: Callable[[], bool]) -> Iterator[Dataset]:
    alias = _ALIAS[plan.level]
    exprs, pos = _select(plan)
    sql_conditions = [c for c in plan.conditions if c.python is None]
    python_conditions = [c.python for c in plan.conditions if c.python is not None]
    where = " AND ".join([c.sql for c in sql_conditions] or ["1 = 1"])
    params: list[Any] = [p for c in sql_conditions for p in c.params]
    sql = (
        f"SELECT {', '.join(exprs)} FROM {_FROM[plan.level]} "
        f"WHERE {where} AND {alias}.id > ? ORDER BY {alias}.id LIMIT ?"
    )
    last = -1
    sent = 0
    while True:
        if cancelled():
            return
        with index.db.read() as conn:
            rows = conn.all(sql, [*params, last, BATCH])
            modalities = _modalities(conn, rows, pos) if plan.modalities else {}
        for values in rows:
            if cancelled():
                return
            row = _Row(values, pos)
            if not all(check(_stored_values(row, a, t)) for a, t, check in python_conditions):
                continue
            if plan.modalities:
                row.modalities = modalities.get(int(row.get("st.id")), [])
            yield _response(plan, row)
            sent += 1
            if limit and sent >= limit:
                return
        if len(rows) < BATCH:
            return
        last = int(rows[-1][pos[f"{alias}.id"]])


def _modalities(conn: Any, rows: list[Any], pos: dict[str, int]) -> dict[int, list[str]]:
    """ModalitiesInStudy for a batch of rows, in one query."""
    ids = sorted({int(r[pos["st.id"]]) for r in rows})
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    found: dict[int, list[str]] = {}
    for study_fk, modality in conn.all(
        f"SELECT DISTINCT study_fk, modality FROM series WHERE study_fk IN ({marks})", ids
    ):
        if modality:
            found.setdefault(int(study_fk), []).append(str(modality))
    return {k: sorted(v) for k, v in found.items()}


# -- retrieve -----------------------------------------------------------------------------


def match_instances(index: Index, model: QueryModel, identifier: Dataset) -> list[StoredInstance]:
    """The instances a C-MOVE/C-GET identifier selects, grouped by study and series.

    The level's unique key is required (one value, or a UID list); the unique keys of
    the levels above restrict the selection when given. Other keys are ignored, as
    PS3.4 C.4.2.2.1 allows only unique keys in a retrieve identifier.
    """
    level = _level(model, identifier)
    levels = MODEL_LEVELS[model]
    conditions: list[Condition] = []
    for lv in levels[: levels.index(level) + 1]:
        keyword = UNIQUE_KEY[lv]
        values = _query_values(identifier[keyword]) if keyword in identifier else []
        values = [v for v in values if v]
        if not values:
            if lv == level:
                raise _invalid(f"a {level} retrieve needs a {keyword} value")
            continue
        key = COLUMN_KEYS[keyword]
        if key.kind is Kind.UID:
            _check_uids(key, values)
        elif any(has_wildcards(v) for v in values):
            raise _invalid(f"{keyword}: wildcards are not allowed in a retrieve")
        marks = ", ".join("?" for _ in values)
        conditions.append(Condition(f"{key.column} IN ({marks})", tuple(values)))
    where = " AND ".join(c.sql for c in conditions)
    params = [p for c in conditions for p in c.params]
    with index.db.read() as conn:
        rows = conn.all(
            "SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, "
            f"st.study_uid, se.series_uid FROM {_FROM['IMAGE']} WHERE {where} "
            "ORDER BY st.id, se.id, i.id",
            params,
        )
    return [
        StoredInstance(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]), str(r[6]))
        for r in rows
    ]
