"""`newsdesk serve` with a watch on its event loop, for the processes of the bench's scale_out section.

`python -m bench.serve_probe --report FILE ARGS...` runs `newsdesk ARGS...` (e.g. `--config X serve`)
in this process, unchanged but for one thing: when the bot is created, a task joins its event loop
that sleeps 5 ms again and again and notes how late it wakes (bench.discord_load.watch_loop), and a
listener counts the interactions that reach it, by guild. On SIGTERM the process
writes FILE (JSON) and stops as `newsdesk serve` stops on Ctrl-C. Times in FILE are
`time.monotonic()`, one clock for every process on Linux, so the bench can cut out its own windows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter
from pathlib import Path

from bench.discord_load import TICK, watch_loop
from bot import cli
from bot.discordbot import client


class LoopWatch:
    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []  # (monotonic time, lateness in s)
        self.interactions: Counter[str] = Counter()  # guild id -> interactions received
        self._task: asyncio.Task | None = None

    def attach(self, bot) -> None:
        """Tick in the bot's event loop from now on; count the interactions it receives."""
        self._task = asyncio.get_running_loop().create_task(watch_loop(self.ticks, asyncio.Event()))

        async def on_interaction(interaction) -> None:
            self.interactions[str(interaction.guild_id)] += 1

        bot.add_listener(on_interaction, "on_interaction")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({
            "tick_ms": TICK * 1000, "interactions": dict(self.interactions),
            "ticks": [(round(at, 4), round(late * 1000, 2)) for at, late in self.ticks],
        }), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True, help="where the JSON goes on SIGTERM")
    args, newsdesk_args = parser.parse_known_args(argv)
    watch = LoopWatch()
    create_bot = client.create_bot

    async def create_watched_bot(*positional, **keywords):
        bot = await create_bot(*positional, **keywords)
        watch.attach(bot)
        return bot

    client.create_bot = create_watched_bot  # what `newsdesk serve` (client._serve) calls to build its bot

    def stop(signum, frame) -> None:
        watch.write(args.report)
        raise KeyboardInterrupt  # `newsdesk serve` stops on it (Ctrl-C)

    signal.signal(signal.SIGTERM, stop)
    return cli.main(newsdesk_args)


if __name__ == "__main__":
    sys.exit(main())
