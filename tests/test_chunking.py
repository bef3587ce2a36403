from rag.index.chunking import Splitter
from rag.models.encoder import Encoder
from rag.readers.base import Document, Section


def tokenizer():
    return Encoder("all-MiniLM-L6-v2").tokenizer


def test_no_chunk_exceeds_limit_and_spans_point_into_page():
    tok = tokenizer()
    splitter = Splitter(tok, 64, 8)
    page = ("Photosynthesis converts light energy into chemical energy. " * 30 + "\n\n"
            + "Supercalifragilisticexpialidocious" * 40)
    doc = Document("x", [Section(page, page=3, heading="Biology")])
    chunks = splitter.split(doc)
    assert len(chunks) > 5
    for c in chunks:
        assert splitter.count(c.text) <= 64
        assert page[c.start:c.end] == c.text
        assert c.page == 3 and c.heading == "Biology"
    assert [c.ord for c in chunks] == list(range(len(chunks)))


def test_overlapping_passages_of_one_long_sentence_point_into_the_page():
    """A sentence longer than a passage is cut on words with an overlap of word pieces: each
    passage's start is its own (it was langchain's start_index, searched from the previous end
    less the overlap taken as characters, so -1 once the overlap ran over 16 characters)."""
    splitter = Splitter(tokenizer(), 24, 8)
    page = "The lens of the Bell Rock light was ground by hand in the workshop of " + " ".join(
        f"master{i}" for i in range(40)) + " in Paris. Keepers trimmed the wicks."
    chunks = splitter.split(Document("x", [Section(page, page=1)]))
    assert len(chunks) > 3
    for c in chunks:
        assert c.start >= 0 and page[c.start:c.end] == c.text
    assert [c.start for c in chunks] == sorted({c.start for c in chunks})  # in order, none twice


def test_chunks_do_not_cross_pages():
    splitter = Splitter(tokenizer(), 128, 16)
    doc = Document("x", [Section("first page words " * 5, page=1), Section("second page words " * 5, page=2)])
    chunks = splitter.split(doc)
    assert [c.page for c in chunks] == [1, 2]
    assert all("second" not in c.text for c in chunks if c.page == 1)


def test_paragraphs_split_before_words():
    splitter = Splitter(tokenizer(), 20, 0)  # each paragraph fits, both do not
    para1 = "The first paragraph talks about rivers and their deltas in some detail."
    para2 = "The second paragraph is about mountains and glaciers and snow."
    chunks = splitter.split(Document("x", [Section(para1 + "\n\n" + para2)]))
    assert [c.text for c in chunks] == [para1, para2]


def test_counting_ignores_the_tokenizers_own_truncation():
    """MiniLM's tokenizer.json truncates and pads to 128; counting must see every word piece."""
    tok = tokenizer()
    splitter = Splitter(tok, 254, 16)
    assert splitter.count("word " * 600) == 600
    assert splitter.count("hello world") == 2


def test_text_without_spaces_is_cut_on_characters():
    """A line with no whitespace counts as one word piece; it must still become bounded chunks,
    quickly (a 40 MB such line once became one 40-million-character chunk)."""
    import time

    splitter = Splitter(tokenizer(), 128, 16, max_chars=1000)
    line = "x" * 3_000_000
    page = "Intro sentence here.\n\n" + line + "\n\nOutro sentence."
    start = time.perf_counter()
    chunks = splitter.split(Document("x", [Section(page)]))
    assert time.perf_counter() - start < 30
    assert max(len(c.text) for c in chunks) <= 1000
    assert sum(len(c.text) for c in chunks if set(c.text) == {"x"}) == len(line)
    for c in chunks[:3] + chunks[-3:]:
        assert page[c.start:c.end] == c.text
    assert chunks[0].text == "Intro sentence here." and chunks[-1].text == "Outro sentence."
