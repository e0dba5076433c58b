"""Throughput and memory of `personad dataset build` on a generated million-message export.

Writes a DiscordChatExporter JSON export of N messages (three people in two channels, a
persona among them) without holding it in memory, runs the build in a subprocess, and prints
messages per second and the subprocess's peak RSS. Targets: >= 20,000 messages/s, <= 300 MB.

    python bench/dataset.py [--messages 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

WORDS = [
    "pizza",
    "tonight",
    "maybe",
    "later",
    "lol",
    "sure",
    "where",
    "when",
    "coffee",
    "hike",
    "rain",
    "sun",
    "game",
    "cat",
]
PEOPLE = [("1", "alice"), ("2", "sam"), ("3", "bob")]


def write_export(path: Path, n: int, seed: int = 1) -> None:
    """Stream a DiscordChatExporter JSON file of ``n`` messages."""
    rng = random.Random(seed)
    t = datetime(2022, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as out:
        out.write(
            '{"guild":{"id":"5","name":"g","iconUrl":""},"channel":{"id":"7",'
            '"type":"GuildTextChat","name":"general"},"messages":[\n'
        )
        for i in range(n):
            t += timedelta(seconds=rng.choice((5, 20, 60, 600, 9000)))
            uid, name = rng.choice(PEOPLE)
            text = " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))
            message = {
                "id": str(10**6 + i),
                "type": "Default",
                "timestamp": t.isoformat(),
                "timestampEdited": None,
                "isPinned": False,
                "content": text,
                "author": {"id": uid, "name": name, "nickname": name.title(), "isBot": False},
                "attachments": [],
                "embeds": [],
                "stickers": [],
                "reactions": [],
                "mentions": [],
            }
            out.write(("," if i else "") + json.dumps(message) + "\n")
        out.write("]}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.json"
        write_export(export, args.messages)
        size = export.stat().st_size
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "daemon",
                "dataset",
                "build",
                str(export),
                "--persona",
                "sam",
                "--out",
                str(Path(tmp) / "out"),
                "--json",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    rate = args.messages / seconds
    print(f"export: {args.messages:,} messages, {size / 2**20:.0f} MB")
    print(
        f"throughput: {rate:,.0f} messages/s ({seconds:.1f} s incl. start-up); "
        f"target >= 20,000 -> {'OK' if rate >= 20_000 else 'BELOW'}"
    )
    print(
        f"peak RSS: {peak / 2**20:.0f} MB; target <= 300 MB -> "
        f"{'OK' if peak <= 300 * 2**20 else 'OVER'}"
    )


if __name__ == "__main__":
    main()
