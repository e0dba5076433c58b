"""``report.html``: self-contained (PNG plots embedded), person and bot side by side."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import SimulationResult

__all__ = ["report_html"]

_PLOTS = {
    "reply_latency": ("Reply latency (s, log scale)", True),
    "burst_length": ("Messages in a row", False),
    "hour_of_week": ("Hour of week (0 = Monday 00:00)", False),
}


def _png(title: str, person: list[float], bot: list[float], log: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
    values = [v for v in person + bot if not log or v > 0]
    if values:
        lo, hi = min(values), max(values)
        bins: list[float]
        if log:
            bins = [
                float(x) for x in np.logspace(np.log10(max(lo, 0.1)), np.log10(max(hi, 1.0)), 40)
            ]
            ax.set_xscale("log")
        elif title.startswith("Hour"):
            bins = [float(x) for x in range(0, 169, 4)]
        else:
            bins = [x + 0.5 for x in range(int(max(hi, 1)) + 1)]
        for data, label in ((person, "person (held out)"), (bot, "bot")):
            if data:
                ax.hist(data, bins=bins, density=True, alpha=0.55, label=f"{label}, n={len(data)}")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _row(name: str, r: dict[str, Any]) -> str:
    if "ks" in r:
        ok = "✓" if r["ks"] <= max(0.10, r["critical_5pct"]) else "✗"
        cells = [
            name,
            str(r["samples"]["person"]),
            str(r["samples"]["bot"]),
            f"{r['ks']:.3f}",
            f"{r['critical_5pct']:.3f}",
            ok,
        ]
    else:
        cells = [name, str(r.get("person")), str(r.get("bot")), "", "", ""]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def report_html(result: SimulationResult) -> str:
    """The report page, with nothing fetched from elsewhere."""
    r = result.realism
    rows = "".join(
        _row(k, r[k])
        for k in (
            "reply_latency",
            "burst_length",
            "hour_of_week",
            "starts_per_day",
            "reaction_rate",
        )
    )
    plots = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{_png(title, result.person[k], result.bot[k], log)}">'
        for k, (title, log) in _PLOTS.items()
    )
    s = r["settings"]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>personad simulate: {html.escape(str(s['persona']))}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .8em;border-bottom:1px solid #ccc;text-align:right}</style>"
        f"</head><body><h1>{html.escape(str(s['persona']))}: person vs bot</h1>"
        f"<p>{s['days']} simulated days against the held-out {s['holdout_days']} days; "
        f"seed {s['seed']}, replies from the {html.escape(str(s['replies']))}.</p>"
        "<table><tr><th>statistic</th><th>person</th><th>bot</th><th>KS</th>"
        "<th>5 % critical</th><th></th></tr>"
        f"{rows}</table>{plots}</body></html>"
    )
