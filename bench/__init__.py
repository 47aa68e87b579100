"""`newsdesk bench`: performance figures, each a ratio or measured side by side in one run.

One module per measurement, each a function that returns a dict of figures:

- `ingest_throughput`: chunks/s of a whole ingest against the bare model's encode on the same chunks;
- `ask_latency`: `ask` in extractive mode over the Reuters + BBC corpus (p50/p95/p99, retrieval alone);
- `footprint`: resident memory and disk bytes per 100k chunks (probes in fresh processes);
- `vector_search`: exact and HNSW search from 10k to 1M vectors, recall@10 of HNSW against exact;
- `discord_load`: 50 concurrent questions through the Discord emulator while a feed is ingested.

`runner` runs the sections and writes `bench/results/*.json`; `report` draws the plot and writes
`bench/REPORT.md`. `discord_emulator` is the local Discord API the tests use as well.
"""

SECTIONS = ("ingest_throughput", "ask_latency", "footprint", "vector_search", "discord_load")
