"""PersonaHost: what it hands the bridges it builds."""

from __future__ import annotations

from pathlib import Path

from bridges import PersonaHost
from daemon.client import DaemonClient

from ..conftest import make_settings


def test_a_bridge_that_keeps_files_keeps_them_in_the_data_dir(tmp_path: Path) -> None:
    """A bridge with a ``state_dir`` option gets data_dir/<bridge> unless its table names one."""
    settings = make_settings(tmp_path)
    host = PersonaHost(settings, [], DaemonClient("http://127.0.0.1:9"))
    assert host._options("matrix")["state_dir"] == settings.data_dir / "matrix"
    assert "state_dir" not in host._options("console")
    chosen = settings.model_copy(update={"bridges": {"matrix": {"state_dir": "/srv/m"}}})
    assert (
        PersonaHost(chosen, [], DaemonClient("http://127.0.0.1:9"))._options("matrix")["state_dir"]
        == "/srv/m"
    )
