"""Continuous batching: many requests of one model decoded together, one ``llama_decode`` a step.

A :class:`Batcher` owns a llama.cpp context with one sequence id per slot and a thread that
runs the step loop. Each step it

1. admits waiting requests into free slots: the slot's sequence is filled from the
   conversation's stored KV state (``llama_state_seq_set_data`` into that sequence id) or
   from what the slot still holds, and trimmed to the prompt's common prefix; the slots
   are chosen so that the active ones stay consecutive (``_slots``);
2. picks one adapter group (LoRA adapters apply to a whole context in llama.cpp, so requests
   with different adapters take turns, one step each, round robin);
3. builds one batch: one token for every decoding sequence of that group, then chunks of
   newcomers' prompts (at most ``prefill_chunk`` tokens each while others decode, so a long
   prompt does not stall them);
4. decodes it, samples each sequence that produced logits with its own sampler chain, and
   hands the text to the requests once all are sampled; finished sequences free their slot.

A sequence that finishes while no other is active has its KV state copied to the store
before its reply ends. One that finishes while others decode keeps its state live in its
slot, and the copy comes later: between steps once every active sequence is past its first
token, when the loop is idle, before the slot goes to another conversation, or at close. A
copy takes ~20 ms for a 2,000-token state; made at once it would hold back every other
sequence's next token (at the end of a burst, the last replies wait for all the copies).

Cancellation, stop strings, logit bias, seeds and limits are per request, as in the
single-sequence path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np
import structlog

from .._kvfiles import state_key
from .._types import Piece, stop_holdback
from ._batchseq import BatchRequest, Seq
from ._kvcache import KVCache, SavedState, common_prefix
from ._sampling import sampler_chain
from ._seqstate import copy_in, copy_out
from ._slots import Newcomer, place

__all__ = ["Batcher", "Trace"]

log = structlog.get_logger("personad.batch")

# (request tag, step index, sampled token, top-two logit margin): for numerics tests.
Trace = Callable[[object, int, int, float], None]


class Batcher:
    """The step loop of one model; ``submit`` from any thread, ``close`` once."""

    def __init__(
        self,
        ctx: Any,
        *,
        vocab: Any,
        n_vocab: int,
        n_ctx: int,
        parallel: int,
        n_batch: int,
        prefill_chunk: int,
        detokenize: Callable[[list[int]], bytes],
        set_adapter: Callable[[str | None], None],
        kv: KVCache | None,
        min_gain: int,
        trace: Trace | None = None,
    ) -> None:
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._vocab = vocab
        self._n_vocab = n_vocab
        self.n_ctx = n_ctx
        self.parallel = parallel
        self._n_batch = n_batch
        self._chunk = max(1, prefill_chunk)
        self._detokenize = detokenize
        self._set_adapter = set_adapter
        self._kv = kv
        self._min_gain = min_gain
        self._trace = trace
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._incoming: list[BatchRequest] = []
        self._cond = threading.Condition()
        self._closing = False
        self._active: list[Seq] = []
        # What each slot's sequence holds when free: (adapter, tokens), for live reuse.
        self._slots: dict[int, tuple[str | None, list[int]]] = {
            i: (None, []) for i in range(parallel)
        }
        # When each slot was last released (a step counter), to reuse the stalest first.
        self._released: dict[int, int] = {}
        # Slots whose finished request's state is not in the store yet, oldest first.
        self._unsaved: dict[int, BatchRequest] = {}
        self._releases = 0
        self._group_turn = 0
        # What requests get from this iteration, handed over after the step (see _deliver).
        self._outbox: list[tuple[BatchRequest, Piece | BaseException]] = []
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, req: BatchRequest) -> None:
        """Queue ``req`` for the next step."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the model is being unloaded")
            self._incoming.append(req)
            self._cond.notify()

    def close(self) -> None:
        """Stop the loop (running requests end as cancelled) and free the batch."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or self._incoming or self._active or self._unsaved):
                    self._cond.wait()
                if self._closing:
                    break
                free = [i for i in self._slots if all(s.seq_id != i for s in self._active)]
                admit = self._incoming[: len(free)]
                del self._incoming[: len(admit)]
            if not admit and not self._active:  # nothing to decode: store one state, look again
                self._save_oldest()
                continue
            try:
                places = self._places(admit, free) if admit else []
            except Exception as exc:  # the newcomers fail, the loop and the others go on
                log.error("batch_place_failed", error=str(exc))
                for req in admit:
                    req.out.put(exc)
                places = []
            for req, (seq_id, live) in zip(admit, places, strict=False):
                try:
                    self._admit(req, seq_id, live)
                except Exception as exc:  # one bad request fails alone
                    log.error("batch_admit_failed", error=str(exc))
                    req.out.put(exc)
            try:
                self._step()
            except Exception as exc:  # a failed decode fails the requests in it, not the loop
                log.error("batch_step_failed", error=str(exc))
                for seq in list(self._active):
                    self._end(seq, exc)
            self._deliver()
            if self._unsaved and self._active and all(s.steps > 0 for s in self._active):
                self._save_oldest()  # nobody waits for a first token
        for seq in list(self._active):
            self._finish(seq, "cancelled")
        self._deliver()
        for seq_id in list(self._unsaved):  # a restart finds them
            self._save(seq_id)
        with self._cond:
            for req in self._incoming:
                req.out.put(RuntimeError("the model was unloaded"))
            self._incoming.clear()

    def _held(self, seq_id: int, req: BatchRequest) -> int:
        """How much of ``req``'s prompt slot ``seq_id`` holds."""
        adapter, tokens = self._slots[seq_id]
        return common_prefix(tokens, req.tokens) if adapter == req.adapter else 0

    def _places(self, reqs: list[BatchRequest], free: list[int]) -> list[tuple[int, int]]:
        """A free slot for each of ``reqs`` and the prefix of it that the slot holds.

        A slot holding at least ``min_gain`` tokens of a prompt keeps them; otherwise an
        empty slot, else the one released longest ago, so that the live states of recent
        conversations stay for their next follow-up. All active slots stay consecutive where
        the store can move a live state (``_slots.place``).
        """
        held = [{i: self._held(i, req) for i in free} for req in reqs]
        comers = [
            Newcomer(
                {i: n for i, n in h.items() if n >= self._min_gain},
                movable=self._kv is not None and req.conversation is not None,
            )
            for req, h in zip(reqs, held, strict=True)
        ]
        slots = place(
            [s.seq_id for s in self._active],
            comers,
            free,
            lambda i: (bool(self._slots[i][1]), self._released.get(i, -1), i),
        )
        for j, (req, comer) in enumerate(zip(reqs, comers, strict=True)):
            home = comer.home
            if home is None or not comer.moved(slots[j]):
                continue  # nothing live, or home (or a slot holding as much)
            if not self._store_for_move(req, home, comer.live[home]) and home not in slots:
                slots[j] = home  # the store could not take it: stay, gap or not
        return [(seq_id, h[seq_id]) for seq_id, h in zip(slots, held, strict=True)]

    def _store_for_move(self, req: BatchRequest, home: int, held: int) -> bool:
        """Copy the state in ``home`` to the store if it is not there yet; whether the store
        now holds the ``held`` tokens of ``req``'s prompt that ``home`` did (``_admit``
        restores them from there)."""
        self._save(home)
        stored = self._kv.lookup(req.tokens, req.conversation, req.adapter) if self._kv else None
        return stored is not None and stored[1] >= held

    def _admit(self, req: BatchRequest, seq_id: int, live: int) -> None:
        owner = self._unsaved.get(seq_id)
        mine = (req.conversation, req.adapter)
        if owner is not None and (owner.conversation, owner.adapter) == mine:
            del self._unsaved[seq_id]  # its continuation's state supersedes it
        else:
            self._save(seq_id)  # before the slot's sequence is overwritten
        tokens = req.tokens
        from_store = False
        keep = live
        stored = (
            self._kv.lookup(tokens, req.conversation, req.adapter) if self._kv is not None else None
        )
        if stored is not None and stored[1] >= live + self._min_gain:
            state, n = stored
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
            if copy_in(self._ctx, state.data, seq_id):
                keep, from_store = n, True
            else:
                log.warning("kv_restore_failed", seq=seq_id)
                keep = 0
        keep = min(keep, len(tokens) - 1)  # the last prompt token is evaluated for its logits
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, keep, -1)
        room = self.n_ctx - len(tokens)
        limit = room if req.params.max_tokens is None else min(req.params.max_tokens, room)
        seq = Seq(
            req=req,
            seq_id=seq_id,
            sampler=sampler_chain(req.params, tokens, self._n_vocab),
            limit=limit,
            held=list(tokens[:keep]),
            todo=list(tokens[keep:]),
            cached=keep,
            from_store=from_store,
        )
        self._slots[seq_id] = (req.adapter, seq.held)
        self._active.append(seq)
        if limit <= 0:
            self._finish(seq, "length")

    def _group(self) -> str | None:
        groups = sorted({s.req.adapter or "" for s in self._active})
        self._group_turn = (self._group_turn + 1) % len(groups)
        name = groups[self._group_turn]
        return name or None

    def _step(self) -> None:
        for seq in list(self._active):
            if seq.req.cancel.is_set() or seq.req.abandoned.is_set():
                self._finish(seq, "cancelled")
        if not self._active:
            return
        group = self._group()
        members = [s for s in self._active if s.req.adapter == group]
        self._set_adapter(group)
        fed = self._plan(members)
        if not fed:
            return
        batch = self._batch
        n = 0
        for seq, take in fed:
            for j, token in enumerate(take):
                batch.token[n] = token
                batch.pos[n] = len(seq.held) + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                batch.logits[n] = False
                n += 1
            seq.row = -1
            if len(take) == len(seq.todo):  # its prompt is done: sample from the last row
                batch.logits[n - 1] = True
                seq.row = n - 1
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}): the context is full or invalid")
        for seq, take in fed:
            seq.held.extend(take)
            del seq.todo[: len(take)]
            if seq.row >= 0:
                self._sample(seq)

    def _plan(self, members: list[Seq]) -> list[tuple[Seq, list[int]]]:
        """What each sequence feeds this step, in sequence-id order.

        llama.cpp puts consecutive sequence ids in one micro-batch and splits at every gap, so
        the order matters. Decoding sequences always get their one token; newcomers' prompts
        share the rest of the batch, in chunks of ``prefill_chunk`` while anyone is decoding
        (so a long prompt does not stall them).
        """
        decoding = [s for s in members if s.steps > 0]
        room = self._n_batch - sum(len(s.todo[:1]) for s in decoding)
        chunk = self._chunk if decoding else self._n_batch
        fed: list[tuple[Seq, list[int]]] = []
        for seq in sorted(members, key=lambda s: s.seq_id):
            if seq.steps > 0:
                take = seq.todo[:1]
            else:
                take = seq.todo[: max(0, min(chunk, room))]
                room -= len(take)
            if take:
                fed.append((seq, take))
            else:
                seq.row = -1
        return fed

    def _sample(self, seq: Seq) -> None:
        if self._trace is not None:
            logits = llama_cpp.llama_get_logits_ith(self._ctx, seq.row)
            row = np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).copy()
            for token, bias in seq.req.params.logit_bias.items():
                row[token] += np.sign(bias) * np.inf if abs(bias) >= 100 else bias
            top = np.partition(row, -2)[-2:]
            margin = float(top[1] - top[0])
        token = int(llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, seq.row))
        if self._trace is not None:
            self._trace(seq.req.tag, seq.steps, token, margin)
        seq.steps += 1
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop")
            return
        seq.produced += 1
        seq.text += seq.decoder.decode(self._detokenize([token]))
        stops = seq.req.stops
        hit = min((i for s in stops if (i := seq.text.find(s)) >= 0), default=-1)
        if hit >= 0:
            seq.text = seq.text[:hit]
            self._finish(seq, "stop")
            return
        keep = stop_holdback(seq.text, stops)
        if len(seq.text) > keep:
            cut = len(seq.text) - keep
            self._outbox.append((seq.req, Piece(seq.text[:cut])))
            seq.text = seq.text[cut:]
        if seq.produced >= seq.limit:
            self._finish(seq, "length")
            return
        seq.todo.append(token)

    def _save_oldest(self) -> None:
        self._save(next(iter(self._unsaved)))

    def _save(self, seq_id: int) -> None:
        """Copy the unsaved state in slot ``seq_id``, if any, to the store."""
        req = self._unsaved.pop(seq_id, None)
        held = self._slots[seq_id][1]
        if self._kv is None or req is None or req.conversation is None or not held:
            return
        try:
            key = state_key(req.conversation, req.adapter)
            tokens = np.array(held, dtype=np.intc)
            self._kv.put(SavedState(key, tokens, copy_out(self._ctx, seq_id)), drops=req.drops)
        except (OSError, MemoryError) as exc:  # a cache failure never fails a request
            log.warning("kv_save_failed", error=str(exc))

    def _release(self, seq: Seq) -> None:
        self._active.remove(seq)
        self._unsaved[seq.seq_id] = seq.req
        llama_cpp.llama_sampler_free(seq.sampler)
        self._slots[seq.seq_id] = (seq.req.adapter, seq.held)
        self._releases += 1
        self._released[seq.seq_id] = self._releases

    def _finish(self, seq: Seq, reason: str) -> None:
        if reason != "stop":
            seq.text += seq.decoder.decode(b"", final=True)
        self._release(seq)
        if not self._active:  # nobody else waits: the store has the state when the reply ends
            self._save(seq.seq_id)
        final = Piece(
            seq.text,
            finish_reason=reason,
            completion_tokens=seq.produced,
            cached_tokens=seq.cached,
            cache_hit=seq.from_store,
        )
        self._outbox.append((seq.req, final))

    def _end(self, seq: Seq, exc: BaseException) -> None:
        """Fail ``seq``: its sequence is cleared, since a failed decode leaves it unknown."""
        self._release(seq)
        del self._unsaved[seq.seq_id]  # nothing worth keeping in the slot
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        self._slots[seq.seq_id] = (None, [])
        self._outbox.append((seq.req, exc))

    def _deliver(self) -> None:
        """Hand this step's pieces to their requests, all at once after sampling.

        Each put wakes the request's reader, which then wants the GIL; put one by one during
        the sampling loop, eight readers interrupted it every step (5.8 ms of wall time for
        2.5 ms of work at 8 sequences). Woken here, they run while ``llama_decode`` has the
        GIL released.
        """
        for req, item in self._outbox:
            req.out.put(item)
        self._outbox.clear()
