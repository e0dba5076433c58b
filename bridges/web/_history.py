"""The room's history as page frames, read from the persona's store (the same as every
bridge's), so it survives a reload and a restart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._store import StoredMessage

__all__ = ["frames_of", "message_frame"]

Frame = dict[str, Any]
_SHOWN = {"message", "reply", "photo", "video", "file"}


def message_frame(
    message_id: str,
    author: str,
    text: str,
    ts: str,
    *,
    mine: bool,
    kind: str = "message",
    reply_to: Frame | None = None,
) -> Frame:
    """One bubble."""
    return {
        "type": "message",
        "id": message_id,
        "author": author,
        "mine": mine,
        "kind": kind,
        "text": text,
        "ts": ts,
        "reply_to": reply_to,
        "reactions": [],
    }


def frames_of(rows: Sequence[StoredMessage]) -> list[Frame]:
    """Bubbles for stored rows, oldest first: reactions go onto their message, an
    attachment line (``<id>#n``) is a bubble of its own, replies quote their message."""
    by_id: dict[str, Frame] = {}
    out: list[Frame] = []
    for row in rows:
        if row.kind == "react":
            target = by_id.get(row.message_id)
            if target is not None:
                target["reactions"].append(row.text)
            continue
        if row.kind not in _SHOWN:
            continue
        quoted = by_id.get(row.reply_to) if row.reply_to else None
        reply = (
            {"id": row.reply_to, "author": quoted["author"], "text": quoted["text"][:200]}
            if quoted is not None
            else (
                {"id": row.reply_to, "author": "", "text": "(an older message)"}
                if row.reply_to
                else None
            )
        )
        frame = message_frame(
            row.message_id,
            row.author_name,
            row.text,
            row.ts.isoformat(),
            mine=row.is_self,
            kind=row.kind,
            reply_to=reply,
        )
        by_id[row.message_id] = frame
        out.append(frame)
    return out
