"""The embedding backends (torch, torch-bf16, onnx, onnx-int8) on real text: their vectors agree with
torch's, the ONNX export runs offline and is redone when cut short, and an index never mixes them."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SEED, run_newsdesk, shared_data

from bot.config import Config, ConfigError
from index.chunk import Chunker
from index.ingest import embed_text, embed_token_ids
from index.embed import (
    EMBED_BACKENDS, MINILM_SHA256, backend_of, bundled_model_dir, embedding_name, load_embedder, new_index_backend,
)
from index.onnx_export import EXPORT_FORMAT, FP32_FILE, INT8_FILE, ExportError, exported_model
from index.sources.common import build_article
from index.sources.fetch import Fetcher, FetchLimits
from index.sources.loader import SourceLoader
from index.store import StoreError

pytestmark = pytest.mark.slow
BUNDLED_DIGEST_PREFIX = "53aa51172d142c89"  # of the packaged model.safetensors: names the export's folder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)  # both sides are normalised


@pytest.fixture(scope="module")
def torch_embedder():
    return load_embedder(backend="torch")


@pytest.fixture(scope="module")
def real_chunks(torch_embedder) -> list[str]:
    """50 chunks of real news: the seed article and the pages among the feed fixtures, chunked as ingest does."""
    pages = shared_data("feeds_and_html/html")
    loader = SourceLoader(Fetcher(FetchLimits()))
    articles = [item for item in loader.run([str(SEED), str(pages)]) if hasattr(item, "text")]
    chunker = Chunker(torch_embedder, max_tokens=240)
    texts = [chunk.text for article in articles for chunk in chunker.run(article)]
    assert len(texts) >= 50, len(texts)
    return texts[:50]


@pytest.fixture(scope="module")
def wire_stories() -> list:
    """Real BBC and Reuters stories built as ingest builds them, and one whose single sentence is
    longer than the model's window (the chunker cuts it at words)."""
    stories = []
    for corpus in ("bbc/corpus.jsonl", "reuters/corpus.jsonl"):
        with shared_data(corpus).open(encoding="utf-8") as handle:
            for _, line in zip(range(60), handle):
                row = json.loads(line)
                stories.append(build_article(text=row["text"], source="test", title=row.get("title"), guid=row["id"]))
    words = " ".join(story.text for story in stories[:3]).replace(".", ",").split()
    stories.append(build_article(text=" ".join(words[:600]) + ".", source="test", title="One long sentence",
                                 guid="long"))
    return stories


def test_the_chunkers_tokens_are_the_models_own_for_what_it_embeds(torch_embedder, wire_stories):
    """Ingest hands the model the chunker's tokens (the title's, then the chunk's sentences'):
    they must be exactly what the model's tokenizer makes of the text it stands for."""
    chunker = Chunker(torch_embedder, max_tokens=240)
    checked = 0
    for story in wire_stories:
        title_ids = torch_embedder.tokenize([story.title])[0]
        chunks = chunker.run(story)
        texts = [embed_text(story, chunk.text) for chunk in chunks]
        assert torch_embedder.tokenize(texts) == [embed_token_ids(title_ids, chunk) for chunk in chunks], story.id
        checked += len(chunks)
    assert checked > 200 and len(chunker.run(wire_stories[-1])) > 1  # the long sentence was cut
    # Ingest chunks a group of articles with one tokenizer call: the same chunks, the same tokens.
    batched = chunker.run_batch(wire_stories)
    assert [[(c.text, c.token_ids) for c in chunks] for chunks in batched] == \
        [[(c.text, c.token_ids) for c in chunker.run(story)] for story in wire_stories]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_encoding_the_chunkers_tokens_gives_the_texts_own_vectors(backend, torch_embedder, offline_cache, wire_stories):
    embedder = torch_embedder if backend == "torch" else load_embedder(backend="onnx", cache_dir=offline_cache[0])
    chunker = Chunker(embedder, max_tokens=240)
    texts, token_ids = [], []
    for story in wire_stories[::4]:
        title_ids = embedder.tokenize([story.title])[0]
        for chunk in chunker.run(story):
            texts.append(embed_text(story, chunk.text))
            token_ids.append(embed_token_ids(title_ids, chunk))
    texts.append("A headline of many words " * 60 + "\nand a chunk")  # past the window: cut as the tokenizer cuts
    token_ids.append(embedder.tokenize([texts[-1]])[0])
    assert cosines(embedder.encode(texts, token_ids=token_ids), embedder.encode(texts)).min() > 0.99999
    if backend == "torch":  # and the library's own encode: the model's inputs are made as it makes them
        from sentence_transformers import SentenceTransformer

        library = SentenceTransformer(str(bundled_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
        assert cosines(embedder.encode(texts, token_ids=token_ids), library).min() > 0.99999


@pytest.fixture(scope="module")
def offline_cache(tmp_path_factory):
    """The ONNX files exported (float32, then int8) with every socket refused; the connections tried."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    tried = []

    def refuse(*args, **kwargs):
        tried.append(args[1:] or kwargs)
        raise OSError("network blocked by the test")

    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket.socket, "connect_ex", refuse)
    patch.setattr(socket, "getaddrinfo", refuse)
    try:
        embedder = load_embedder(backend="onnx-int8", cache_dir=cache)
    finally:
        patch.undo()
    return cache, embedder, tried


def test_the_export_runs_offline_and_is_recorded_with_its_digest(offline_cache):
    cache, embedder, tried = offline_cache
    assert tried == []
    assert embedder.name == "all-MiniLM-L6-v2+onnx-int8"
    (folder,) = cache.iterdir()
    assert folder.name == f"model-{BUNDLED_DIGEST_PREFIX}-v{EXPORT_FORMAT}"
    for name in (FP32_FILE, INT8_FILE):
        manifest = json.loads((folder / f"{name}.json").read_text())
        assert manifest["bytes"] == (folder / name).stat().st_size > 1_000_000
        # Readable by other users: the Docker image exports as root and runs as another user.
        for path in (folder / name, folder / f"{name}.json"):
            assert path.stat().st_mode & 0o777 == 0o644, path
    assert list(folder.glob("*.partial")) == []


def test_onnx_vectors_match_torch_on_real_chunks(real_chunks, torch_embedder, offline_cache):
    reference = torch_embedder.encode(real_chunks)
    onnx = load_embedder(backend="onnx", cache_dir=offline_cache[0])
    similarity = cosines(onnx.encode(real_chunks), reference)
    assert similarity.min() >= 0.999, similarity.min()
    assert onnx.tokenize(real_chunks) == torch_embedder.tokenize(real_chunks)


def test_int8_vectors_stay_close_to_torch_on_real_chunks(real_chunks, torch_embedder, offline_cache):
    similarity = cosines(offline_cache[1].encode(real_chunks), torch_embedder.encode(real_chunks))
    assert similarity.min() >= 0.98 and similarity.mean() >= 0.99, (similarity.min(), similarity.mean())


def test_bfloat16_vectors_match_torch_on_real_chunks(real_chunks, torch_embedder):
    bf16 = load_embedder(backend="torch-bf16")
    assert bf16.name == "all-MiniLM-L6-v2+torch-bf16"
    similarity = cosines(bf16.encode(real_chunks[:20]), torch_embedder.encode(real_chunks[:20]))
    assert similarity.min() >= 0.99, similarity.min()
    # Under bfloat16 a batch is padded to a multiple of 32 tokens: each text keeps its own vector.
    alone = np.vstack([bf16.encode([chunk]) for chunk in real_chunks[:6]])
    assert cosines(bf16.encode(real_chunks[:6]), alone).min() >= 0.999


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_encodes_any_batch_shape_in_input_order(backend, offline_cache, torch_embedder):
    embedder = load_embedder(backend=backend, cache_dir=offline_cache[0])
    texts = ["A long sentence about the central bank raising interest rates again this spring. " * 6, "Rain.",
             "Floods in the valley", "x"]
    one_by_one = np.stack([embedder.encode([text])[0] for text in texts])
    together = embedder.encode(texts)
    if backend == "onnx":
        np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    else:  # int8 activations are scaled per batch, so a text's neighbours in its batch move it a little
        assert cosines(together, one_by_one).min() >= 0.97
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-4)
    assert cosines(together, torch_embedder.encode(texts)).min() >= 0.95
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_an_export_killed_mid_write_is_redone_on_the_next_start(tmp_path):
    cache = tmp_path / "cache"
    script = ("import sys; from pathlib import Path; from index.embed import bundled_model_dir, MINILM_SHA256; "
              "from index.onnx_export import exported_model; "
              "exported_model(bundled_model_dir(), MINILM_SHA256['model.safetensors'], quantized=False, "
              "cache_dir=Path(sys.argv[1]))")
    process = subprocess.Popen([sys.executable, "-c", script, str(cache)], cwd=Path(__file__).parents[1],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    partial = []
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in cache.glob(f"*/{FP32_FILE}.*.partial") if p.exists() and p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial, "the export finished before it could be killed mid-write"
    folder = partial[0].parent
    assert not (folder / f"{FP32_FILE}.json").exists()  # nothing recorded: it is not used

    path = exported_model(bundled_model_dir(), MINILM_SHA256["model.safetensors"], quantized=False, cache_dir=cache)
    assert path == folder / FP32_FILE
    assert json.loads((folder / f"{FP32_FILE}.json").read_text())["bytes"] == path.stat().st_size
    assert list(folder.glob("*.partial")) == []


def test_a_damaged_export_is_redone_not_used(offline_cache, tmp_path, real_chunks, torch_embedder, capfd):
    cache = tmp_path / "cache"
    shutil.copytree(offline_cache[0], cache)
    (damaged,) = cache.glob(f"*/{INT8_FILE}")
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    embedder = load_embedder(backend="onnx-int8", cache_dir=cache)
    assert "quantizing the ONNX model to int8" in capfd.readouterr().err
    similarity = cosines(embedder.encode(real_chunks[:10]), torch_embedder.encode(real_chunks[:10]))
    assert similarity.min() >= 0.98


def test_a_cache_where_the_export_cannot_be_made_is_one_clear_error(tmp_path):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    with pytest.raises(ExportError, match="NEWSDESK_MODEL_CACHE") as refused:
        load_embedder(backend="onnx", cache_dir=not_a_folder)
    assert "\n" not in str(refused.value)


def test_backend_names_keep_torch_indexes_as_they_were():
    assert embedding_name("all-MiniLM-L6-v2", "torch") == "all-MiniLM-L6-v2"
    for backend in EMBED_BACKENDS:
        assert backend_of(embedding_name("all-MiniLM-L6-v2", backend)) == backend
    assert backend_of("my+model") == "torch"


def test_auto_gives_a_new_index_bfloat16_only_where_the_cpu_has_amx():
    assert new_index_backend(frozenset({"avx2", "amx_bf16", "amx_tile"})) == "torch-bf16"
    assert new_index_backend(frozenset({"avx2", "avx512_vnni", "avx512_bf16"})) == "onnx-int8"
    assert new_index_backend(frozenset()) == "onnx-int8"


def test_an_unknown_backend_is_a_config_error(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[index]\nembed_backend = "tensorrt"\n')
    from bot.config import load_config

    with pytest.raises(ConfigError, match="index.embed_backend"):
        load_config(config_file)


def test_switching_backends_on_an_index_refuses_and_auto_follows_the_index(tmp_path):
    from bot.service import NewsService, embedder_for, store_for

    config = Config(base_dir=tmp_path)
    config.index.dir = str(tmp_path / "data")
    config.index.embed_backend = "torch"
    service = NewsService(config)
    assert len(service.ingest([str(SEED)]).added) == 1
    service.store.close()

    config.index.embed_backend = "onnx"
    onnx = embedder_for(config)
    with pytest.raises(StoreError, match='embed_backend = "auto" follows it') as refused:
        store_for(config, onnx)
    assert "all-MiniLM-L6-v2+onnx" in str(refused.value) and "\n" not in str(refused.value)

    config.index.embed_backend = "auto"
    fresh = Config(base_dir=tmp_path / "elsewhere")
    assert embedder_for(fresh).name == embedding_name("all-MiniLM-L6-v2", new_index_backend())  # a new index
    followed = embedder_for(config)
    assert followed.name == "all-MiniLM-L6-v2"
    store = store_for(config, followed)
    assert store.counts().articles == 1
    store.close()


def test_the_cli_says_in_one_line_how_to_open_an_index_of_another_backend(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[index]\ndir = "data"\nembed_backend = "torch"\n')
    assert run_newsdesk(config_file, "ingest", str(SEED), "-q").returncode == 0
    config_file.write_text('[index]\ndir = "data"\nembed_backend = "torch-bf16"\n')
    refused = run_newsdesk(config_file, "stats")
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("newsdesk: error:") and 'embed_backend = "auto"' in refused.stderr
    config_file.write_text('[index]\ndir = "data"\n')
    stats = run_newsdesk(config_file, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["model"] == "all-MiniLM-L6-v2"
