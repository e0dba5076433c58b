"""convert applies the rules models owns: GGUF validation, quant names, sessions, TOML."""

from __future__ import annotations

import json
import stat
import struct
import tomllib
from pathlib import Path

import pytest

from convert._gguf import BaseGGUF
from convert._merge import merge
from convert._quantize import check_quant, quantize_file
from convert.dataset import BuildOptions, build_dataset
from convert.errors import BadOption, InputError
from models import QUANT_TYPES
from tests.convert.test_exports import ALICE, _dce_message, _transcript, _user


def test_base_gguf_reports_what_models_finds(tmp_path: Path) -> None:
    """An old GGUF version is an InputError carrying the models message and fix."""
    old = tmp_path / "old.gguf"
    old.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0) + b"\x00" * 64)
    with pytest.raises(InputError, match=r"GGUF version 1 is not supported") as info:
        BaseGGUF(old)
    assert info.value.path == old


def test_not_gguf_and_missing_keep_their_messages(tmp_path: Path) -> None:
    """Merge and quantize name a missing or non-GGUF input exactly as before."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a GGUF file"):
        merge(junk, tmp_path, tmp_path / "out.gguf")
    with pytest.raises(InputError, match="file not found"):
        quantize_file(tmp_path / "nope.gguf", tmp_path / "out.gguf", "Q8_0")
    assert not (tmp_path / "out.gguf").exists()


def test_unknown_quant_is_a_bad_option_listing_the_models_table(tmp_path: Path) -> None:
    """--quant and --type accept exactly models.QUANT_TYPES, and say so when refused."""
    for name in QUANT_TYPES:
        check_quant(name)
    with pytest.raises(BadOption, match=r"--quant: unknown quantization 'Q3_K'") as info:
        merge(tmp_path / "nope.gguf", tmp_path, tmp_path / "out.gguf", quant="Q3_K")
    assert ", ".join(QUANT_TYPES) in str(info.value)
    with pytest.raises(BadOption, match="--type"):
        quantize_file(tmp_path / "nope.gguf", tmp_path / "out.gguf", "q4")


GUILD = {"id": "5", "name": "Friends"}
CHANNEL = {"id": "7", "name": "general"}
HOSTILE_NAME = 'Sam "the\\man"\nnew = 1\x7f'
HOSTILE_EMOJI = 'x"\\\n\x00🍕'


def test_profile_is_valid_private_toml_whatever_the_names(tmp_path: Path) -> None:
    """Names and reactions with quotes, newlines and control characters give a 0600 profile."""
    sam = _user("2", HOSTILE_NAME)
    export = tmp_path / "general.json"
    reaction = {"emoji": {"name": HOSTILE_EMOJI}, "count": 1, "users": [sam]}
    messages = [
        _dce_message("1", "2024-01-05T20:00:00+01:00", ALICE, "pizza?", reactions=[reaction]),
        _dce_message("2", "2024-01-05T20:01:10+01:00", sam, "yes"),
    ]
    export.write_text(
        json.dumps({"guild": GUILD, "channel": CHANNEL, "messages": messages}),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    build_dataset([export], out, BuildOptions(persona="2"))
    profile_path = out / "profile.toml"
    text = profile_path.read_text(encoding="utf-8")
    profile = tomllib.loads(text)
    assert profile["stats"]["favourite_reactions"] == [HOSTILE_EMOJI]
    assert profile["stats"]["messages"] == 1
    assert "new" not in profile  # the name's newline stayed inside the comment
    assert text.startswith("# personad persona profile of")
    assert stat.S_IMODE(profile_path.stat().st_mode) == 0o600


def test_sessions_split_on_the_models_rule_inclusive_gap(tmp_path: Path) -> None:
    """A silence of exactly --session-gap starts a new training window (at INIT)."""
    sam = _user("2", "sam", "Sam")
    export = tmp_path / "general.json"
    messages = [
        _dce_message("1", "2024-01-05T20:00:00+00:00", ALICE, "pizza?"),
        _dce_message("2", "2024-01-05T20:01:00+00:00", sam, "yes"),
        _dce_message("3", "2024-01-05T20:11:00+00:00", ALICE, "later?"),
        _dce_message("4", "2024-01-05T20:12:00+00:00", sam, "sure"),
    ]
    export.write_text(
        json.dumps({"guild": GUILD, "channel": CHANNEL, "messages": messages}),
        encoding="utf-8",
    )
    build_dataset([export], tmp_path / "out", BuildOptions(persona="Sam", session_gap=600))
    assert _transcript(tmp_path / "out")[1] == ("Alice: INIT;\nAlice: later?\n", "Sam: sure\n")
