"""State on disk is the service account's alone: 0700 directories, 0600 files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_real_start_leaves_nothing_readable_by_others(tmp_path: Path) -> None:
    """After `personad run` starts and stops, every directory under data_dir is 0700 and every
    file 0600; what an older version left open is tightened, with a log line each."""
    data = tmp_path / "data"
    (data / "kv" / "old").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "kv", 0o755)
    os.chmod(data / "kv" / "old", 0o755)
    old = data / "kv" / "old" / "state.kv"
    old.write_bytes(b"tokens of a conversation")
    old.chmod(0o644)
    port = free_port()
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{data}"\n[server]\nport = {port}\n'
        f'[models]\ndir = "{tmp_path / "models"}"\n'
        f'[run]\nbridges = []\npersonas_dir = "{tmp_path / "personas"}"\n'
    )
    env = {**os.environ, "PERSONAD_LOG__FORMAT": "json"}
    log = (tmp_path / "run.log").open("w")
    # A permissive umask, as a login shell often has: the command must not rely on it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        umask=0o022,
    )
    log.close()
    try:
        end = time.monotonic() + 120
        while '"event": "ready"' not in (tmp_path / "run.log").read_text():
            assert proc.poll() is None and time.monotonic() < end, (
                tmp_path / "run.log"
            ).read_text()
            time.sleep(0.05)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"prompt": "Hello", "max_tokens": 2, "conversation": "c1"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert (data / "personad.db").is_file()
    for root, _dirs, files in os.walk(data):
        assert _mode(Path(root)) == 0o700, root
        for name in files:
            assert _mode(Path(root, name)) == 0o600, Path(root, name)
    events = [
        json.loads(x) for x in (tmp_path / "run.log").read_text().splitlines() if x[:1] == "{"
    ]
    tightened = {e["path"]: e["mode"] for e in events if e["event"] == "permissions_tightened"}
    assert tightened == {
        str(data): "0o700",
        str(data / "kv"): "0o700",
        str(data / "kv" / "old"): "0o700",
        str(old): "0o600",
    }


def test_only_personads_own_files_are_tightened(tmp_path: Path) -> None:
    """A data_dir shared with other files: personad's are made private, the rest left alone."""
    from daemon import secure_data_dir

    data = tmp_path / "data"
    (data / "kv" / "abc").mkdir(parents=True)
    for name in ("personad.db", "personad.log", "kv/abc/x.kv", "notes.txt"):
        (data / name).write_text("x")
        (data / name).chmod(0o644)
    (data / "photos").mkdir()
    (data / "photos").chmod(0o755)
    secure_data_dir(data)
    for name in ("personad.db", "personad.log", "kv/abc/x.kv"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((data / "notes.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((data / "photos").stat().st_mode) == 0o755
