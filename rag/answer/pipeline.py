"""One question's way through rag, top to bottom:

    Retrieve -> Read -> Cite -> Compose -> Judge -> Answer

Each stage is a small class with one `run(question)` on one state record, `Question`; it gets
the parts it needs (retriever, decoder, encoder, the next passage's lookup) when it is made,
and never calls back up. `AnswerPipeline` is built from parts, not from the RAG facade (see its
docstring). `AnswerPipeline.stream` runs the stages in order and decides "not found" in one place
(`AnswerPipeline.refusal`), between the stages. Reading streams `Draft` events (the decoder's
raw span); the last event is the `Answer`, built once, never edited after.

Why Cite comes before Compose: the composed statement is built inside the passage the
decoder copied from, so which passage that is must be known first."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from rag.answer import compose as comp
from rag.answer import confidence as conf
from rag.answer.citations import check_free_answer, cite_span, evidence, unrelated
from rag.answer.prompt import ABSTAIN, CLAUSE_ENDS, MIN_CUT_TOKENS, avoid_first, build_messages, fit_passages
from rag.core.errors import RagError
from rag.core.present import EMPTY_INDEX, MAY_NOT_SAY, NOT_FOUND, statement
from rag.core.records import Answer, Draft, Hit, Sentence, Source, Timer
from rag.core.settings import TRUE, Settings
from rag.language.text import has_cjk, looks_english
from rag.models.catalog import ENGLISH, MULTILINGUAL, DecoderProfile, EncoderProfile

# Why a question in another script may find nothing in an index of English passages: MiniLM
# cannot read it (XQuAD Chinese questions, recall@5 0.10), and its translation, where one was
# made (rag/answer/translate.py, 0.94), found nothing either.
ENGLISH_ONLY = (f" This index's encoder ({ENGLISH}) reads English only: ask in English, or build the index "
                f"with --encoder {MULTILINGUAL}.")

log = logging.getLogger(__name__)

# Tokens kept free after the prompt and the answer: a chat template's closing tokens.
TEMPLATE_SLACK = 8


@dataclass
class Question:
    """The state record one question carries through the stages."""
    asked: str  # what the person typed
    text: str  # its self-contained form, which the decoder reads (a follow-up's pronoun resolved; translated with `searched`)
    query: str  # what retrieval searches
    k: int
    mode: str
    max_tokens: int
    timer: Timer = field(default_factory=Timer)
    empty_index: bool = False
    searched: str = ""  # Retrieve: the translation searched instead of `query` (rag/answer/translate.py)
    hits: list[Hit] = field(default_factory=list)  # Retrieve
    top_dense: float | None = None  # Retrieve: the best passage's cosine to the question in the passages' language
    passages: list[tuple[Hit, str]] = field(default_factory=list)  # Read: what the prompt held
    span: str = ""  # Read: what the decoder wrote ("" when it said "unknown")
    tokens: int = 0
    failure: str = ""  # Read: the decoder failed (the message a person reads)
    sources: list[Source] = field(default_factory=list)  # Cite: every hit, numbered, cited marked
    unrelated: bool = False  # Cite: the cited passages share no word with the question
    sentences: list[Sentence] = field(default_factory=list)  # Cite (free) or Compose (copied)
    composed: comp.Composed | None = None  # Compose
    copied: str = ""  # Compose: the span the statement is built around (the second copy's, if overruled)
    respanned: str = ""  # Compose: the sentence the decoder copied again from, when the check overruled it
    signals: dict = field(default_factory=dict)  # Judge: what the confidence was computed from
    confidence: float | None = None  # Judge: the probability that the short answer is right
    cancel: threading.Event | None = None  # set when the asker left (a server's client): stop early

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    @property
    def in_passages(self) -> str:
        """The question in the passages' language: its translation where one was made (a
        question in another language), else as the decoder reads it. What compares words with
        the passages reads this (the sentence check, the confidence's word signals)."""
        return self.searched or self.text

    @property
    def crosslingual(self) -> bool:
        """Asked in another language than the passages' (searched in translation)."""
        return bool(self.searched)

    @property
    def everything(self) -> list[tuple[Hit, str]]:
        """The prompt's passages, then the other hits as further reading."""
        shown = {h.chunk_id for h, _ in self.passages}
        return self.passages + [(h, h.text) for h in self.hits if h.chunk_id not in shown]


class Retrieve:
    """The k best passages for the question's query (without near-copies where `diverse`), in
    translation where the question is in another language than the index's (`translate`
    returns None where it is searched as asked)."""

    def __init__(self, retriever, translate, diverse: bool, reads_translation: bool = True, similarities=None):
        self.retriever, self.translate, self.diverse = retriever, translate, diverse
        self.reads_translation = reads_translation
        self.similarities = similarities  # (question, texts) -> cosines: the encoder's

    def run(self, q: Question) -> None:
        if q.cancelled:  # the asker left: no translation, no search
            return
        if self.translate is None:
            q.searched = ""
        else:  # a question whose asker may leave passes its event on: the translation stops with it
            q.searched = (self.translate(q.query, cancel=q.cancel) if q.cancel is not None
                          else self.translate(q.query)) or ""
        if q.cancelled:
            return
        if q.searched:
            q.timer.mark("translate_ms")
            if self.reads_translation:
                # on an English-only index every later stage reads the English form, as it
                # reads English passages (100 XQuAD Chinese questions over the English
                # paragraphs: answer F1 0.04 -> 0.32, wrongly "not found" 75% -> 14%;
                # docs/benchmarks.md); a multilingual index's stages read the question itself,
                # as its dense search does (rag/answer/retrieve.py)
                q.text = q.searched
        q.hits = self.retriever.search(q.searched or q.query, q.k, q.mode, self.diverse,
                                       asked=q.query if q.searched else None)
        if q.hits:
            q.top_dense = q.hits[0].dense
            if q.crosslingual and not self.reads_translation and q.top_dense is not None \
                    and self.similarities is not None:
                # the not-found threshold was set on questions in the passages' language; a
                # multilingual encoder puts a question in another language further from its
                # passage (XQuAD English over Chinese: 0.74-0.83 for the right one, under e5's
                # 0.80), its translation as near as a same-language question
                q.top_dense = max(q.top_dense, float(self.similarities(q.searched, [q.hits[0].text])[0]))
        q.timer.mark("retrieve_ms")


class Read:
    """The decoder reads the best passages that fit its context and writes the answer: a
    local model copies a span (span-constrained decoding), a chat model writes freely."""

    def __init__(self, decoder, settings: Settings, abstain: bool, answer_k: int):
        self.decoder = decoder
        self.copy = settings.copy and decoder.copies
        self.prompt_k = answer_k
        self.temperature = settings.temperature
        self.grounded = not decoder.copies
        self.abstain_setting = abstain

    def abstains(self, q: Question) -> bool:
        # the "unknown" example made Gemma abstain on answerable Chinese questions (measured on
        # the Chinese article of tests/test_chinese.py): it stays for English and remote models
        return (self.abstain_setting and not has_cjk(q.text)) or self.grounded

    def run(self, q: Question) -> Iterator[Draft]:
        decoder, abstain = self.decoder, self.abstains(q)
        empty = build_messages(q.text, [], abstain, self.grounded)
        asked = decoder.count(decoder.render(empty, prefix="Answer:"))
        budget = decoder.n_ctx - q.max_tokens - asked - TEMPLATE_SLACK
        if budget < MIN_CUT_TOKENS:  # not even a passage's sentence would fit beside the question
            q.failure = (f"The question is too long for the decoder: with its prompt it takes {asked} of the "
                         f"{decoder.n_ctx} tokens the decoder reads, leaving no room for a passage and the "
                         f"{q.max_tokens}-token answer; ask it in fewer words. The closest passages follow.")
            return
        q.passages = fit_passages(q.hits[:self.prompt_k], decoder.count, budget)
        messages = build_messages(q.text, q.passages, abstain, self.grounded)
        pieces = []
        try:
            for piece in decoder.stream(messages, **self._options(q, [" ".join(t.split()) for _, t in q.passages],
                                                                  abstain)):
                if not pieces:
                    q.timer.mark("first_token_ms")
                    piece = piece.lstrip()
                pieces.append(piece)
                yield Draft(piece)
        except RagError:
            raise
        except Exception as e:  # one failed answer must not take the process (or a server) down
            log.exception("the decoder failed")
            q.failure = (f"The decoder failed on this question ({type(e).__name__}: {str(e)[:200]}). "
                         "The closest passages follow.")
            return
        q.timer.mark("decoded_ms")
        raw = "".join(pieces).strip()
        if abstain and raw.strip(" .").lower() == ABSTAIN:
            raw = ""
        q.span = raw
        q.tokens = decoder.count(raw) - decoder.count("") if raw else 0

    def respan(self, q: Question, sentence: str) -> str:
        """The short answer copied from one sentence (the one the sentence check chose)."""
        # the same examples as the first prompt: llama.cpp keeps their cached prefix
        one = build_messages(q.text, [(q.passages[0][0], sentence)], self.abstains(q), self.grounded)
        return "".join(self.decoder.stream(one, **self._options(q, [sentence], False))).strip()

    def _options(self, q: Question, sources: list[str], abstain: bool) -> dict:
        options = {"prefix": "Answer:", "max_tokens": q.max_tokens, "temperature": self.temperature,
                   "stop": ["\nQuestion:"] if self.grounded else ["\n", "Question:"]}
        if self.copy:
            # a copied answer ends at a clause boundary and never starts with the question's
            # words; "unknown" is the one word allowed that is not in a passage
            options["stop"] = options["stop"] + CLAUSE_ENDS
            options.update(copy_from=sources + ([ABSTAIN] if abstain else []), avoid_first=avoid_first(q.text))
        return options


class Cite:
    """Which passages the answer rests on: a copied span's passage (rag's choice, not the
    model's); for a freely written answer, per sentence, the passages that support it."""

    def __init__(self, copies: bool):
        self.copies = copies

    def run(self, q: Question) -> None:
        q.sources = cite_span(q.span if self.copies else "", q.everything)
        if self.copies:
            return
        q.sentences = check_free_answer(q.span, [s.text for s in q.sources])
        cited = {n for s in q.sentences for n in s.cites}
        for s in q.sources:
            if s.n in cited:
                s.cited = True
                s.evidence = evidence(statement(q.sentences), s.text)


class Compose:
    """A copied span made a complete statement inside its sentence of the cited passage. The
    encoder checks the decoder's choice of sentence (cosine plus a share of the question's
    words); where another sentence is closer by `margin`, the decoder copies again from that
    one. A sentence cut by the passage's end is completed from the next passage."""

    def __init__(self, encoder, reader: Read, next_chunk, settings: Settings):
        self.encoder, self.reader, self.next_chunk = encoder, reader, next_chunk
        self.margin, self.word_weight = settings.sentence_margin, settings.sentence_word_weight

    def run(self, q: Question) -> None:
        cited = next((s for s in q.sources if s.cited), None)
        if cited is None:  # the span is in no passage: it stands alone, uncited
            q.composed = comp.Composed(short=q.span, said=[q.span])
            q.sentences = [Sentence(q.span)]
            return
        made = comp.compose(q.span, cited.text, q.in_passages, lambda table: self.scores(q.in_passages, table),
                            self.margin, lambda sentence: self.reader.respan(q, sentence))
        q.copied, q.respanned = made.copied, made.respanned
        cited.evidence = made.evidence or cited.evidence
        if made.supporting:
            self._finish_cut_sentence(made, cited)
        q.composed = made
        marks = [s.n for s in q.sources if s.cited]
        q.sentences = [Sentence(t) for t in made.said[:-1]] + [Sentence(made.said[-1], marks)] if made.said else []

    def scores(self, question: str, table) -> list[float]:
        """How well each sentence answers the question: the encoder's cosine plus a share of
        the question's words it holds (SQuAD-style wording reuse; weight in Settings)."""
        prose = [comp.readable(t) for _, _, t in table]
        cosines = self.encoder.similarities(question, prose)
        return [float(c) + self.word_weight * comp.overlap(question, s) for c, s in zip(cosines, prose)]

    def _finish_cut_sentence(self, made: comp.Composed, cited: Source) -> None:
        """A supporting sentence cut off by the end of its passage is completed from the
        passage that follows it in the document (passages overlap: the overlap is skipped);
        one that announces a list there ("with these tables:") gets the list's first items."""
        last = made.supporting[-1]
        announces = last.endswith((":", "："))
        if not (comp.unfinished(last) or announces) or not " ".join(cited.text.split()).endswith(last):
            return
        following = self.next_chunk(cited.chunk_id)
        if following is None or (following.page, following.heading) != (cited.page, cited.heading):
            return
        tail = following.text[max(0, cited.hit.end - following.start):] if following.start < cited.hit.end \
            else following.text
        if announces:
            items = comp.sentences(tail)[:comp.MAX_SENTENCES]
            made.supporting += items
            made.said += [r for r in (comp.readable(i) for i in items) if r]
        else:
            rest = comp.first_sentence(tail)
            made.supporting[-1] = f"{last} {rest}"
            rest = comp.readable(rest)
            if rest and made.said:
                made.said[-1] = f"{made.said[-1]} {rest}"


class Judge:
    """How likely the short answer is right (`confidence.py`): retrieval's scores, the sentence
    check's, whether it overruled the decoder, and the decoder's log-probability of its span
    against "unknown" and the other candidates of the supporting sentences, scored under the
    prompt the span was copied with (llama.cpp's cache holds it). A backend that cannot score
    (transformers) gets the model fitted without the decoder's signals."""

    def __init__(self, decoder, reader: Read, model_key: str):
        self.decoder, self.reader, self.model_key = decoder, reader, model_key

    def run(self, q: Question) -> None:
        made, hits = q.composed, q.hits
        if made is None or not hits:
            return
        s = {"top_dense": q.top_dense, "top_fused": hits[0].score,
             "margin": hits[0].score - hits[1].score if len(hits) > 1 else None,
             "support": made.support, "overruled": float(bool(q.respanned)), "short_empty": float(not made.short),
             **conf.text_signals(q.in_passages, made.short, made.supporting)}
        if q.copied and q.passages:
            alternatives = [c for c in conf.candidates(q.in_passages, made.supporting or [q.copied])
                            if c.lower() != q.copied.lower()]
            passages = [(q.passages[0][0], q.respanned)] if q.respanned else q.passages
            messages = build_messages(q.text, passages, self.reader.abstains(q), self.reader.grounded)
            scores = self.decoder.score(messages, "Answer:", [q.copied, conf.UNKNOWN, *alternatives])
            if scores and scores[0]:
                s.update(conf.decoder_signals(q.copied, alternatives, scores), alternatives=alternatives,
                         scores=scores)
                short, q.confidence = conf.choose(q.in_passages, made.short, alternatives, scores, made.supporting,
                                                  s, self.model_key)
                if short != made.short:  # a likelier candidate of the same sentences
                    s["greedy_short"], made.short = made.short, short
                    made.short_first = comp.leads(short, made.said, q.in_passages)
        if q.confidence is None:
            q.confidence = conf.probability(s, self.model_key)
        if q.crosslingual and q.confidence is not None:  # the models were fitted on same-language answers
            s["same_language_confidence"] = q.confidence
            q.confidence = conf.across(q.confidence, self.model_key)
        q.signals = s
        q.timer.mark("judged_ms")


class AnswerPipeline:
    """The stages wired for one index from its parts; `stream(question)` yields `Draft`
    events, then the `Answer`. Nothing here knows the `RAG` facade: it is built from

    - `retriever`: `search(query, k, mode, diverse, asked)`, `is_empty()`, `next_chunk(id)`
      (retrieve.Retriever), or None where there is no index yet;
    - `translate`: query -> its translation for search, or None (retrieve.QueryTranslator);
    - `decoder`: a function that returns the decoder, called only for a question that gets
      past retrieval (models.decoders.load_decoder: loaded once per process);
    - `cross_decoder`: the same for a question asked in another language than the passages
      (the translator's model, already loaded to translate it), or None: `decoder` reads all;
      `cross_profile` its profile (whether its prompt shows the "unknown" example);
    - `encoder`: `similarities(question, texts)` for the sentence check;
    - the encoder's and the decoder's profiles (models.catalog) and the settings."""

    def __init__(self, retriever, translate, decoder, encoder, encoder_profile: EncoderProfile,
                 decoder_profile: DecoderProfile, settings: Settings, cross_decoder=None,
                 language: str | None = None, cross_profile: DecoderProfile | None = None):
        s = self.settings = settings
        self.retriever, self.encoder, self._decoder = retriever, encoder, decoder
        self._cross_decoder, self._cross_reader = cross_decoder, None
        self.language = language  # the passages' language, where questions are translated into it
        self.english_only = not encoder_profile.multilingual
        self.retrieve = Retrieve(retriever, translate, s.diverse, reads_translation=self.english_only,
                                 similarities=encoder.similarities)
        self.min_score = encoder_profile.min_score if s.min_score is None else s.min_score
        # each decoder's answers have their own confidence fit, on each encoder's scale
        self.model_key = conf.model_key(encoder_profile.confidence, decoder_profile.family)
        self.abstain = decoder_profile.abstains if s.abstain == "auto" else s.abstain in TRUE
        # each model by its own profile: Gemma's "unknown" example made Qwen2.5-1.5B refuse
        # (held-out cross-language answers over English passages, where the index's decoder is
        # Gemma: 14 of 90 "unknown" or unrelated; over Chinese ones, Qwen's index: 1 of 90)
        self.cross_abstain = self.abstain if cross_profile is None or s.abstain != "auto" else cross_profile.abstains
        self.answer_k = decoder_profile.answer_k if s.answer_k is None else s.answer_k
        self._reader = None

    @property
    def reader(self) -> Read:
        """The decoder is loaded only for a question that gets past retrieval."""
        if self._reader is None:
            self._reader = Read(self._decoder(), self.settings, self.abstain, self.answer_k)
        return self._reader

    def reader_for(self, q: Question) -> Read:
        """A question in another language than the passages is read by the larger model that
        translated it (docs/benchmarks.md#answers-across-languages): XQuAD English questions
        over the Chinese paragraphs, short-answer F1 0.31 with Qwen2.5-0.5B (the index's decoder)
        and 0.43 with Qwen2.5-1.5B (20 questions); over the English paragraphs, where it reads
        the translation (German asked: F1 0.30 reading the question as asked), Chinese questions
        0.34 with Gemma 3 270M, 0.49 with it, German 0.31 and 0.57 (30 each), at about 3.5x
        the time per answer."""
        if not (q.crosslingual and self._cross_decoder is not None):
            return self.reader
        if self._cross_reader is None:
            self._cross_reader = Read(self._cross_decoder(), self.settings, self.cross_abstain, self.answer_k)
        return self._cross_reader

    def stream(self, q: Question) -> Iterator[Draft | Answer]:
        if self.retriever is None or self.retriever.is_empty():
            q.empty_index = True
            q.timer.mark("retrieve_ms")
        else:
            self.retrieve.run(q)
        if q.cancelled:  # nobody is waiting for the answer: the decoder is not started
            return
        if self.refusal(q) is None:
            reader = self.reader_for(q)
            yield from reader.run(q)
            if self.refusal(q) is None:
                Cite(reader.copy).run(q)
                # (not the translation: a name transliterated otherwise than in the passage, 凯恩街
                # for 科尔尼大道, shares no word with it: its right passage refused, XQuAD English over Chinese)
                q.unrelated = unrelated([q.text, q.query], [s.text for s in q.sources if s.cited])
                if reader.copy and self.refusal(q) is None:
                    Compose(self.encoder, reader, self.retriever.next_chunk, self.settings).run(q)
                    if self.refusal(q) is None:
                        Judge(reader.decoder, reader, self.model_key).run(q)
        yield self.answer(q)

    def refusal(self, q: Question) -> str | None:
        """Why the documents give no answer, or None: the one place "not found" is decided.
        Looks at what the stages have done so far (before reading: the decoder is not called)."""
        if q.empty_index:
            return EMPTY_INDEX
        if not q.hits:
            return NOT_FOUND
        top = q.top_dense
        if top is not None and top < self.min_score:
            return NOT_FOUND  # the best passage is too far from the question
        if q.failure:
            return q.failure
        if q.timer.marks.get("decoded_ms") is not None and not q.span:
            return NOT_FOUND  # the decoder answered "unknown", or nothing
        if q.unrelated:
            return NOT_FOUND  # the passages it cites share no word with the question
        made = q.composed
        if made is not None and made.supporting and made.support is not None \
                and made.support < self.settings.min_support:
            return NOT_FOUND  # the sentence the answer rests on is too far from the question
        least = self.settings.min_confidence
        if q.crosslingual:  # the threshold of its language pair (confidence.CROSS)
            least = conf.cross_threshold(self.model_key, least)
        if q.confidence is not None and q.confidence < least:
            return MAY_NOT_SAY  # the answer is more likely wrong than the person asked to accept
        return None

    def answer(self, q: Question) -> Answer:
        """The one Answer of the question, from the state record (timings include every step)."""
        note = self.refusal(q)
        if note == NOT_FOUND and self.english_only and not looks_english(q.asked):
            note += ENGLISH_ONLY
        sources = q.sources or [Source(i, h, t) for i, (h, t) in enumerate(q.everything, 1)]
        timings = q.timer.finish(q.tokens)
        made = q.composed
        support = made.support if made is not None and made.supporting else None
        if note is not None:
            for s in sources:
                s.cited = False
            return Answer(q.asked, found=False, sources=sources, timings=timings, note=note, support=support,
                          confidence=q.confidence, searched=q.searched)
        return Answer(q.asked, short=made.short if made else "", short_first=bool(made and made.short_first),
                      sentences=q.sentences, sources=sources, timings=timings,
                      supporting=made.supporting if made else [s.evidence for s in sources if s.cited],
                      support=support, confidence=q.confidence, searched=q.searched, note=self.across(q))

    def across(self, q: Question) -> str:
        """The note of an answer to a question asked in another language than the passages:
        which language the answer is in (it is copied from them, not translated back)."""
        if not q.searched or not self.language:
            return ""
        return (f"Asked in another language than the documents: the answer is in {self.language}, "
                f"in the words of the passages it cites.")
