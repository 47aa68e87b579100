"""`newsdesk db copy`: every article, chunk, vector, feed and follow of one store into another,
without embedding again."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm import tqdm

from index.store.protocol import NewsStore
from index.store.types import StoreCounts


@dataclass(frozen=True)
class CopyReport:
    source: StoreCounts
    target: StoreCounts
    copied: int  # articles new to the target
    present: int  # articles the target already held (a copy run again resumes)
    feeds: int  # feeds new to the target
    follows: int = 0  # follows new to the target

    @property
    def agrees(self) -> bool:
        return self.source == self.target

    def to_json(self) -> dict:
        return {"source": self.source.to_json(), "target": self.target.to_json(), "copied": self.copied,
                "already_there": self.present, "feeds_copied": self.feeds, "follows_copied": self.follows, "agree": self.agrees}


def copy_store(source: NewsStore, target: NewsStore, *, batch_chunks: int = 20_000, progress: bool = False) -> CopyReport:
    """Copies in transactions of about `batch_chunks` chunks (each SQLite commit rewrites its vector
    file, so not many): a copy stopped halfway is resumed by running it again."""
    if (source.model_name, source.dim) != (target.model_name, target.dim):
        raise ValueError(f"the stores hold different embeddings ({source.model_name}/{source.dim} and "
                         f"{target.model_name}/{target.dim})")
    before = source.counts()
    copied = present = 0
    bar = tqdm(total=before.articles, desc="copy", unit=" articles", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    pending = 0
    with target.bulk_load(), target.writer() as writer:
        for record in source.export_articles():
            if writer.import_article(record):
                copied += 1
                pending += len(record.chunks)
            else:
                present += 1
            if pending >= batch_chunks:
                writer.commit()
                pending = 0
            bar.update()
        writer.commit()
    bar.close()
    feeds = target.feeds.restore(source.feeds.feeds())
    return CopyReport(source.counts(), target.counts(), copied, present, feeds, _copy_follows(source, target))


def _copy_follows(source: NewsStore, target: NewsStore) -> int:
    """The follows the target lacks (same server, channel, topic and feed), with their embeddings;
    matches waiting in the source's outbox stay there."""
    have = {(f.guild_id, f.channel_id, f.topic, f.feed_url) for f in target.follows.follows()}
    copied = 0
    for f in source.follows.follows():
        if (f.guild_id, f.channel_id, f.topic, f.feed_url) not in have:
            target.follows.add(guild_id=f.guild_id, channel_id=f.channel_id, topic=f.topic, vector=f.vector,
                               level=f.level, created_by=f.created_by, limit=sys.maxsize, feed_url=f.feed_url,
                               format=f.format)
            copied += 1
    return copied
