"""Each stage of the answer pipeline (rag/answer/pipeline.py) on its own, with the fakes of
rag/models/fakes.py: Retrieve, Read, Cite, Compose, Judge, the one place "not found" is
decided, and the model profiles the pipeline is wired from. Milliseconds each; the real
models answer end to end in test_answer.py, test_confidence.py, test_translate.py and the rest."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest

from rag import RAG
from rag.answer import confidence as conf
from rag.answer.pipeline import ENGLISH_ONLY, AnswerPipeline, Cite, Question, Retrieve
from rag.answer.prompt import ABSTAIN, CLAUSE_ENDS, GROUNDED
from rag.core.errors import RagError
from rag.core.present import EMPTY_INDEX, MAY_NOT_SAY, NOT_FOUND, UNSUPPORTED
from rag.core.records import Answer, Draft, Hit
from rag.core.settings import Settings
from rag.models.catalog import (
    CHAT_ANSWER_K,
    ENGLISH,
    FAKE,
    LOCAL_ANSWER_K,
    MULTILINGUAL,
    decoder_profile,
    encoder_profile,
)
from rag.models.fakes import FakeDecoder, FakeEncoder

FRESNEL = "The Fresnel lens was invented by Augustin-Jean Fresnel in 1822."
BEES = "Honey bees communicate the direction of flowers with a waggle dance."
ETNA = "Mount Etna on Sicily is the most active volcano in Europe."


class Recorder(FakeDecoder):
    """A FakeDecoder that also records the options each stream and score call got."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.options: list[dict] = []
        self.scored: list[list[str]] = []

    def stream(self, messages, **options):
        self.options.append(options)
        return super().stream(messages, **options)

    def score(self, messages, prefix, candidates):
        self.scored.append(list(candidates))
        return super().score(messages, prefix, candidates)


class FakeRetriever:
    """The retriever interface the pipeline uses (search, is_empty, next_chunk), scripted."""

    def __init__(self, hits: list[Hit] | None = None, following: dict | None = None):
        self.hits, self.following, self.searched = hits or [], following or {}, []

    def search(self, query, k, mode, diverse, asked=None):
        self.searched.append((query, asked))
        return [h for h in self.hits][:k]

    def is_empty(self):
        return False

    def next_chunk(self, chunk_id):
        return self.following.get(chunk_id)


def hit(n: int, text: str, dense: float = 0.6, source: str | None = None, **kw) -> Hit:
    return Hit(n, round(1.0 - n / 10, 2), source or f"/docs/p{n}.txt", kw.pop("page", None), kw.pop("heading", ""),
               text, n, kw.pop("start", 0), kw.pop("end", len(text)), dense)


def make(retriever, decoder=None, encoder=ENGLISH, generator=FAKE, translate=None, **settings):
    """An AnswerPipeline from parts; the decoder factory counts how often it was called."""
    calls = []

    def factory():
        calls.append(1)
        return decoder if decoder is not None else FakeDecoder()

    p = AnswerPipeline(retriever, translate, factory, FakeEncoder(), encoder_profile(encoder),
                       decoder_profile(generator), Settings(**settings))
    p.loads = calls
    return p


def ask(p: AnswerPipeline, question: str, k: int = 4) -> tuple[Question, list, Answer]:
    q = Question(question, question, question, k, "hybrid", 48)
    *drafts, answer = list(p.stream(q))
    return q, drafts, answer


# --- Retrieve ------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder, reads_translation", [(ENGLISH, True), (MULTILINGUAL, False)])
def test_retrieve_searches_the_translation(encoder, reads_translation):
    """The translation is searched (the question's own words still passed as `asked`); only an
    English-only index's later stages read the translation instead of the question."""
    asked, english = "谁发明了菲涅耳透镜？", "Who invented the Fresnel lens?"
    retriever = FakeRetriever([hit(1, FRESNEL)])
    p = make(retriever, encoder=encoder, translate=lambda query: english if query == asked else None)
    q = Question(asked, asked, asked, 4, "hybrid", 48)
    p.retrieve.run(q)
    assert retriever.searched == [(english, asked)]
    assert q.searched == english and q.text == (english if reads_translation else asked)
    assert q.hits[0].text == FRESNEL and "translate_ms" in q.timer.marks and "retrieve_ms" in q.timer.marks


def test_retrieve_searches_as_asked_without_a_translation():
    retriever = FakeRetriever([hit(1, FRESNEL)])
    q = Question("Who invented it?", "Who invented the Fresnel lens?", "Who invented the Fresnel lens?", 4,
                 "hybrid", 48)
    Retrieve(retriever, lambda query: None, diverse=True).run(q)
    assert retriever.searched == [("Who invented the Fresnel lens?", None)]
    assert q.searched == "" and q.text == "Who invented the Fresnel lens?" and "translate_ms" not in q.timer.marks


@pytest.fixture(scope="module")
def fake_rag(tmp_path_factory):
    """A small real index (Store, FAISS, FTS5) built with the fake encoder."""
    from tests.conftest import CORPUS

    root = tmp_path_factory.mktemp("stages") / "docs"
    for name, text in CORPUS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    rag = RAG(root.parent / "index", encoder="fake", generator="fake", translator="off")
    assert rag.ingest([root]).added == 3
    return rag


def test_retrieve_hits_from_a_real_store(fake_rag):
    q = Question("Who invented the Fresnel lens?", "Who invented the Fresnel lens?",
                 "Who invented the Fresnel lens?", 2, "hybrid", 48)
    Retrieve(fake_rag.retriever, None, diverse=True).run(q)
    assert [h.rank for h in q.hits] == [1, 2]
    assert q.hits[0].source.endswith("lighthouse.md") and q.hits[0].heading == "Lighthouses > Fresnel lens"
    assert q.hits[0].score >= q.hits[1].score and q.hits[0].dense > q.hits[1].dense


# --- Read ----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer_k", [1, 3])
def test_read_prompt_holds_answer_k_passages(answer_k):
    hits = [hit(n, f"Passage number {n} is about lighthouse keeper {n}.") for n in range(1, 6)]
    decoder = Recorder()
    q, _, answer = ask(make(FakeRetriever(hits), decoder, answer_k=answer_k), "Who was lighthouse keeper 1?", k=5)
    assert [h.chunk_id for h, _ in q.passages] == list(range(1, answer_k + 1))
    shown = decoder.prompts[0][-1]["content"]
    assert f"[{answer_k}] (p{answer_k}.txt)" in shown and f"[{answer_k + 1}]" not in shown
    assert [s.text for s in answer.sources] == [h.text for h in hits]  # the rest as further reading


@pytest.mark.parametrize("copies, copy, abstain, question, copy_from, example", [
    (True, True, "on", "Who invented the lens?", [FRESNEL, ABSTAIN], True),  # a local model copies
    (True, True, "off", "Who invented the lens?", [FRESNEL], False),  # "unknown" only where it may abstain
    (True, True, "on", "谁发明了透镜？", [FRESNEL], False),  # no "unknown" example for Chinese questions
    (True, False, "on", "Who invented the lens?", None, True),  # copy = false: free words
    (False, True, "auto", "Who invented the lens?", None, False),  # a chat model writes freely, grounded
], ids=["local", "no-abstain", "chinese", "copy-off", "chat"])
def test_read_copy_options(copies, copy, abstain, question, copy_from, example):
    decoder = Recorder(replies=["Augustin-Jean Fresnel"], copies=copies)
    ask(make(FakeRetriever([hit(1, FRESNEL)]), decoder, copy=copy, abstain=abstain), question)
    options, prompt = decoder.options[0], decoder.prompts[0]
    assert options.get("copy_from") == copy_from
    if copy_from:
        # it stops at a clause's end and may not start with the question's own words
        own = "发明" if question.startswith("谁") else "lens"
        assert all(stop in options["stop"] for stop in CLAUSE_ENDS) and own in options["avoid_first"].split()
    else:
        assert "avoid_first" not in options and not set(CLAUSE_ENDS) & set(options["stop"])
    assert (prompt[0]["content"] == GROUNDED) == (not copies)  # a chat model gets the instruction alone
    assert any(m["content"] == f"Answer: {ABSTAIN}" for m in prompt) == example  # the worked "unknown"


@pytest.mark.parametrize("reply", ["unknown", "Unknown.", ""])
def test_read_unknown_is_not_found(reply):
    p = make(FakeRetriever([hit(1, FRESNEL)]), FakeDecoder(replies=[reply]), abstain="on")
    q, _, answer = ask(p, "Who designed the keeper's uniform?")
    assert q.span == "" and "decoded_ms" in q.timer.marks
    assert not answer.found and answer.text == NOT_FOUND and answer.sources and not answer.citations
    assert q.composed is None and q.confidence is None  # nothing composed or judged after


def test_read_a_decoder_exception_is_the_failure_note_and_the_closest_passages():
    p = make(FakeRetriever([hit(1, FRESNEL), hit(2, BEES)]), FakeDecoder(replies=[RuntimeError("out of memory")]))
    q, drafts, answer = ask(p, "Who invented the Fresnel lens?")
    assert drafts == ["partial"] and all(isinstance(d, Draft) for d in drafts)  # what streamed before it failed
    assert q.failure.startswith("The decoder failed on this question (RuntimeError: out of memory).")
    assert not answer.found and answer.text == q.failure and answer.text.endswith("The closest passages follow.")
    assert [s.text for s in answer.sources] == [FRESNEL, BEES] and not answer.citations


def test_read_a_rag_error_is_not_swallowed():
    """rag's own errors (a model server that cannot be reached) reach the door that asked."""
    p = make(FakeRetriever([hit(1, FRESNEL)]), FakeDecoder(replies=[RagError("cannot reach the server")]))
    with pytest.raises(RagError, match="cannot reach the server"):
        ask(p, "Who invented the Fresnel lens?")


# --- Cite ----------------------------------------------------------------------------------

def test_cite_the_passage_of_the_copied_span():
    q = Question("Which volcano?", "Which volcano?", "Which volcano?", 4, "hybrid", 48,
                 hits=[hit(1, f"{BEES} They dance in the hive."), hit(2, f"Sicily has a coast. {ETNA}")])
    q.passages = [(h, h.text) for h in q.hits]
    q.span = "Mount Etna on Sicily"
    Cite(copies=True).run(q)
    assert [s.cited for s in q.sources] == [False, True]
    assert q.sources[1].evidence == ETNA  # the passage's sentence that holds the span


@pytest.mark.parametrize("marker", ["[2]", "[1]", ""])
def test_cite_a_free_answer_sentence_by_sentence(marker):
    """A chat model's [n] stays only where passage n supports the sentence (else the passage that
    does is cited); a sentence no passage supports is kept, marked unsupported."""
    q = Question("Who invented the lens?", "Who invented the lens?", "", 4, "hybrid", 48,
                 hits=[hit(1, BEES), hit(2, FRESNEL)])
    q.passages = [(h, h.text) for h in q.hits]
    q.span = f"Augustin-Jean Fresnel invented the Fresnel lens in 1822{' ' + marker if marker else ''}. " \
             "The keepers wore blue uniforms [1]."
    Cite(copies=False).run(q)
    first, second = q.sentences
    assert first.text == "Augustin-Jean Fresnel invented the Fresnel lens in 1822." and first.cites == [2]
    assert first.supported and not second.supported and second.cites == []
    assert [s.cited for s in q.sources] == [False, True] and q.sources[1].evidence == FRESNEL


def test_a_free_answer_through_the_pipeline_is_checked_not_composed():
    decoder = FakeDecoder(replies=["Fresnel invented the lens in 1822 [1]. It was made of gold [1]."], copies=False)
    q, _, answer = ask(make(FakeRetriever([hit(1, FRESNEL), hit(2, BEES)]), decoder), "Who invented the lens?")
    assert answer.found and q.composed is None and q.confidence is None  # no Compose, no Judge
    assert answer.text == f"Fresnel invented the lens in 1822. [1] It was made of gold. {UNSUPPORTED}"
    assert answer.citations == [1]


# --- Compose -------------------------------------------------------------------------------

PASSAGE = f"Lighthouses guided ships for centuries. {FRESNEL} Keepers trimmed the wicks every night."


def test_compose_builds_the_statement_in_the_cited_sentence():
    p = make(FakeRetriever([hit(1, BEES), hit(2, PASSAGE)]), Recorder(replies=["Augustin-Jean Fresnel"]),
             answer_k=2)
    q, drafts, answer = ask(p, "Who invented the Fresnel lens?")
    assert "".join(drafts) == "Augustin-Jean Fresnel" and not q.respanned
    assert answer.found and answer.short == "Augustin-Jean Fresnel" and answer.supporting == [FRESNEL]
    assert answer.text == f"**Augustin-Jean Fresnel**: {FRESNEL} [2]"
    assert answer.citations == [2] and answer.sources[1].evidence == FRESNEL


def test_compose_copies_again_from_the_sentence_the_encoder_chose():
    """The decoder copied from a sentence far from the question: the check overrules it and
    the decoder copies again, from the closer sentence alone."""
    decoder = Recorder(replies=["the wicks", "Augustin-Jean Fresnel"])
    q, _, answer = ask(make(FakeRetriever([hit(1, PASSAGE)]), decoder), "Who invented the Fresnel lens?")
    assert q.respanned == FRESNEL and q.copied == "Augustin-Jean Fresnel"
    assert decoder.options[1]["copy_from"] == [FRESNEL]  # the second copy reads that sentence only
    assert answer.short == "Augustin-Jean Fresnel" and answer.supporting == [FRESNEL]


CUT = "Lighthouses guided ships. The lens of the Bell Rock light was ground by hand in the workshop of"


OVERLAP = len(CUT) - len("workshop of ")  # where the next passage starts: it repeats the last words


@pytest.mark.parametrize("passage, following, said", [
    (CUT, SimpleNamespace(text="workshop of Henry-Lepaute in Paris. It took a year.", start=OVERLAP, page=None,
                          heading=""),
     "The lens of the Bell Rock light was ground by hand in the workshop of Henry-Lepaute in Paris."),
    ("Lighthouses guided ships. The lens was checked with these tools:",  # a list announced at the end
     SimpleNamespace(text="- a spirit level\n- a brass rule\n- a lamp\n- a file", start=200, page=None, heading=""),
     "The lens was checked with these tools: a spirit level a brass rule a lamp"),
    (CUT, SimpleNamespace(text="workshop of Henry-Lepaute in Paris.", start=OVERLAP, page=2, heading=""),  # another page
     "The lens of the Bell Rock light was ground by hand in the workshop of"),
], ids=["cut-sentence", "announced-list", "next-page"])
def test_compose_completes_a_cut_sentence_from_the_next_passage(passage, following, said):
    first = hit(1, passage, start=0, end=len(passage))
    decoder = FakeDecoder(replies=[passage.split(". ")[1].split()[1]])  # a word of the last sentence
    p = make(FakeRetriever([first], following={1: following}), decoder)
    q, _, answer = ask(p, "What happened to the lens?")
    assert answer.found and " ".join(q.composed.said) == said
    assert answer.sentences[-1].cites == [1] and answer.sources[0].cited


@pytest.mark.parametrize("overlap", [0, 4])  # with an overlap, each passage's start must be found in order
def test_compose_completes_a_cut_sentence_from_a_real_store(tmp_path, overlap):
    """The passage that follows in the document comes from the index (Store.next_chunk)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    masters = " ".join(f"master{i}" for i in range(12))
    (docs / "lens.txt").write_text(f"The lamp was lit. The lens of the Bell Rock light was ground by hand in the "
                                   f"workshop of {masters} in Paris. Keepers trimmed wicks.")
    rag = RAG(tmp_path / "ix", encoder="fake", generator="fake", translator="off", chunk_size=24,
              chunk_overlap=overlap)
    rag.ingest([docs])
    first = rag.search("Bell Rock lens ground hand workshop", k=1, mode="keyword")[0]
    assert first.text.startswith("The lens") and first.text.endswith("master8")  # cut by the passage's end
    answer = ask(make(rag.retriever, FakeDecoder(replies=["Bell Rock"])), "Where was the Bell Rock lens ground?")[2]
    assert answer.found and answer.supporting == [
        f"The lens of the Bell Rock light was ground by hand in the workshop of {masters} in Paris."]


# --- Judge ---------------------------------------------------------------------------------

def judged(scores):
    decoder = Recorder(replies=["Augustin-Jean Fresnel"], scores=scores)
    q, _, answer = ask(make(FakeRetriever([hit(1, PASSAGE), hit(2, BEES, dense=0.1)]), decoder, min_confidence=0),
                       "Who invented the Fresnel lens?")
    return decoder, q, answer


def test_judge_confidence_follows_the_decoder_scores():
    sure_decoder, sure, sure_answer = judged([[-0.05, -0.05], [-9.0]])  # the span likely, "unknown" not
    _, doubtful, doubtful_answer = judged([[-6.0, -7.0], [-0.1]])  # "unknown" likelier than the span
    assert sure_decoder.scored[0][:2] == ["Augustin-Jean Fresnel", conf.UNKNOWN]  # then the alternatives
    assert sure.signals["scores"][:2] == [[-0.05, -0.05], [-9.0]]
    assert 0.0 < doubtful.confidence < sure.confidence < 1.0
    assert sure_answer.confidence == sure.confidence and doubtful_answer.found


def test_judge_without_decoder_scores_uses_the_fallback_model():
    """A decoder that cannot score (transformers) gets the model fitted without its signals."""
    _, q, answer = judged(None)
    assert "scores" not in q.signals and q.confidence is not None
    assert q.confidence == conf.probability(q.signals, "en")
    assert answer.confidence == q.confidence


# --- refusals: AnswerPipeline.refusal -----------------------------------------------------

class EmptyRetriever(FakeRetriever):
    def is_empty(self):
        return True


@pytest.mark.parametrize("retriever, settings, note", [
    (None, {}, EMPTY_INDEX),  # no index yet
    (EmptyRetriever(), {}, EMPTY_INDEX),  # an index without documents
    (FakeRetriever([]), {}, NOT_FOUND),  # nothing retrieved
    (FakeRetriever([hit(1, FRESNEL, dense=0.3)]), {"min_score": 0.5}, NOT_FOUND),  # the best passage too far
], ids=["no-index", "empty-index", "no-hits", "min-score"])
def test_refusals_before_reading_never_load_the_decoder(retriever, settings, note):
    p = make(retriever, **settings)
    q, drafts, answer = ask(p, "Who invented the Fresnel lens?")
    assert not answer.found and answer.text == note and drafts == []
    assert p.loads == []  # the decoder was never made, let alone called
    assert not answer.citations and [s.text for s in answer.sources] == [h.text for h in q.hits]  # the closest


def test_min_score_is_the_encoders_unless_set():
    top = FakeRetriever([hit(1, FRESNEL, dense=0.5)])  # under e5's 0.80, over MiniLM's 0.20
    assert make(top, encoder=MULTILINGUAL).min_score == encoder_profile(MULTILINGUAL).min_score
    assert not ask(make(top, encoder=MULTILINGUAL), "Who invented the Fresnel lens?")[2].found
    assert ask(make(top, encoder=ENGLISH), "Who invented the Fresnel lens?")[2].found
    assert ask(make(top, encoder=MULTILINGUAL, min_score=0.4, min_confidence=0), "Who invented the Fresnel lens?")[2].found


def test_an_english_only_index_says_why_a_question_in_another_script_found_nothing():
    far = FakeRetriever([hit(1, FRESNEL, dense=0.05)])
    chinese = ask(make(far, encoder=ENGLISH), "谁发明了菲涅耳透镜？")[2]
    assert chinese.text == NOT_FOUND + ENGLISH_ONLY and "multilingual-e5-small" in chinese.text
    assert ask(make(far, encoder=ENGLISH), "Who invented the lens?")[2].text == NOT_FOUND
    assert ask(make(far, encoder=MULTILINGUAL), "谁发明了菲涅耳透镜？")[2].text == NOT_FOUND


def test_min_support_refuses_a_sentence_too_far_from_the_question():
    answered = judged(None)[2]
    strict = ask(make(FakeRetriever([hit(1, PASSAGE)]), FakeDecoder(replies=["Augustin-Jean Fresnel"]),
                      min_support=answered.support + 0.01), "Who invented the Fresnel lens?")[2]
    assert answered.found and not strict.found and strict.text == NOT_FOUND
    assert strict.support == pytest.approx(answered.support) and not strict.citations


def test_min_confidence_says_the_documents_may_not_say_this():
    decoder = FakeDecoder(replies=["Augustin-Jean Fresnel"], scores=[[-6.0, -7.0], [-0.1]])
    p = make(FakeRetriever([hit(1, PASSAGE, source="/docs/lighthouse.md"), hit(2, BEES, dense=0.1)]), decoder,
             min_confidence=0.99)
    q, _, answer = ask(p, "Who invented the Fresnel lens?")
    assert not answer.found and answer.note == MAY_NOT_SAY and not answer.citations
    assert answer.confidence == q.confidence < 0.99  # still told
    assert answer.text == "The documents may not say this; the closest passages are [1] lighthouse.md; [2] p2.txt."


# --- profiles ------------------------------------------------------------------------------

@pytest.mark.parametrize("generator, answer_k, copies, abstains", [
    ("gemma3-270m", LOCAL_ANSWER_K, True, True),  # measured: the "unknown" example helps Gemma
    ("smollm2", LOCAL_ANSWER_K, True, False),  # ... and sinks SmolLM2
    ("qwen2.5-0.5b", LOCAL_ANSWER_K, True, False),
    ("openai:gpt-4o-mini", CHAT_ANSWER_K, False, False),
])
def test_decoder_profiles_wire_the_pipeline(generator, answer_k, copies, abstains):
    profile = decoder_profile(generator)
    assert (profile.answer_k, profile.copies, profile.abstains) == (answer_k, copies, abstains)
    assert (LOCAL_ANSWER_K, CHAT_ANSWER_K) == (1, 4)
    auto = make(FakeRetriever(), generator=generator)
    assert (auto.answer_k, auto.abstain) == (answer_k, abstains)
    assert (make(FakeRetriever(), generator=generator, answer_k=2, abstain="off").answer_k,
            make(FakeRetriever(), generator=generator, abstain="on").abstain) == (2, True)
    assert decoder_profile(generator.split(":")[-1], backend="openai").answer_k == CHAT_ANSWER_K


def test_a_chat_model_always_abstains_and_a_local_one_as_set():
    """A chat model's grounded prompt always allows "unknown"; a local model's as its profile says."""
    chat = Recorder(replies=["unknown"], copies=False)
    answer = ask(make(FakeRetriever([hit(1, FRESNEL)]), chat, generator="openai:x"), "Who?")[2]
    assert not answer.found and ABSTAIN in chat.prompts[0][0]["content"]
    local = Recorder(replies=["Augustin-Jean Fresnel"])
    ask(make(FakeRetriever([hit(1, FRESNEL)]), local, generator="smollm2"), "Who invented the lens?")
    assert local.options[0]["copy_from"] == [FRESNEL]  # SmolLM2: no "unknown" to copy


def test_stream_yields_drafts_then_one_answer(fake_rag):
    """The facade with the fakes: pieces of the copied span stream as Drafts, then the Answer."""
    *drafts, answer = list(fake_rag.stream("Who invented the Fresnel lens?"))
    assert drafts and all(isinstance(d, Draft) for d in drafts) and isinstance(answer, Answer)
    assert "".join(drafts) in answer.sources[0].text and answer.found
    assert answer.sources[0].source.endswith("lighthouse.md") and answer.citations == [1]
    t = answer.timings
    assert 0 < t.retrieve_ms <= t.first_token_ms <= t.total_ms and t.tokens >= 1


# --- a question in another language than the passages ------------------------------------------

def _across(translation: str | None, cross=None, encoder=MULTILINGUAL, **settings):
    """An index of one English passage (multilingual unless `encoder` says otherwise) whose
    best hit's cosine to the question as asked (Chinese) is low, as a multilingual encoder puts
    it; `translation` is what the question translator gives."""
    asked = "谁发明了菲涅耳透镜？"
    retriever = FakeRetriever([hit(1, FRESNEL, dense=0.1), hit(2, BEES, dense=0.05)])
    index_decoder = FakeDecoder(["INDEX DECODER"])
    p = AnswerPipeline(retriever, (lambda query: translation), lambda: index_decoder, FakeEncoder(),
                       encoder_profile(encoder), decoder_profile(FAKE), Settings(**{"min_confidence": 0, **settings}),
                       cross_decoder=(lambda: cross) if cross is not None else None, language="English")
    q = Question(asked, asked, asked, 4, "hybrid", 48)
    *_, answer = list(p.stream(q))
    return q, answer


def test_a_translated_question_is_judged_by_its_translation_s_nearness():
    """The not-found threshold was set on questions in the passages' language: a question in
    another language is compared by its translation's cosine (the nearer of the two)."""
    english = "Who invented the Fresnel lens?"
    near = float(FakeEncoder().similarities(english, [FRESNEL])[0])
    assert near > 0.3  # (the fake encoder's bag of words: shared words)
    q, answer = _across(None, min_score=0.3)
    assert not answer.found and answer.note == NOT_FOUND and q.top_dense == 0.1  # as asked: too far
    q, answer = _across(english, cross=FakeDecoder(), min_score=0.3)
    assert q.crosslingual and q.top_dense == pytest.approx(near) and answer.found
    assert "Augustin-Jean Fresnel" in answer.short or "Fresnel" in " ".join(answer.supporting)


def test_a_translated_question_is_read_by_the_translator_s_model_and_says_its_language():
    q, answer = _across("Who invented the Fresnel lens?", cross=FakeDecoder(), min_score=0.0)
    assert answer.found and "INDEX DECODER" not in answer.short  # the cross decoder read it
    assert answer.note.startswith("Asked in another language") and "English" in answer.note
    q, answer = _across("Who invented the Fresnel lens?", cross=None, min_score=0.0)
    assert "INDEX" in answer.short or not answer.found  # without one, the index's decoder reads all


def test_on_an_english_index_the_translator_s_model_reads_the_translation():
    """An English-only index's stages read the translation; the translator's model reads it
    there too (XQuAD German questions over the English paragraphs: short-answer F1 0.31 with
    Gemma 3 270M, 0.57 with Qwen2.5-1.5B; docs/benchmarks.md)."""
    english = "Who invented the Fresnel lens?"
    reader = FakeDecoder()
    q, answer = _across(english, cross=reader, encoder=ENGLISH, min_score=0.0)
    assert q.crosslingual and q.text == english and answer.found and "INDEX DECODER" not in answer.short
    assert reader.prompts and english in str(reader.prompts[0]) and "菲涅耳" not in str(reader.prompts[0])
    assert answer.note.startswith("Asked in another language")
    assert q.top_dense == 0.1  # the translation's own cosine, searched by the English encoder: not compared again


def test_the_translator_s_model_reads_by_its_own_profile():
    """Where the index's decoder shows the "unknown" example (Gemma) and the translator's model
    does not (Qwen), a translated question is read without it; a same-language one with it."""
    english = "Who invented the Fresnel lens?"
    index_decoder, cross = FakeDecoder(), FakeDecoder()
    retriever = FakeRetriever([hit(1, FRESNEL, dense=0.9)])
    gemma_like = replace(decoder_profile(FAKE), abstains=True)
    qwen_like = replace(decoder_profile(FAKE), abstains=False)
    p = AnswerPipeline(retriever, lambda query: english if query != english else None, lambda: index_decoder,
                       FakeEncoder(), encoder_profile(ENGLISH), gemma_like, Settings(min_confidence=0),
                       cross_decoder=lambda: cross, language="English", cross_profile=qwen_like)
    for asked in ("谁发明了菲涅耳透镜？", english):
        *_, answer = list(p.stream(Question(asked, asked, asked, 4, "hybrid", 48)))
        assert answer.found
    shows_unknown = [any(m["content"] == f"Answer: {ABSTAIN}" for m in d.prompts[0]) for d in (cross, index_decoder)]
    assert shows_unknown == [False, True]


def test_a_cross_language_answer_s_confidence_is_recalibrated(monkeypatch):
    """The confidence models were fitted on same-language answers: a cross-language answer's
    probability goes through its model key's recalibration (confidence.CROSS), and only its."""
    assert conf.across(0.2, "none-such", {}) == 0.2 and conf.across(None, "en", {"en": [1.0, 2.0]}) is None
    assert conf.across(0.5, "en", {"en": [1.0, 2.0]}) == pytest.approx(1 / (1 + math.exp(-2.0)))
    monkeypatch.setattr(conf, "probability", lambda signals, language, models=None: 0.05)
    monkeypatch.setattr(conf, "CROSS", {"en": [1.0, 3.0]})
    q, answer = _across("Who invented the Fresnel lens?", cross=FakeDecoder(), encoder=ENGLISH, min_score=0.0,
                        min_confidence=0.06)
    assert answer.found and q.signals["same_language_confidence"] == 0.05 and q.confidence > 0.5
    retriever = FakeRetriever([hit(1, FRESNEL, dense=0.9)])
    p = make(retriever, encoder=ENGLISH, translate=lambda query: None, min_confidence=0.06)
    q, _, answer = ask(p, "Who invented the Fresnel lens?")
    assert q.confidence == 0.05 and not answer.found  # a same-language answer keeps its model's figure
    # and its threshold: a cross-language answer is refused under its pair's, where one was fitted
    assert conf.cross_threshold("en", 0.06, {"en": [1.0, 0.0, 0.02]}) == 0.02
    assert conf.cross_threshold("en", 0.01, {"en": [1.0, 0.0, 0.02]}) == 0.01  # never above min_confidence
    assert conf.cross_threshold("en", 0.06, {"en": [1.0, 0.0]}) == 0.06
    monkeypatch.setattr(conf, "CROSS", {"en": [1.0, 0.0, 0.03]})
    q, answer = _across("Who invented the Fresnel lens?", cross=FakeDecoder(), encoder=ENGLISH, min_score=0.0,
                        min_confidence=0.06)
    assert q.confidence == pytest.approx(0.05) and answer.found
    q, _, answer = ask(p, "Who invented the Fresnel lens?")
    assert not answer.found


def test_a_same_language_question_has_no_note_and_its_own_cosine():
    retriever = FakeRetriever([hit(1, FRESNEL, dense=0.9)])
    p = make(retriever, encoder=MULTILINGUAL, translate=lambda query: None, min_confidence=0)
    q, _, answer = ask(p, "Who invented the Fresnel lens?")
    assert q.top_dense == 0.9 and not q.crosslingual and answer.note == "" and answer.found
