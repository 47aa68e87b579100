"""Answers that know when the news does not say: the real model over real BBC articles.

A question the indexed news does not answer gets "I found nothing…", with the closest stories as
links when any is near; a question about an indexed story still gets its cited answer. Checked
through the service, the console, the CLI and the real bot on the Discord emulator, and for a
language model that says, in its own words, that its sources do not answer.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
from conftest import run_newsdesk, shared_data
from openai_fake import FakeOpenAI, Reply
from test_discord_bot import followups, with_bot

from bench.discord_emulator import DiscordEmulator
from bot.answerability import AnswerabilityCheck, Evidence, names_and_numbers
from bot.config import Config
from bot.console import Console
from bot.llm import says_no_answer
from bot.answer_types import CLOSEST_STORIES
from bot.service import NOTHING_ANSWERS, NOTHING_ON_TOPIC, NewsService

ARTICLES = 40  # the first BBC business stories: enough for neighbours, quick to embed
NOT_IN_THE_NEWS = [
    "What is the capital of Mongolia?",
    "Who won the 2018 FIFA World Cup final?",
    "What show is Jon Hamm in?",
    "How do you make a sourdough starter?",
    "Who won the Eurovision Song Contest in 2021?",
]


@pytest.fixture(scope="module")
def bbc(tmp_path_factory) -> tuple[list[dict], str]:
    """The first BBC articles, and a JSONL file of them as an operator would ingest it (with links,
    which the corpus lacks)."""
    with shared_data("bbc/corpus.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(ARTICLES), handle)]
    for row in rows:
        row["url"] = f"https://bbc.test/{row['id']}"
    path = tmp_path_factory.mktemp("news") / "bbc.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rows, str(path)


@pytest.fixture(scope="module")
def real_service(tmp_path_factory, bbc) -> NewsService:
    """A service with the real model and the default abstention settings over the BBC articles."""
    config = Config(base_dir=tmp_path_factory.mktemp("abstention"))
    config.index.dir = str(config.base_dir / "data")
    service = NewsService(config)
    report = service.ingest([bbc[1]])
    assert len(report.added) >= ARTICLES - 2, report.failed  # a syndicated copy may be folded
    yield service
    service.store.close()


def headline_question(row: dict) -> str:
    return f"What happened with {row['title']}?"


@pytest.mark.parametrize("question", NOT_IN_THE_NEWS)
def test_a_question_the_news_does_not_answer_gets_no_quotes(real_service, question):
    answer = real_service.ask(question)

    assert not answer.found and answer.citations == []
    assert answer.text == NOTHING_ANSWERS


def test_questions_about_indexed_stories_still_get_their_cited_answers(real_service, bbc):
    rows = bbc[0]
    answered = 0
    for row in rows[:10]:
        answer = real_service.ask(headline_question(row))
        if answer.found:
            answered += 1
            assert re.search(r"\[\d+\]", answer.text)
            assert answer.citations and not answer.closest
    assert answered >= 9


def test_a_near_miss_offers_the_closest_stories_as_links_not_as_sources(real_service):
    # The stories are about business in 2004: a question on a company they name, asked about a later year.
    answer = real_service.ask("What did Yukos announce in 2015?")

    assert not answer.found and answer.citations == [] and answer.text == NOTHING_ANSWERS
    assert 0 < len(answer.closest) <= real_service.config.answer.closest_stories
    assert any("Yukos" in r.title for r in answer.closest)
    assert answer.to_json()["closest"][0]["url"] == answer.closest[0].url


def test_a_topic_with_nothing_indexed_says_so(real_service):
    assert real_service.summarize_topic("Eurovision Song Contest").text.startswith(NOTHING_ON_TOPIC)
    assert real_service.summarize_topic("oil prices").found


def test_the_console_says_so_and_lists_the_closest_stories(real_service):
    assert Console(real_service).respond("What is the capital of Mongolia?").startswith(NOTHING_ANSWERS)
    shown = Console(real_service).respond("What did Yukos announce in 2015?")
    assert shown.startswith(NOTHING_ANSWERS + "\n" + CLOSEST_STORIES)
    assert "Yukos" in shown and "https://bbc.test/" in shown


def test_the_cli_answers_json_with_found_false_and_the_closest_stories(tmp_path, bbc):
    config = tmp_path / "config.toml"
    config.write_text(f'[index]\ndir = "{tmp_path / "data"}"\n', encoding="utf-8")
    assert run_newsdesk(config, "ingest", bbc[1]).returncode == 0

    result = run_newsdesk(config, "ask", "--json", "What did Yukos announce in 2015?")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["found"] is False and answer["citations"] == []
    assert answer["answer"] == NOTHING_ANSWERS and answer["closest"]
    plain = run_newsdesk(config, "ask", "Who won the 2018 FIFA World Cup final?")
    assert plain.returncode == 0 and plain.stdout.startswith(NOTHING_ANSWERS)


def test_discord_shows_a_short_message_with_links_and_no_sources_embed(real_service):
    config = copy.deepcopy(real_service.config)
    sent = {}
    with DiscordEmulator(guilds=1) as emulator:
        config.discord.api_base, config.discord.gateway_url = emulator.api_base, emulator.gateway_url
        config.discord.user_requests = config.discord.server_requests = 0

        async def scenario(bot):
            for name, question in (("near", "What did Yukos announce in 2015?"),
                                   ("far", "What is the capital of Mongolia?")):
                sent[name] = await emulator.interaction("ask", {"question": question}, user=emulator.user("alice"))
                await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[name]['token']}")

        with_bot(emulator, config, real_service, scenario)
        (near,) = followups(emulator, sent["near"])
        (far,) = followups(emulator, sent["far"])
    assert near.body["content"].startswith(f"{NOTHING_ANSWERS} {CLOSEST_STORIES}")
    assert not near.body.get("embeds")
    # Links in <> are not unfurled into previews: the reply stays a short message.
    links = re.findall(r"\[([^\]]+)\]\(<(https://bbc\.test/[^>]+)>\)", near.body["content"])
    assert links and any("Yukos" in label for label, _ in links)
    assert far.body["content"] == NOTHING_ANSWERS and not far.body.get("embeds")


@pytest.mark.parametrize("reply", [
    "The sources do not answer this question.",
    "I'm sorry, but the provided sources don't mention who won the 2018 World Cup.",
    "None of the articles say anything about Mongolia's capital.",
    "There is no information about this in the sources.",
])
def test_a_model_that_says_the_sources_do_not_answer_gives_the_abstention(real_service, reply):
    config = copy.deepcopy(real_service.config)
    config.llm.base_url, config.llm.model = "http://unused.invalid/v1", "test-model"
    config.answer.abstain_below = 0.0  # the model, not the check, decides here
    with FakeOpenAI([Reply(reply)]) as fake:
        config.llm.base_url = fake.base_url
        service = NewsService(config, embedder=real_service.embedder)
        try:
            answer = service.ask("Who won the 2018 FIFA World Cup final?")
        finally:
            service.store.close()
    assert (answer.mode, answer.found, answer.citations, answer.note) == ("llm", False, [], None)
    assert answer.text.startswith(NOTHING_ANSWERS)


def test_only_an_uncited_reply_about_the_sources_counts_as_the_model_saying_they_do_not_answer():
    assert says_no_answer("The sources don't specify the date of the vote.")
    assert says_no_answer("I cannot determine that from the provided articles.")
    assert not says_no_answer("Yukos filed for bankruptcy in Houston [1]. The sources do not say what happens next.")
    assert not says_no_answer("Oil prices rose on Friday as traders worried about supplies.")
    assert not says_no_answer("The sources do not mention it. " + "Yet there is much to say. " * 20)
    # News without citations is a failed answer (the extractive one is shown), not a refusal.
    assert not says_no_answer("Police could not find the suspect, officials said.")
    assert not says_no_answer("No information about the victims has been released.")
    assert not says_no_answer("The company cannot determine the cause of the outage yet.")


def test_a_follow_up_is_weighed_with_the_question_it_follows(real_service, bbc):
    """"Why?" alone has nothing to weigh; asked after a question it is that question's follow-up.
    (A language model answers it: the extractive engine needs words to match.)"""
    row = bbc[0][1]
    first = headline_question(row)
    opening = re.split(r"(?<=[.!?])\s+", row["text"].strip())[0]
    config = copy.deepcopy(real_service.config)
    with FakeOpenAI([Reply(f"{opening} [1]")]) as fake:
        config.llm.base_url, config.llm.model = fake.base_url, "test-model"
        service = NewsService(config, embedder=real_service.embedder)
        try:
            alone = service.ask("Why?")
            follow_up = service.ask("Why?", history=[first])
        finally:
            service.store.close()
    assert not alone.found and len(fake.requests) == 1  # only the follow-up reached the model
    assert follow_up.found and follow_up.mode == "llm" and follow_up.citations[0].url == row["url"]


def test_a_new_question_asked_in_a_thread_is_weighed_on_its_own_words(real_service, bbc):
    """Searched with the question it follows, a follow-up's passages are that story's; a question
    about something else must still find its own words there."""
    rows = bbc[0]
    # Each was answered with quotes from the story of the question before it (the dollar, oil
    # prices, Japan's economy) when the follow-up was weighed on both questions' words alone.
    for earlier, question in ((rows[1], "What is the capital of Mongolia?"),
                              (rows[3], "What is the capital of Mongolia?"),
                              (rows[5], "What did the court decide about the election?")):
        answer = real_service.ask(question, history=[headline_question(earlier)])
        assert (answer.found, answer.citations, answer.text) == (False, [], NOTHING_ANSWERS), (earlier["title"], question)
    on_topic = real_service.ask("What did the company say?", history=[headline_question(rows[0])])
    assert on_topic.found and on_topic.citations[0].url == rows[0]["url"]


def test_a_broad_question_about_the_news_is_answered(real_service):
    for question in ("What happened this week?", "what happened today?"):
        answer = real_service.ask(question)
        assert answer.found and answer.citations, question


def test_a_model_that_fails_leaves_its_note_on_the_reply(real_service, bbc):
    config = copy.deepcopy(real_service.config)
    config.llm.max_retries = 0
    with FakeOpenAI([Reply.server_error()]) as fake:
        config.llm.base_url, config.llm.model = fake.base_url, "test-model"
        service = NewsService(config, embedder=real_service.embedder)
        try:
            # The check passes, the model fails, and the extractive fallback quotes nothing: a
            # question of words the stories lack around a name they have.
            answer = service.answer_from("Yukos?", [], abstain=False)
            answered = service.ask(headline_question(bbc[0][2]))
        finally:
            service.store.close()
    assert not answer.found
    assert answered.found and answered.mode == "extractive" and "language model failed" in answered.note


def test_a_topic_the_model_has_nothing_on_says_so_with_the_closest_stories(real_service):
    config = copy.deepcopy(real_service.config)
    config.answer.abstain_below = 0.0
    with FakeOpenAI([Reply("The sources do not answer this question.")]) as fake:
        config.llm.base_url, config.llm.model = fake.base_url, "test-model"
        service = NewsService(config, embedder=real_service.embedder)
        try:
            answer = service.summarize_topic("Yukos")
        finally:
            service.store.close()
    assert (answer.found, answer.mode, answer.text) == (False, "llm", NOTHING_ON_TOPIC)


def test_no_closest_stories_when_set_to_none(real_service):
    config = copy.deepcopy(real_service.config)
    config.answer.closest_stories = 0
    service = NewsService(config, embedder=real_service.embedder)
    try:
        answer = service.ask("What did Yukos announce in 2015?")
    finally:
        service.store.close()
    assert not answer.found and answer.closest == []


def test_names_and_numbers_are_what_a_question_rests_on():
    assert names_and_numbers("Who won the 2018 FIFA World Cup final?") == {"2018", "fifa", "world", "cup"}
    assert names_and_numbers("what did he say about it?") == set()


def test_the_threshold_is_checked_and_the_confidence_grows_with_the_evidence():
    with pytest.raises(ValueError, match="abstain_below"):
        AnswerabilityCheck(abstain_below=1.0)
    weak, strong = Evidence(0.2, 1.0, 0.0, 0.3, 0.0), Evidence(0.7, 6.0, 1.0, 1.0, 1.0)
    assert AnswerabilityCheck.confidence(weak) < 0.1 < 0.9 < AnswerabilityCheck.confidence(strong)
