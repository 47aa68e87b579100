"""`newsdesk db copy`: every article, chunk, vector and feed of one store into another, without embedding again."""

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

    @property
    def agrees(self) -> bool:
        return self.source == self.target

    def to_json(self) -> dict:
        return {"source": self.source.to_json(), "target": self.target.to_json(), "copied": self.copied,
                "already_there": self.present, "feeds_copied": self.feeds, "agree": self.agrees}


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
    return CopyReport(source.counts(), target.counts(), copied, present, feeds)
