"""Abstention over the bench index: questions the indexed news answers, and questions it does not.

The answerable questions are the bench's own (bench.common.sample_questions: headlines and opening
words of articles of Reuters + BBC). The others are written for the purpose and kept beside this
file (`data/off_corpus_questions.txt`): later events, general knowledge, everyday questions that
neither corpus covers. Every question is answered with the abstention step left out and its
confidence kept, so that one pass gives the figures at every threshold: `answered_absent` (the share
of off-corpus questions that got an answer, lower is better), `found_present` (the share of corpus
questions answered) and `recall_present` (answered and citing the article the question came from).
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Progress, sample_questions
from bot.evaluate import AskedQuestion, abstention_curve

OFF_CORPUS = Path(__file__).parent / "data" / "off_corpus_questions.txt"


def off_corpus_questions(path: Path = OFF_CORPUS) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def run(service, *, questions: int = 200, progress: Progress) -> dict:
    drawn = sample_questions(service.store, questions, seed=23)
    off_corpus = off_corpus_questions()
    progress(f"abstention: {len(drawn)} questions from the corpus, {len(off_corpus)} off it")
    asked = [AskedQuestion.ask(service, question, article_id=article_id, present=True) for question, article_id in drawn]
    asked += [AskedQuestion.ask(service, question, article_id="", present=False) for question in off_corpus]
    threshold = service.answerability.abstain_below
    confidences = [q.confidence for q in asked]
    (at_threshold,) = abstention_curve(asked, confidences, thresholds=[threshold])
    return {
        "questions_present": len(drawn), "questions_absent": len(off_corpus), **at_threshold,
        "answered_off_corpus": [question for question, q in zip(off_corpus, asked[len(drawn):])
                                if q.answered and q.confidence >= threshold],
        "curve": abstention_curve(asked, confidences),
    }
