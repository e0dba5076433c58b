"""Broken variants of every export format give an InputError, never another exception."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convert.dataset import BuildOptions, build_dataset
from convert.errors import InputError
from tests.convert.test_exports import TG_MESSAGES, dce_json

CSV = (
    "AuthorID,Author,Date,Content,Attachments,Reactions\n"
    '"1","alice","2024-03-01T10:00:00.000+00:00","look at this","https://cdn/a.mp4",""\n'
    '"2","sam","2024-03-01T10:00:30.000+00:00","haha, amazing","","😂 (2)"\n'
    '"2","sam","2024-03-01T10:00:50.000+00:00","where was that?","",""\n'
)
WHATSAPP = (
    "13/06/24, 21:04 - Messages and calls are end-to-end encrypted.\n"
    "13/06/24, 21:05 - Alice: dinner tomorrow?\n"
    "we could try the new place\n"
    "13/06/24, 21:06 - Sam: <Media omitted>\n"
    "[6/13/24, 9:05:40 PM] Sam: \u200eimage omitted\n"
    "14/06/24, 08:30 - Sam: so?\n"
)
TELEGRAM: dict[str, Any] = {"name": "Friends", "type": "private_group", "messages": TG_MESSAGES}
TELEGRAM_FULL: dict[str, Any] = {
    "about": "",
    "chats": {"list": [TELEGRAM, {"name": None, "messages": TG_MESSAGES[:3]}]},
}


def _dce() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data: dict[str, Any] = json.loads(dce_json(Path(tmp) / "g.json").read_text("utf-8"))
    return data


DCE = _dce()
SQL_COLUMNS = "username, content, sent, channelname, messageid, userid, channelid"
SQL_ROWS: list[tuple[Any, ...]] = [
    ("alice", "hey <@222>", "2024-04-01 18:00:00", "general", 1, 111, 10),
    ("sam", "hi <@111>!", "2024-04-01 18:00:20", "general", 2, 222, 10),
    ("sam", "hi <@111>!", "2024-04-01 18:00:20", "general", 2, 222, 10),
]


def _sqlite(path: Path, rows: list[tuple[Any, ...]]) -> None:
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE Message({SQL_COLUMNS})")
    db.executemany("INSERT INTO Message VALUES (?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def _sqlite_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        _sqlite(Path(tmp) / "d.db", SQL_ROWS)
        return (Path(tmp) / "d.db").read_bytes()


SAMPLES: dict[str, bytes] = {
    "general.json": json.dumps(DCE).encode(),
    "random.csv": CSV.encode(),
    "dump.db": _sqlite_bytes(),
    "result.json": json.dumps(TELEGRAM).encode(),
    "full.json": json.dumps(TELEGRAM_FULL).encode(),
    "chat.txt": WHATSAPP.encode(),
}


def _build_or_refuse(write: Callable[[Path], object], name: str) -> None:
    """Build from the written file: it works, or fails with an InputError and no output."""
    with tempfile.TemporaryDirectory() as tmp:
        export, out = Path(tmp) / name, Path(tmp) / "out"
        write(export)
        try:
            build_dataset([export], out, BuildOptions(persona="Sam"))
        except InputError as exc:
            assert "\n" not in str(exc)
            assert not out.exists() or list(out.iterdir()) == []
        else:
            tomllib.loads((out / "profile.toml").read_text(encoding="utf-8"))
            for jsonl in ("transcript.jsonl", "chat.jsonl", "alpaca.jsonl"):
                for line in (out / jsonl).read_text(encoding="utf-8").splitlines():
                    json.loads(line)


# -- bytes: truncated, flipped, padded, replaced -------------------------------------------


@st.composite
def _mangled(draw: st.DrawFn, sample: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "insert", "garbage", "empty"]))
    if how == "truncate":
        return sample[: draw(st.integers(0, len(sample)))]
    if how == "empty":
        return b""
    if how == "garbage":
        return draw(st.binary(max_size=5000))
    data = bytearray(sample)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mangled_bytes_are_refused_cleanly(name: str, data: st.DataObject) -> None:
    """Any byte-level damage to any format is an InputError (or still a valid export)."""
    content = data.draw(_mangled(SAMPLES[name]))
    _build_or_refuse(lambda p: p.write_bytes(content), name)


# -- JSON: any field replaced by any value, or removed ---------------------------------------

_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "2024-01-05T20:00:00", "99999999999999", "", "x\"y'\\"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


@st.composite
def _edited(draw: st.DrawFn, document: Any) -> Any:
    doc = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_VALUES)
    return doc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["general.json", "result.json", "full.json"]), st.data())
def test_wrong_types_and_missing_keys_are_refused_cleanly(name: str, data: st.DataObject) -> None:
    """A JSON export with fields of the wrong type, or missing, is an InputError."""
    source = {"general.json": DCE, "result.json": TELEGRAM, "full.json": TELEGRAM_FULL}[name]
    doc = data.draw(_edited(source))
    _build_or_refuse(lambda p: p.write_text(json.dumps(doc), encoding="utf-8"), name)


# -- rows and lines of the wrong shape ------------------------------------------------------

_CELL = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.sampled_from(["2024-04-01 18:00:00", "2024-04-01T18:00:00+02:00", "<@111>"])
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[_CELL] * 7), max_size=6))
def test_sqlite_rows_of_any_type_are_refused_cleanly(rows: list[tuple[Any, ...]]) -> None:
    """DiscordDumper rows with NULLs, numbers, blobs or odd dates in any column."""
    _build_or_refuse(lambda p: _sqlite(p, [*SQL_ROWS, *rows]), "dump.db")


_FIELD = st.text(max_size=12) | st.sampled_from(["2024-03-01T10:00:00", "x\x00y", '"', "\r"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_FIELD, max_size=8), max_size=6))
def test_csv_rows_of_any_shape_are_refused_cleanly(rows: list[list[str]]) -> None:
    """CSV rows with too few cells, NUL bytes, stray quotes or naive dates."""
    text = CSV + "".join(",".join(row) + "\n" for row in rows)
    _build_or_refuse(lambda p: p.write_text(text, encoding="utf-8"), "random.csv")


_WA_LINE = st.builds(
    "{}/{}/{}, {}:{} - {}".format,
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 9999),
    st.integers(0, 99),
    st.integers(0, 99).map("{:02d}".format),
    st.text(max_size=20),
) | st.text(max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(_WA_LINE, max_size=6))
def test_whatsapp_lines_of_any_shape_are_refused_cleanly(lines: list[str]) -> None:
    """WhatsApp lines with impossible dates and times, or no date at all."""
    text = WHATSAPP + "".join(line.replace("\n", " ") + "\n" for line in lines)
    _build_or_refuse(lambda p: p.write_text(text, encoding="utf-8"), "chat.txt")
