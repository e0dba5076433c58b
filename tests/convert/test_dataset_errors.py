"""Bad input to `personad dataset build`: one line naming the problem and the fix, exit 2."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from convert.dataset import BuildOptions, build_dataset
from convert.errors import ExportFormatError, MixedTimestamps
from daemon._cli import main
from tests.convert.test_exports import ALICE, SAM, _dce_message, _transcript, dce_json

CSV_HEADER = "AuthorID,Author,Date,Content,Attachments,Reactions\n"
SQL_COLUMNS = "username, content, sent, channelname, messageid, userid, channelid"


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "dataset", "build", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line of a refusal (exit 2, no traceback), checked to contain ``words``."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _dce(path: Path, messages: list[dict[str, Any]]) -> Path:
    data = {"guild": {"id": "5", "name": "Friends"}, "channel": {"id": "7", "name": "general"}}
    path.write_text(json.dumps({**data, "messages": messages}), encoding="utf-8")
    return path


def _pizza(path: Path, second_ts: str = "2024-01-05T20:01:10+01:00", **extra: Any) -> Path:
    return _dce(
        path,
        [
            _dce_message("1", "2024-01-05T20:00:00+01:00", ALICE, "pizza?"),
            _dce_message("2", second_ts, SAM, "yes", **extra),
        ],
    )


def test_a_directory_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A directory instead of an export file says so and suggests the files inside it."""
    exports = tmp_path / "exports"
    exports.mkdir()
    dce_json(exports / "general.json")
    line = _refused(_cli(exports, "--persona", "Sam", "--out", tmp_path / "out"), "directory")
    assert str(exports / "*.json") in line


def test_mixed_naive_and_aware_timestamps_are_refused(tmp_path: Path) -> None:
    """An export mixing timestamps with and without an offset names the first odd one."""
    export = _pizza(tmp_path / "general.json", second_ts="2024-01-05T20:01:10")
    proc = _cli(export, "--persona", "Sam", "--out", tmp_path / "out")
    _refused(proc, "general.json", "message 2", "UTC offset", "export the chat again")
    with pytest.raises(MixedTimestamps):
        build_dataset([export], tmp_path / "out", BuildOptions(persona="Sam"))


def test_exports_without_offsets_merge_with_exports_that_have_them(tmp_path: Path) -> None:
    """A CSV without offsets is read in --timezone and merges with an aware JSON export."""
    csv = tmp_path / "random.csv"
    csv.write_text(
        CSV_HEADER + '"1","alice","2024-03-01T10:00:00","hi","",""\n'
        '"2","sam","2024-03-01T10:00:05","hey","",""\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    options = BuildOptions(persona="sam", timezone="Europe/Berlin")
    summary = build_dataset([dce_json(tmp_path / "general.json"), csv], out, options)
    assert ("alice: INIT;\nalice: hi\n", "sam: hey\n") in _transcript(out)
    assert set(summary.channels) == {"general", "random"}


@pytest.mark.parametrize("mentions", [{"id": "2", "name": "sam"}, "sam"])
def test_mentions_that_are_not_a_list_are_refused(tmp_path: Path, mentions: object) -> None:
    """`mentions` that is not a list names the message and the field."""
    export = _pizza(tmp_path / "general.json", mentions=mentions)
    proc = _cli(export, "--persona", "Sam", "--out", tmp_path / "out")
    _refused(proc, "general.json", "message 2", "mentions")


@pytest.mark.parametrize("mentions", [7, [1, 2], [{"id": "2"}], [{"id": [], "name": "sam"}]])
def test_mentions_of_other_shapes_are_refused(tmp_path: Path, mentions: object) -> None:
    """Mentions that are not people with an id and a name name the message too."""
    export = _pizza(tmp_path / "general.json", mentions=mentions)
    with pytest.raises(ExportFormatError, match=r"general\.json.*message 2.*mentions"):
        build_dataset([export], tmp_path / "out", BuildOptions(persona="Sam"))


def test_numeric_names_are_read(tmp_path: Path) -> None:
    """Numeric usernames (DiscordDumper keeps them as numbers) and a numeric file name work."""
    export = tmp_path / "123.db"
    db = sqlite3.connect(export)
    db.execute(f"CREATE TABLE Message({SQL_COLUMNS})")  # no declared types: ints stay ints
    db.executemany(
        "INSERT INTO Message VALUES (?,?,?,?,?,?,?)",
        [
            (42, "hi <@222>", "2024-04-01 18:00:00", 7, 1, 111, 10),
            (1234, "hey <@111>", "2024-04-01 18:00:20", 7, 2, 222, 10),
            (None, "who? <@333>", "2024-04-01 18:00:30", 7, 3, 333, 10),
            (1234, "no idea", "2024-04-01 18:00:40", 7, 4, 222, 10),
        ],
    )
    db.commit()
    db.close()
    proc = _cli(export, "--persona", "1234", "--out", tmp_path / "out", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [c for _, c in _transcript(tmp_path / "out")] == ["1234: hey @42\n", "1234: no idea\n"]


@pytest.mark.parametrize("name", ["123.json", "0.csv", "1e5.txt", "12.10.23.json"])
def test_numeric_file_names_are_read(tmp_path: Path, name: str) -> None:
    """A file named like a number is an export like any other, whatever its format."""
    export = tmp_path / name
    if name.endswith(".csv"):
        export.write_text(
            CSV_HEADER + '"1","alice","2024-03-01T10:00:00+00:00","hi","",""\n'
            '"2","sam","2024-03-01T10:00:05+00:00","hey","",""\n'
        )
    elif name.endswith(".txt"):
        export.write_text("13/06/24, 21:05 - alice: hi\n13/06/24, 21:06 - sam: hey\n")
    else:
        _pizza(export)
    summary = build_dataset([export], tmp_path / "out", BuildOptions(persona="sam"))
    assert summary.targets == 1


def _main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run the project's main in this process; the one line it printed on exit 2."""
    argv = ["personad", "dataset", "build", *map(str, args)]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exit_:
        mp.setattr(sys, "argv", argv)
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--timezone", "Mars/Olympus", ("--timezone", "IANA")),
        ("--session-gap", "nan", ("--session-gap",)),
        ("--session-gap", "1e300", ("--session-gap",)),
        ("--context-lines", "0", ("--context-lines",)),
        ("--persona", "Samantha", ("'Samantha'", "'Sam'")),
    ],
)
def test_unusable_options_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    words: tuple[str, ...],
) -> None:
    """Options that cannot work name themselves and the fix; the persona error lists authors."""
    export = dce_json(tmp_path / "general.json")
    args = {"--persona": "Sam", option: value}
    line = _main(capsys, export, "--out", tmp_path / "out", *[x for kv in args.items() for x in kv])
    assert all(word in line for word in words), line


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming an existing file is an input error, not a traceback."""
    export = dce_json(tmp_path / "general.json")
    (tmp_path / "out").write_text("not a directory")
    assert "--out" in _main(capsys, export, "--persona", "Sam", "--out", tmp_path / "out")


@pytest.mark.parametrize("content", ['1 = "Zoë"\n'.encode("latin-1"), b"1 = 5\n", b"[x]\ny = 1\n"])
def test_names_file_that_cannot_be_used_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    """A --names file in another encoding, or with a name that is not text, is named."""
    export = dce_json(tmp_path / "general.json")
    names = tmp_path / "names.toml"
    names.write_bytes(content)
    args = ("--persona", "Sam", "--out", tmp_path / "out", "--names", names)
    line = _main(capsys, export, *args)
    assert "names.toml" in line and '123456789 = "Sam"' in line


def _dumper(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE Message({SQL_COLUMNS})")
    db.executemany(
        "INSERT INTO Message VALUES (?,?,?,?,?,?,?)",
        [
            ("alice", "hi", "2024-04-01 18:00:00", "general", 1, 111, 10),
            ("sam", "hey", "2024-04-01 18:00:20", "general", 2, 222, 10),
        ],
    )
    db.commit()
    db.close()


@pytest.mark.parametrize("name", ["dump#1.db", "dump%20x.db", "dump?mode=rwc.db", "a b#c?d%e.db"])
def test_sqlite_path_with_uri_characters_opens_that_file_read_only(
    tmp_path: Path, name: str
) -> None:
    """'#', '%' and '?' in the path still open that very file, read-only, creating nothing."""
    folder = tmp_path / "ex#ports?%41"
    folder.mkdir()
    export = folder / name
    _dumper(export)
    before = export.read_bytes()
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="sam"))
    assert _transcript(out) == [("alice: INIT;\nalice: hi\n", "sam: hey\n")]
    assert [p.name for p in folder.iterdir()] == [name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex#ports?%41", "out"]
    assert export.read_bytes() == before


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_build_failing_midway_leaves_no_output(tmp_path: Path) -> None:
    """Examples already written when a later export turns out broken are not left behind."""
    good = dce_json(tmp_path / "general.json")
    late = tmp_path / "late.csv"
    late.write_text(
        CSV_HEADER + '"1","alice","2030-01-01T10:00:00+00:00","hi","",""\n'
        '"2","sam","2030-01-01T10:00:05+00:00","hey","",""\n'
        '"2","sam","not a date","oops","",""\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportFormatError, match=r"late\.csv.*line 4"):
        build_dataset([good, late], out, BuildOptions(persona="Sam"))
    assert _listing(out) == ["notes.txt"]


def test_sigterm_midway_leaves_no_output(tmp_path: Path) -> None:
    """SIGTERM while an export is still being read removes the half-written files (exit 143)."""
    fifo = tmp_path / "slow.csv"
    os.mkfifo(fifo)
    rows = CSV_HEADER + "".join(
        f'"{1 + i % 2}","{["alice", "sam"][i % 2]}","2024-03-01T10:{i // 60:02d}:{i % 60:02d}'
        f'+00:00","message {i}","",""\n'
        for i in range(200)
    )
    assert len(rows.encode()) > 4096  # detection reads the first 4 KiB, then opens it again
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon",
            "dataset",
            "build",
            str(fifo),
            "--persona",
            "sam",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    midway = threading.Event()

    def feed() -> None:
        data = rows.encode()
        with suppress(BrokenPipeError), fifo.open("wb", buffering=0) as fh:
            fh.write(data[:4096])
            while True:  # padding until detection closes its end, so the next open is the reader's
                fh.write(b"\n" * 512)
        with fifo.open("wb", buffering=0) as fh:  # the reader: half the rows, then a stall
            fh.write(data[: len(data) // 2])
            midway.set()
            proc.wait(timeout=120)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert midway.wait(timeout=120), proc.communicate()
    # The three files are opened (as temp files) before any export is read; on a loaded
    # machine the listing may trail the reader by a moment (a bound, not a timing assertion).
    deadline = time.monotonic() + 60
    while len(list(out.iterdir())) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(out.iterdir())) == 3
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    feeder.join(timeout=10)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert _listing(out) == []


def test_names_from_the_export_are_shown_as_written(tmp_path: Path) -> None:
    """Channel names and reactions from an export are text: not markup, not broken TOML."""
    export = _pizza(
        tmp_path / "general.json",
        reactions=[{"emoji": {"name": '"\\\x7f'}, "users": [SAM]}],
    )
    data = json.loads(export.read_text(encoding="utf-8"))
    data["channel"]["name"] = "[/oops] [bold]x"
    export.write_text(json.dumps(data), encoding="utf-8")
    proc = _cli(export, "--persona", "Sam", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "[/oops] [bold]x" in proc.stderr
    profile = tomllib.loads((tmp_path / "out" / "profile.toml").read_text(encoding="utf-8"))
    assert profile["stats"]["favourite_reactions"] == ['"\\\x7f']
