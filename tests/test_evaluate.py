"""`newsdesk eval`: SQuAD-style matching, and both evaluations run on small labelled files."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

import numpy as np

from bot.evaluate import QAEvaluation, contains_answer, fit_logistic, indexed_half, squad_normalize

FERRY = ("HARBOUR TOWN (CNN) -- The council voted on Tuesday to rebuild the ferry pier. The pier was damaged by "
         "winter storms last year. Work starts in March and costs 4 million euros.")
MUSEUM = ("The city museum reopened on Saturday after a two-year renovation. Visitors queued for an hour to see "
          "the new dinosaur hall. Entry stays free for children under twelve.")
TRAM = ("Engineers tested the new tram line through the old town on Monday. The first passengers ride it in June. "
        "Tickets will cost the same as the bus.")


def row(n: int, article: str, text: str, question: str, answers: list[str]) -> dict:
    return {"id": f"q{n}", "article_id": article, "title": None, "text": text, "question": question,
            "answers": answers, "source": "Test Wire"}


def test_squad_normalization_ignores_case_punctuation_and_articles_but_not_word_bounds():
    assert squad_normalize("The  Ferry-Pier, rebuilt!") == "ferrypier rebuilt"
    assert contains_answer("They rebuilt the ferry pier.", ["A ferry pier"])
    assert not contains_answer("It has 30 rooms.", ["3"])  # whole words only
    assert not contains_answer("anything", ["", "the"])  # an answer that normalizes to nothing never matches


def test_qa_eval_scores_every_question_in_three_modes(tmp_path, config, fake_embedder):
    rows = [
        row(1, "ferry", FERRY, "What did the council vote to rebuild?", ["the ferry pier"]),
        row(2, "ferry", FERRY, "What damaged the pier?", ["winter storms"]),
        row(3, "museum", MUSEUM, "When did the city museum reopen?", ["Saturday"]),
        row(4, "museum", MUSEUM, "Who gets free entry to the museum?", ["children under twelve"]),
        row(5, "tram", TRAM, "When do the first passengers ride the tram?", ["June"]),
        row(6, "tram", TRAM, "Who built the tram depot?", ["Stadtbahn Works"]),  # in no story
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    result = QAEvaluation(config, embedder=fake_embedder).run(data, progress=False)

    assert (result["n"], result["articles"]) == (6, 3)
    for scores in (result, result["baselines"]["dense"], result["baselines"]["bm25"]):
        # Three short stories: every passage is retrieved, so exactly the five answerable questions hit.
        assert scores["hit_at_10"] == round(5 / 6, 4)
        assert 0 < scores["p50_ms"] <= scores["p95_ms"]
    assert result["answer_recall"] == round(5 / 6, 4)  # figures are reported to four places  # the matching sentence is always quoted
    assert result["citation_precision"] == 1.0  # and cited to its own story
    assert 0 < result["answer_words"] <= 60


def test_the_abstention_split_indexes_half_the_stories_and_asks_every_question(tmp_path, config, fake_embedder):
    stories = {f"story-{n}": text for n, text in enumerate((FERRY, MUSEUM, TRAM) * 3)}
    rows = [row(n, article, text, "What did the council vote to rebuild?", ["the ferry pier"])
            for n, (article, text) in enumerate(stories.items())]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    indexed = {article for article in stories if indexed_half(article)}
    assert 0 < len(indexed) < len(stories)  # both halves have stories

    result = QAEvaluation(config, embedder=fake_embedder, abstention=True).run(data, progress=False)

    assert (result["indexed_articles"], result["articles"]) == (len(indexed), len(stories))
    assert (result["questions_present"], result["questions_absent"]) == (len(indexed), len(stories) - len(indexed))
    curve = result["curve"]
    assert [p["abstain_below"] for p in curve] == [n / 20 for n in range(20)]
    for key in ("answered_absent", "found_present", "recall_present"):  # a higher threshold answers less
        assert all(a[key] >= b[key] for a, b in zip(curve, curve[1:])), key
    # The conftest's threshold is 0: every question about a ferry story finds the ferry sentence.
    assert result["abstain_below"] == 0.0 and result["found_present"] == curve[0]["found_present"] == 1.0
    assert result["recall_present"] == 1.0 and result["purity"] > 0
    assert set(result["refitted"]["weights"]) == {"dense", "lexical", "agreement", "coverage", "names"}


def test_the_logistic_fit_finds_the_signal_that_separates_the_classes():
    rng = np.random.default_rng(3)
    signal, noise = rng.normal(size=400), rng.normal(size=400)
    labels = (signal + 0.3 * rng.normal(size=400) > 0).astype(float)
    weights = fit_logistic(np.column_stack([signal, noise]), labels)
    assert weights[0] > 2 and abs(weights[1]) < 0.5 and abs(weights[2]) < 0.5


def test_qa_eval_runs_both_backends_side_by_side_and_leaves_no_trace(tmp_path, config, fake_embedder, postgres,
                                                                      postgres_url, monkeypatch):
    rows = [row(1, "ferry", FERRY, "What did the council vote to rebuild?", ["the ferry pier"]),
            row(3, "museum", MUSEUM, "When did the city museum reopen?", ["Saturday"]),
            row(5, "tram", TRAM, "When do the first passengers ride the tram?", ["June"])]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setenv("NEWSDESK_DATABASE_URL", postgres_url)

    result = QAEvaluation(config, embedder=fake_embedder, backends=["sqlite", "postgres"]).run(data, progress=False)

    assert result["backend"] == "sqlite" and set(result["backends"]) == {"sqlite", "postgres"}
    sqlite, pg = result["backends"]["sqlite"], result["backends"]["postgres"]
    assert pg["backend"] == "postgres" and pg["chunks"] == sqlite["chunks"] > 0
    for key in ("hit_at_1", "hit_at_5", "answer_recall", "citation_precision"):
        assert pg[key] == sqlite[key] == 1.0, key
    with psycopg.connect(postgres_url) as conn:  # the eval's temporary schema is gone
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'newsdesk_eval_%'").fetchone()[0] == 0


def test_summary_eval_scores_lead_3_in_the_same_run(tmp_path):
    first_three = "The council voted on Tuesday to rebuild the ferry pier. The pier was damaged by winter storms " \
                  "last year. Work starts in March and costs 4 million euros."
    story = first_three + " " + MUSEUM + " " + TRAM
    data = tmp_path / "sum.jsonl"
    data.write_text(json.dumps({"id": "s1", "title": None, "text": story, "summary": first_three}) + "\n",
                    encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text('[index]\ndir = "data"\n')

    done = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config), "eval", "summary", "--data",
                           str(data), "--json", "-q"], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 1 and result["lead3"]["rouge1"] == 100.0  # the reference is the story's opening
    assert 0 < result["rouge1"] <= 100 and set(result) >= {"rouge2", "rougeL"}
