"""`newsdesk bench`: performance figures, each a ratio or measured side by side in one run.

One module per measurement, each a function that returns a dict of figures:

- `ingest_throughput`: chunks/s of a whole ingest against the bare model's encode on the same chunks;
- `follow_matching`: topic follows' cost at ingest: `FollowMatcher.run` per article with 10, 100 and 1,000
  follows in one server (a real SQLite store), and the same articles ingested with none and with 1,000;
- `embed_backends`: torch, torch-bf16, onnx and onnx-int8 side by side, each in a process of its own:
  load time and memory, a question's embedding quiet and during an ingest, ingest throughput, vectors'
  cosine to torch's, and how often answers cite the article asked about;
- `ask_latency`: `ask` in extractive mode over the Reuters + BBC corpus (p50/p95/p99, retrieval alone);
- `abstention`: questions from the corpus and questions off it (`data/off_corpus_questions.txt`), how
  often each gets an answer across abstention thresholds;
- `footprint`: resident memory and disk bytes per 100k chunks (probes in fresh processes);
- `discord_load`: 50 concurrent questions through the Discord emulator while a feed is ingested;
- `vector_search`: exact and HNSW search from 10k to 1M vectors, recall@10 of HNSW against exact;
- `threads`: one query's embedding with torch's OpenMP settings, on a quiet core and beside a busy one;
- `scale_out`: feeds ingested by one and by two `newsdesk worker` processes on one PostgreSQL (chunks/s,
  the ratio), and 50 concurrent `/ask`s through two bot processes holding shards 0 and 1 of 2 against
  one process holding both (latency, answers, each process's event-loop stalls);
- `backends`: SQLite + FAISS and PostgreSQL + pgvector side by side at 100k and 1M chunks (synthetic
  copies of the bench index): `ask` latency, HNSW recall@10, a serving process's memory.

`runner` runs the sections and writes `bench/results/*.json`; `report` draws the plot and writes
`bench/REPORT.md`. `discord_emulator` is the local Discord API the tests use as well; `serve_probe`
runs `newsdesk serve` with a watch on its event loop, for scale_out's bot processes.
"""

# discord_load runs before vector_search, whose million vectors would stay in the process's heap
# and inflate the load's resident-memory figures.
# backends runs last: it builds (once) and reads stores of a million chunks.
SECTIONS = ("ingest_throughput", "follow_matching", "embed_backends", "ask_latency", "abstention", "footprint",
            "discord_load", "vector_search", "threads", "scale_out", "backends")
