"""Settings: config.toml loaded once into typed, validated sections.

A file may set only some keys; the others keep the defaults below, which work offline. An unknown
section or key is an error (a typo should not be silently ignored), reported with its name.
Secrets never live here: the Discord token and API keys are read from the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from index.retrieve import RetrievalSettings
from index.store import StoreSettings

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file that cannot be used, with a message that says which key and why."""


@dataclass
class IndexSettings:
    dir: str = "newsdesk-data"
    # A folder with a sentence-transformers model, or "" for the bundled all-MiniLM-L6-v2.
    model: str = ""
    # How the model runs (index/embed.py): "torch", "torch-bf16", "onnx", "onnx-int8", or "auto".
    embed_backend: str = "auto"
    batch_size: int = 64
    chunk_tokens: int = 240
    chunk_overlap_sentences: int = 1
    exact_search_max: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_search: int = 256
    near_duplicate_threshold: float = 0.7

    def __post_init__(self) -> None:
        from index.embed import EMBED_BACKENDS

        if self.embed_backend not in (*EMBED_BACKENDS, "auto"):
            raise ConfigError(f"index.embed_backend: must be one of auto, {', '.join(EMBED_BACKENDS)}")


@dataclass
class FetchSettings:
    timeout_seconds: float = 15.0
    max_page_bytes: int = 5_000_000
    max_feed_items: int = 500
    max_redirects: int = 5
    user_agent: str = "newsdesk/0.1 (+https://github.com/newsdesk)"
    fetch_linked_pages: bool = True
    # Hosts that Discord users may make the bot fetch even though they resolve to private or
    # loopback addresses. Empty by default: such addresses are refused.
    allow_hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The limits that bound hostile input: refused here, with the key's name, rather than
        # when the first fetch builds its reader.
        if not self.timeout_seconds > 0:
            raise ConfigError("fetch.timeout_seconds: must be positive")
        for key in ("max_page_bytes", "max_feed_items"):
            if getattr(self, key) < 1:
                raise ConfigError(f"fetch.{key}: must be at least 1")
        if self.max_redirects < 0:
            raise ConfigError("fetch.max_redirects: must not be negative")
        if not self.user_agent.strip():
            raise ConfigError("fetch.user_agent: must not be empty")


@dataclass
class AnswerSettings:
    max_sentences: int = 3
    max_words: int = 60
    summary_sentences: int = 3
    digest_stories: int = 8
    abstain_below: float = 0.4
    closest_stories: int = 3

    def __post_init__(self) -> None:
        for key in ("max_sentences", "summary_sentences", "digest_stories"):
            if getattr(self, key) < 1:
                raise ConfigError(f"answer.{key}: must be at least 1")
        if self.max_words < 10:
            raise ConfigError("answer.max_words: must be at least 10")
        if not 0.0 <= self.abstain_below < 1.0:
            raise ConfigError("answer.abstain_below: must be at least 0 and below 1")
        if self.closest_stories < 0:
            raise ConfigError("answer.closest_stories: must not be negative")


@dataclass
class LLMSettings:
    base_url: str = ""  # empty: no LLM, the extractive engine answers
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout_seconds: float = 30.0
    max_retries: int = 2
    context_tokens: int = 4096
    max_answer_tokens: int = 512
    # How max_answer_tokens is sent: "max_tokens", "max_completion_tokens" (OpenAI's reasoning
    # models refuse max_tokens), or "auto" (max_completion_tokens for o1/o3/o4/gpt-5 names).
    token_limit_param: str = "auto"
    min_supported_share: float = 0.6
    max_chunks_per_article: int = 2  # in the prompt, so one article cannot crowd out the others
    retry_backoff_seconds: float = 1.0  # doubled after each failed try
    max_retry_wait_seconds: float = 20.0  # a longer Retry-After gives up at once
    deadline_seconds: float = 120.0  # for one answer, all tries included
    min_claim_overlap: float = 0.5  # share of a claim's content words found in the cited passage
    min_claim_similarity: float = 0.6  # cosine between a claim and its best sentence of the passage


@dataclass
class DiscordSettings:
    dev_guild_ids: list[int] = field(default_factory=list)
    ask_channels: list[int] = field(default_factory=list)
    digest_channel: int = 0
    digest_time: str = ""  # "HH:MM" UTC; empty: no daily digest
    admin_role: str = ""
    # Token buckets for /ask, /summary, /search and channel questions (0 requests: no limit).
    user_requests: int = 5
    user_window_seconds: float = 60.0
    server_requests: int = 30
    server_window_seconds: float = 60.0
    # With a language model, the answer's message is edited as it is written, at most this often.
    draft_edit_seconds: float = 1.0
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    post_headlines: bool = False
    # Gateway shards: with shard_count above 1, this process holds `shard_ids` ("0-3", "0,2"; empty:
    # all of them), and answers, posts digests and announcements only for the servers on them.
    shard_count: int = 1
    shard_ids: str = ""
    # With workers polling: how long a bot process holds the announcements it took. One that dies
    # leaves them to the next holder of its shards after this; keep it under Discord's few-minute
    # window for matching a message's nonce, which keeps that retry from posting twice.
    delivery_lease_seconds: float = 60.0

    @property
    def shards(self) -> tuple[int, ...]:
        """The shard ids this process holds, from `shard_ids`."""
        if not self.shard_ids.strip():
            return tuple(range(self.shard_count))
        ids: list[int] = []
        for part in self.shard_ids.replace(" ", "").split(","):
            low, _, high = part.partition("-")
            if int(high or low) < int(low):
                raise ConfigError(f"discord.shard_ids: the range {part!r} runs backwards")
            ids += range(int(low), int(high or low) + 1)
        return tuple(sorted(set(ids)))

    def __post_init__(self) -> None:
        if self.shard_count < 1:
            raise ConfigError("discord.shard_count: must be at least 1")
        if not re.fullmatch(r"\s*(\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*)?\s*", self.shard_ids):
            raise ConfigError(f"discord.shard_ids: expected ids and ranges like \"0-3\" or \"0,2\", got {self.shard_ids!r}")
        if not self.shards or any(shard >= self.shard_count for shard in self.shards):
            raise ConfigError(f"discord.shard_ids: {self.shard_ids!r} must name shards below shard_count "
                              f"({self.shard_count})")
        if self.digest_time and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.digest_time.strip()):
            raise ConfigError(f"discord.digest_time: expected HH:MM (UTC), got {self.digest_time!r}")
        for scope in ("user", "server"):
            if getattr(self, f"{scope}_requests") < 0:
                raise ConfigError(f"discord.{scope}_requests: must be 0 (no limit) or more")
            if getattr(self, f"{scope}_window_seconds") <= 0:
                raise ConfigError(f"discord.{scope}_window_seconds: must be positive")
        for key in ("draft_edit_seconds", "delivery_lease_seconds"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"discord.{key}: must be positive")
        if urlsplit(self.api_base).scheme not in ("http", "https"):
            raise ConfigError(f"discord.api_base: expected an http(s) URL, got {self.api_base!r}")
        if urlsplit(self.gateway_url).scheme not in ("ws", "wss"):
            raise ConfigError(f"discord.gateway_url: expected a ws(s) URL, got {self.gateway_url!r}")


@dataclass
class FeedSettings:
    url: str
    channel: int = 0
    collection: str = "shared"
    guild: int = 0  # the server of `channel`: with several bot processes, the one holding its shard posts there


@dataclass
class FeedsSettings:
    poll_minutes: float = 30.0
    # False when `newsdesk worker` processes poll the feeds (several processes on PostgreSQL): the bot
    # then only posts what they announce.
    poll_in_bot: bool = True
    # How long a worker holds a feed it polls; if it dies, another worker takes the feed after this.
    lease_minutes: float = 15.0
    sources: list[FeedSettings] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("poll_minutes", "lease_minutes"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"feeds.{key}: must be positive")


@dataclass
class FollowsSettings:
    """Topic follows (/follow): how many a server may have, and how often a channel hears of them."""

    max_per_server: int = 50
    # How close an article must be to a normal follow's topic (strict: +0.06; broad: -0.42, on the
    # scale of a section's margin over the other sections). Chosen for the bundled all-MiniLM-L6-v2
    # on labelled news (README, "Following topics"): another [index] model wants `newsdesk eval
    # follow` and a threshold of its own.
    match_threshold: float = 0.54
    # Past this, a channel's matches wait and are posted together later ("5 more stories on Iran").
    max_posts_per_hour: int = 6
    # A match is posted this long after it is found, so that other outlets' copies of the story
    # arriving meanwhile are folded into it ("also reported by") instead of posted again.
    delivery_window_minutes: float = 5.0
    # A story published longer ago than this is not news: ingesting an archive posts nothing.
    max_age_hours: float = 48.0

    def __post_init__(self) -> None:
        for key in ("max_per_server", "max_posts_per_hour"):
            if getattr(self, key) < 1:
                raise ConfigError(f"follows.{key}: must be at least 1")
        if not self.max_age_hours > 0:
            raise ConfigError("follows.max_age_hours: must be positive")
        if self.delivery_window_minutes < 0:
            raise ConfigError("follows.delivery_window_minutes: must not be negative")
        if not -1.0 < self.match_threshold < 2.0:
            raise ConfigError("follows.match_threshold: expected a score between -1 and 2 (cosine + word share)")


@dataclass
class Config:
    index: IndexSettings = field(default_factory=IndexSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    answer: AnswerSettings = field(default_factory=AnswerSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    feeds: FeedsSettings = field(default_factory=FeedsSettings)
    follows: FollowsSettings = field(default_factory=FollowsSettings)
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def data_dir(self) -> Path:
        path = Path(os.path.expanduser(self.index.dir))
        return path if path.is_absolute() else self.base_dir / path

    @property
    def model_cache_dir(self) -> Path:
        """Where the onnx backends keep their exported model: NEWSDESK_MODEL_CACHE, or the data folder."""
        override = os.environ.get("NEWSDESK_MODEL_CACHE", "").strip()
        return Path(os.path.expanduser(override)) if override else self.data_dir / "models"


# Keys that earlier versions read: a config that still sets one loads, with a warning.
_RETIRED = {"rrf_k": "retrieval fuses the rankings' scores now, not their ranks"}


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read a config file; None gives the defaults. Relative paths are taken from the file's folder."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = _build(Config, {k: v for k, v in raw.items()}, where=str(path))
    config.base_dir = path.resolve().parent
    return config


def _build(cls: type, raw: dict, *, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    for name in sorted(set(raw) & set(_RETIRED) - set(fields)):
        log.warning("%s: %s is no longer read (%s); remove it", where, name, _RETIRED[name])
        raw = {k: v for k, v in raw.items() if k != name}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, where=f"{where}: {name}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a section's own check: its message names the key
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint, value, *, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where=where)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_coerce(item, v, where=where) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, str) and value.isdigit():
        return int(value)  # Discord ids are often written as strings
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value
