"""rag's web page (Streamlit). Thin: every action is a call on the `RAG` Python API.

Run with `rag ui [--index NAME] [--host 127.0.0.1] [--port 8501]`."""

from __future__ import annotations

import html
import re
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import streamlit as st

from rag import RAG, RagError, Settings
from rag.core import present
from rag.core.present import timings_line, where
from rag.core.records import Answer
from rag.index.store import is_index_dir
from rag.qa import resolve_index

BUNDLED_GENERATORS = ["auto", "gemma3-270m", "qwen2.5-0.5b", "smollm2"]
MODES = ["hybrid", "dense", "keyword"]


def choices(first: str, others: list[str]) -> list[str]:
    """`others` with the configured value first (rag.toml or RAG_*: an `openai:` model too)."""
    return [first] + [o for o in others if o != first]


def cli_index(configured: Settings) -> str:
    """The index named on `rag ui --index X` (passed after `--`), else the index setting (RAG_INDEX)."""
    args = sys.argv[1:]
    if "--index" in args and args.index("--index") + 1 < len(args):
        return args[args.index("--index") + 1]
    return configured.index


@st.cache_resource(show_spinner=False)
def get_rag(index: str, generator: str) -> RAG:
    """One RAG per index and decoder per server process (the models inside are shared by all)."""
    return RAG(index, generator=generator)


@st.cache_resource(show_spinner=False)
def warming(index: str, generator: str) -> Future:
    """Load the models in the background from the moment the page first opens (once per
    server): the page, uploads and documents are usable meanwhile, and the first question
    waits only for what is left."""
    return ThreadPoolExecutor(1, thread_name_prefix="rag-ui-warm-up").submit(get_rag(index, generator).warm_up)


@st.fragment(run_every=1.0)
def model_status(loading: Future) -> None:
    """Where the models are, updated every second until they are ready."""
    if not loading.done():
        st.caption("⏳ loading the encoder and the decoder (once per server) ...")
    elif loading.exception() is not None:
        st.error(plain(str(loading.exception())))
        warming.clear()  # the next page load tries again
    else:
        took = loading.result()
        st.caption(f"models ready (encoder {took['encoder_s']:.1f} s, decoder {took['decoder_s']:.1f} s to load)")


def known_indexes(current: str) -> list[str]:
    found = sorted(str(p) for p in Path("indexes").glob("*") if is_index_dir(p))
    current = str(resolve_index(current))
    return [current] + [p for p in found if p != current]


# --- safe rendering: document text is always text, never markup ---------------------------

# Every ASCII punctuation character, each of which CommonMark lets a backslash make literal.
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: str) -> str:
    """Markdown source that shows `text` as the characters it is: every punctuation mark
    escaped, so no emphasis, link, image, autolink (':' and '@' too) or HTML can form.
    For st.markdown without unsafe_allow_html (which shows raw HTML as text itself)."""
    return _MD_PUNCTUATION.sub(r"\\\1", text).replace("\n", "  \n")


# HTML for text inside one of our HTML blocks: entities for markup, and no line breaks, because
# a blank line would end the HTML block and what follows would be read as Markdown.
escape = present.html_text


def highlight(passage: str, evidence: str) -> str:
    """HTML for a passage with its supporting sentence marked; everything escaped."""
    if evidence and evidence in passage:
        before, _, after = passage.partition(evidence)
        return f"{escape(before)}<mark>{escape(evidence)}</mark>{escape(after)}"
    return escape(passage)


def source_card(s, turn: int) -> str:
    badge = " <b>cited</b>" if s.cited else ""
    return (f'<div class="src-card" id="src-{turn}-{s.n}" style="border:1px solid #ddd;border-radius:8px;'
            f'padding:8px 12px;margin:6px 0"><div><b>[{s.n}] {html.escape(where(s, full_path=False))}</b>{badge} '
            f'<span style="color:#666">· score {s.score:.3f}</span></div>'
            f'<div style="font-size:0.9em">{highlight(s.text, s.evidence)}</div></div>')


def show_answer(answer: Answer, turn: int) -> None:
    if answer.found:
        st.markdown(present.html(answer, anchors=f"src-{turn}"), unsafe_allow_html=True)  # [n] links to its card
    else:
        st.warning(plain(answer.text))
    if answer.sources:
        label = "Sources" if answer.found else "Closest passages"
        with st.expander(f"{label} ({len(answer.sources)})", expanded=True):
            for s in answer.sources:
                st.markdown(source_card(s, turn), unsafe_allow_html=True)
    st.caption(timings_line(answer.timings, sep=" · "))


# --- uploads and documents -------------------------------------------------------------

def upload_panel(rag: RAG) -> None:
    limit = rag.settings.max_file_mb
    files = st.file_uploader(f"Add documents (up to {limit:g} MB each)", accept_multiple_files=True,
                             key=f"uploader-{st.session_state.get('upload_round', 0)}")
    if files and st.button("Add to index", type="primary"):
        bar = st.progress(0.0, text="Ingesting ...")
        try:
            st.session_state.last_report = rag.upload(
                [(f.name, f.getvalue()) for f in files],
                on_file=lambda done, total, path: bar.progress(done / total, text=f"{done}/{total} {Path(path).name}"))
        except RagError as e:
            st.error(plain(str(e)))
        bar.empty()
        st.session_state.upload_round = st.session_state.get("upload_round", 0) + 1
        st.rerun()


def last_report() -> None:
    """The report of the last upload, shown outside the (collapsible) upload panel."""
    report = st.session_state.get("last_report")
    if report:
        st.success(f"Added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
                   f"failed {len(report.failed)}")
        for f in report.failed:
            st.error(plain(f"{Path(f.path).name}: {f.reason}"))


def documents_panel(rag: RAG) -> None:
    docs = rag.documents()
    rows = [{"file": Path(d.path).name, "chunks": d.chunks, "status": "failed" if d.error else d.status,
             "reason": d.error or "", "path": d.path} for d in docs]
    st.dataframe(rows, hide_index=True, width="stretch", column_order=["file", "chunks", "status", "reason"])
    if rows:
        choice = st.selectbox("Remove a document", [r["path"] for r in rows], index=None,
                              format_func=lambda p: Path(p).name, placeholder="choose a document")
        if choice and st.button("Remove"):
            rag.remove(choice, wait=30)
            st.rerun()


# --- the page -----------------------------------------------------------------------------

def main() -> None:
    st.set_page_config(page_title="rag", page_icon="📚", layout="wide")
    st.session_state.setdefault("messages", [])

    with st.sidebar:
        st.title("rag")
        configured = Settings.load()  # the widgets start from rag.toml / RAG_*, never override it
        index = st.selectbox("Index", known_indexes(cli_index(configured)), help="indexes found under indexes/")
        custom = st.text_input("or an index path", "")
        index = custom.strip() or index
        generator = st.selectbox("Decoder", choices(configured.generator, BUNDLED_GENERATORS))
        k = st.slider("Passages", 1, max(10, configured.k), configured.k)
        max_tokens = st.slider("Answer length (tokens)", 8, max(256, configured.max_tokens), configured.max_tokens)
        mode = st.selectbox("Retrieval", choices(configured.mode, MODES))
        if st.button("New conversation"):
            st.session_state.messages = []
            st.rerun()
        try:
            rag = get_rag(index, generator)
            loading = warming(index, generator)
            info = rag.info() if is_index_dir(rag.root) else None
        except RagError as e:
            st.error(plain(str(e)))
            return
        if info:
            st.caption(f"{info.documents} documents · {info.chunks} chunks · {info.encoder} · "
                       f"{info.size_bytes / 2**20:.1f} MB")
        model_status(loading)

    st.header("Ask your documents")
    with st.expander("Add documents", expanded=not info or info.chunks == 0):
        upload_panel(rag)
    last_report()
    if info:
        with st.expander(f"Documents ({info.documents}, {len(info.failed)} failed)"):
            documents_panel(rag)
    if not info or info.chunks == 0:
        st.info("This index is empty. Add documents above, or run `rag ingest PATH --index "
                f"{rag.root}` in a terminal.")

    for turn, message in enumerate(st.session_state.messages):
        with st.chat_message(message["role"]):
            if message["role"] == "user":
                st.markdown(plain(message["content"]))
            else:
                show_answer(message["answer"], turn)

    question = st.chat_input("Ask a question about your documents")
    if question:
        answer_turn(rag, loading, question, k=k, mode=mode, max_tokens=max_tokens)


def answer_turn(rag: RAG, loading: Future, question: str, **options) -> None:
    """One question of the conversation: shown, answered as the decoder writes (drafts, then
    the answer built around them), and kept in the session's messages."""
    history = [{"role": m["role"], "content": m["content"]} for m in st.session_state.messages]
    with st.chat_message("user"):
        st.markdown(plain(question))
    with st.chat_message("assistant"):
        final: list[Answer] = []

        def drafts():
            """The decoder's span as it writes (replaced below by the answer built around it)."""
            yield "*Reading the passages ...*  \n"
            for event in rag.stream(question, history=history, **options):
                if isinstance(event, Answer):
                    final.append(event)
                else:
                    yield plain(event)

        placeholder = st.empty()
        try:
            if not loading.done():
                with st.spinner("Loading the models (once per server) ..."):
                    loading.result()
            with placeholder.container():
                st.write_stream(drafts)
        except RagError as e:  # a model server's fault: its message shown as text, never as markup
            placeholder.empty()
            st.error(plain(str(e)))
            return
        placeholder.empty()
        answer = final[0]
        turn = len(st.session_state.messages) + 1
        show_answer(answer, turn)
    st.session_state.messages += [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer.text, "answer": answer}]

if __name__ == "__main__":  # streamlit runs the page as __main__; tests import the helpers
    main()
