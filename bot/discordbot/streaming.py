"""An answer shown while a language model writes it: one message, edited as the text grows.

The model streams in a worker thread (NewsService.ask runs in asyncio.to_thread) and Discord is
talked to from the event loop. Each piece of text crosses over with `call_soon_threadsafe`, so the
worker never waits for Discord and the loop never waits for the model. Discord rate-limits edits,
so the draft changes at most once per interval, with never two edits in flight; a piece that comes
in between is not queued but overtaken by the next. Whatever the last draft showed, the checked
answer (or the extractive one, with its note) replaces it when it is done.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import discord

from bot.render import Reply, render_draft

log = logging.getLogger(__name__)

# Puts replies where the answer goes: editing the deferred response, or a message in a thread.
Show = Callable[[Sequence[Reply]], Awaitable[object]]


class DraftThrottle:
    """Which texts of a growing answer are worth an edit: one every `interval` seconds at most, and
    none that would look like the last one (past the message limit the clipped draft stops changing)."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError("the draft edit interval must be positive")
        self._interval, self._clock = interval, clock
        self._last_at = -math.inf
        self._shown: Reply | None = None

    def run(self, text: str) -> Reply | None:
        """The draft to show for `text` now (counted as shown), or None. The clock is read first, so the
        text is rendered only when an edit is due."""
        now = self._clock()
        if now - self._last_at < self._interval:
            return None
        draft = render_draft(text)
        if draft == self._shown:
            return None
        self._last_at, self._shown = now, draft
        return draft


class StreamingDraft:
    """`async with StreamingDraft(show, interval=…) as draft:` then pass `draft.push` as `on_text`.

    Built on the event loop. `show` is awaited there with one draft at a time. Leaving the block waits
    for the edit in flight, so the final answer, sent after it, is always the last word; later pushes
    are ignored (a worker keeps streaming when the command awaiting it is cancelled).
    """

    def __init__(self, show: Show, *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._show = show
        self._throttle = DraftThrottle(interval, clock=clock)
        self._loop = asyncio.get_running_loop()
        self._editing: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> StreamingDraft:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        if self._editing is not None:
            await self._editing

    def push(self, text: str) -> None:
        """The answer so far, from the worker thread; returns at once."""
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._offer, text)
        except RuntimeError:  # the loop has closed: the bot stopped and nobody waits for a draft
            pass

    def _offer(self, text: str) -> None:
        """On the loop: start an edit if none is in flight and the throttle says one is due."""
        if self._closed or (self._editing is not None and not self._editing.done()):
            return
        draft = self._throttle.run(text)
        if draft is not None:
            self._editing = self._loop.create_task(self._edit(draft))

    async def _edit(self, draft: Reply) -> None:
        try:
            await self._show([draft])
        except discord.HTTPException:
            # A lost draft costs nothing: the next one, or the answer, takes its place.
            log.warning("could not show a draft of the answer", exc_info=True)
