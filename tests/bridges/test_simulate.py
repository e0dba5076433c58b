"""`personad simulate` on synthetic persons whose habits are known: the goal is met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bridges.simulate import SimulationOptions, simulate, synthetic_export, write_outputs
from bridges.simulate.cli import simulate_cmd
from convert.dataset import BuildOptions, build_dataset


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulate_meets_the_goal_on_a_synthetic_person(tmp_path: Path, seed: int) -> None:
    """KS <= 0.10 for latency, bursts and hour of week; starts per day within 20 %."""
    exports = synthetic_export(tmp_path, seed, days=360, channels=("general", "games", "dm"))
    r = simulate(SimulationOptions(exports=exports, speaker="Sam", seed=seed)).realism
    for name in ("reply_latency", "burst_length", "hour_of_week"):
        assert r[name]["samples"]["person"] >= 800, name
        assert r[name]["ks"] <= 0.10, (name, r[name])
    assert r["starts_per_day"]["relative_error"] <= 0.20, r["starts_per_day"]
    assert abs(r["reaction_rate"]["bot"] - r["reaction_rate"]["person"]) <= 0.02


def test_today_engine_is_the_baseline(tmp_path: Path) -> None:
    """Without the profile the engine misses the person's latency and starts (the baseline)."""
    exports = synthetic_export(tmp_path, 4, days=90)
    r = simulate(SimulationOptions(exports=exports, speaker="Sam", use_profile=False)).realism
    assert r["reply_latency"]["ks"] > 0.3
    assert r["starts_per_day"]["relative_error"] > 0.2


def test_same_seed_same_events_and_private_outputs(tmp_path: Path) -> None:
    """The same seed writes the same events; outputs are 0600; the report fetches nothing."""
    exports = synthetic_export(tmp_path / "x", 5, days=40)
    runs = []
    for n in range(2):
        result = simulate(SimulationOptions(exports=exports, speaker="Sam", seed=9, days=7))
        runs.append(write_outputs(result, tmp_path / f"out{n}"))
    first, second = (p["events.jsonl"].read_text() for p in runs)
    assert first == second and '"persona": true' in first
    for path in runs[0].values():
        assert path.stat().st_mode & 0o777 == 0o600
    page = runs[0]["report.html"].read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page
    realism = json.loads(runs[0]["realism.json"].read_text())
    assert realism["settings"]["days"] == 7
    assert set(realism["hour_of_week"]) >= {"ks", "critical_5pct", "samples", "person", "bot"}
    events = [json.loads(x) for x in first.splitlines()]
    assert set(events[0]) == {"ts", "channel", "author", "persona", "kind", "text"}


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate_cmd)
    app.command("noop")(lambda: None)
    return app


def test_cli_with_the_built_manifest_and_pseudonyms(tmp_path: Path) -> None:
    """The manifest skeleton of `dataset build` simulates; pseudonyms replace friends."""
    exports = synthetic_export(tmp_path / "x", 6, days=40)
    build_dataset(exports, tmp_path / "data", BuildOptions(persona="Sam"))
    args = ["simulate", str(tmp_path / "data" / "persona.toml"), "--speaker", "Sam"]
    for e in exports:
        args += ["--export", str(e)]
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        _cli(), [*args, "--out", str(out), "--days", "5", "--pseudonymize-others"]
    )
    assert result.exit_code == 0, result.output
    authors = {json.loads(x)["author"] for x in (out / "events.jsonl").read_text().splitlines()}
    assert authors <= {"Sam", "Friend 1", "Friend 2", "Friend 3"}


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    """A bad mode or a missing export is a one-line error with exit status 2."""
    exports = synthetic_export(tmp_path / "x", 7, days=10)
    base = ["simulate", "Sam", "--speaker", "Sam", "--out", str(tmp_path / "o")]
    bad_mode = CliRunner().invoke(_cli(), [*base, "--export", str(exports[0]), "--replies", "dice"])
    assert bad_mode.exit_code == 2 and "--replies" in bad_mode.output
    missing = CliRunner().invoke(_cli(), [*base, "--export", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output


def test_replies_from_the_model_come_from_the_daemon(tmp_path: Path) -> None:
    """`--replies model` asks the daemon for the persona's lines (a scripted engine here)."""
    from daemon.testing import scripted_loader

    from ..conftest import make_settings, serve

    exports = synthetic_export(tmp_path / "x", 7, days=20)
    build_dataset(exports, tmp_path / "data", BuildOptions(persona="Sam"))
    args = ["simulate", str(tmp_path / "data" / "persona.toml"), "--speaker", "Sam"]
    for e in exports:
        args += ["--export", str(e)]
    loader = scripted_loader(lambda prompt: "sounds fun")
    with serve(make_settings(tmp_path / "daemon"), loader=loader) as running:
        out = tmp_path / "sim"
        result = CliRunner().invoke(
            _cli(),
            [*args, "--out", str(out), "--days", "2", "--replies", "model", "--url", running.url],
        )
    assert result.exit_code == 0, result.output
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    said = [e["text"] for e in events if e["persona"] and e["kind"] == "message"]
    assert said and all("sounds fun" in text for text in said)
    assert sum(len(e.calls) for e in loader.engines.values()) >= len(said)
