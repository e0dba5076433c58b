"""Every TOML file personad writes goes through one writer, and any text survives it."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import ModelManifest, dump_toml, load_manifest, write_manifest, write_toml

HOSTILE = [
    'say "hi"',
    "back\\slash\\",
    "two\nlines\r\nand a CR\r",
    "tab\there",
    "nul\x00 bell\x07 esc\x1b del\x7f",
    "'''\"\"\"",
    "emoji 🍕 and accents é, RTL \u202e, line sep \u2028",
    "[table]\nkey = 1",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_round_trip_as_values_keys_and_array_items(text: str) -> None:
    """Quotes, backslashes, newlines, control characters and unicode come back unchanged."""
    data = {"value": text, text or "empty": 1, "items": [text, text], "nested": {"v": text}}
    assert tomllib.loads(dump_toml(data)) == data


_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]))


@given(st.dictionaries(_TEXT, _TEXT | st.integers() | st.lists(_TEXT)))
def test_any_text_round_trips(data: dict[str, object]) -> None:
    """Whatever the keys and strings hold (lone surrogates aside), tomllib reads back the same."""
    assert tomllib.loads(dump_toml(data)) == data


def test_lone_surrogates_are_replaced_not_fatal() -> None:
    """Text from a JSON export may hold a lone surrogate; the file is still valid UTF-8."""
    out = dump_toml({"name": "a\ud800b"})
    assert tomllib.loads(out) == {"name": "a?b"}
    out.encode("utf-8")


def test_comments_stay_comments_whatever_they_hold() -> None:
    """A comment with newlines or control characters cannot break out into TOML."""
    out = dump_toml({"a": 1}, comment='profile of "x"\nb = 2\x00\x7f')
    assert tomllib.loads(out) == {"a": 1}
    assert out.startswith("# profile of")


def test_none_is_left_out_and_paths_are_text(tmp_path: Path) -> None:
    """TOML has no null: None fields are omitted; paths are written as strings."""
    assert tomllib.loads(dump_toml({"a": None, "p": tmp_path})) == {"p": str(tmp_path)}


def test_write_toml_is_atomic_and_private(tmp_path: Path) -> None:
    """The file appears complete with mode 0600, and nothing else is left in the directory."""
    target = tmp_path / "sub" / "profile.toml"
    write_toml(target, {"name": 'a "b"'})
    assert tomllib.loads(target.read_text(encoding="utf-8")) == {"name": 'a "b"'}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["profile.toml"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    """Data TOML cannot hold is refused before anything replaces the existing file."""
    target = tmp_path / "x.toml"
    write_toml(target, {"v": 1})
    with pytest.raises(TypeError, match="TOML has no type for object"):
        write_toml(target, {"v": object()})
    assert tomllib.loads(target.read_text(encoding="utf-8")) == {"v": 1}
    assert os.listdir(tmp_path) == ["x.toml"]


@pytest.mark.parametrize("text", HOSTILE)
def test_manifest_with_hostile_template_round_trips(
    tmp_path: Path, demo_path: Path, text: str
) -> None:
    """A chat template or adapter path with any characters loads back exactly as written."""
    m = ModelManifest(
        name="m",
        path=demo_path,
        chat_template=text,
        adapters={"a b": demo_path, 'q"x': demo_path},
    )
    back = load_manifest(write_manifest(m, tmp_path))
    assert back.chat_template == text
    assert back.adapters == {"a b": demo_path, 'q"x': demo_path}
    assert back.model_dump(exclude={"source"}) == m.model_dump(exclude={"source"})
