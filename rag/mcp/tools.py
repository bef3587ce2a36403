"""The MCP tools over the `RAG` facade: `search`, `ask`, `list_indexes`, `list_documents`.
Each has a typed input and output (pydantic models), so a client gets structured content and
its JSON as text. A bad argument (an unknown index, k out of range, an empty or over-long
question) is a tool error with a one-line message; the session goes on. `Door` is what the tools
reach: one `RAG` per index (models load once and are reused), which of them a caller may see,
and the limits (the serve_* settings)."""

import inspect
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from rag.core.errors import RagError
from rag.core.records import Answer
from rag.core.settings import Settings
from rag.index.store import is_index_dir
from rag.qa import RAG

# --- what the tools return ------------------------------------------------------------------


class Hit(BaseModel):
    rank: int
    score: float
    source: str = Field(description="the document's path")
    page: int | None = Field(description="the page of a PDF (1-based); null where the format has none")
    heading: str
    start: int = Field(description="where the passage starts in the document's text (characters)")
    end: int = Field(description="where it ends (characters)")
    text: str
    chunk_id: int


class SearchResult(BaseModel):
    index: str
    query: str
    searched_as: str | None = Field(None, description="the translation searched instead of the query, if any")
    hits: list[Hit]


class Source(BaseModel):
    n: int = Field(description="the [n] the answer cites")
    source: str
    page: int | None
    heading: str
    start: int
    end: int
    score: float
    text: str
    cited: bool
    evidence: str
    evidence_span: list[int] | None
    chunk_id: int


class Sentence(BaseModel):
    text: str
    cites: list[int]
    supported: bool | None = None


class AskResult(BaseModel):
    """`rag ask --json`, and the index asked."""
    index: str
    question: str
    answer: str = Field(description="the answer in Markdown, with [n] citations")
    short_answer: str
    supporting: list[str]
    found: bool
    confidence: float | None = Field(description="probability that the short answer is right")
    sources: list[Source]
    timings: dict[str, Any]
    searched_as: str | None
    short_first: bool
    sentences: list[Sentence]
    note: str


class IndexEntry(BaseModel):
    name: str
    documents: int
    chunks: int


class Indexes(BaseModel):
    indexes: list[IndexEntry]


class Document(BaseModel):
    path: str
    status: str
    error: str | None
    size: int
    chunks: int
    updated: float


class Documents(BaseModel):
    index: str
    documents: list[Document]


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str


# --- what the tools reach -------------------------------------------------------------------


@dataclass
class Door:
    """The indexes served and how a call may use them. `readable(ctx)`: the names this caller
    may see (all, over stdio; its key's, over HTTP). `line()`: an async context manager around
    one answer (the decoder's queue over HTTP). `deadline`: seconds a call may take (None: no limit)."""
    indexes: dict[str, RAG]
    settings: Settings
    readable: Callable[[Context], list[str]] | None = None
    line: Callable[[], Any] = field(default=lambda: _nothing())
    deadline: float | None = None

    def names(self, ctx: Context) -> list[str]:
        return list(self.indexes) if self.readable is None else self.readable(ctx)

    def index(self, ctx: Context, name: str | None) -> tuple[str, RAG]:
        """The index `name` (or the only one this caller may see), else a tool error; one the
        caller may not read is answered as one that does not exist."""
        names = self.names(ctx)
        if not name:
            if len(names) == 1:
                return names[0], self.indexes[names[0]]
            raise ToolError(f"name the index: one of {', '.join(names) or '(none)'}")
        if name not in names:
            raise ToolError(f"no index named {name!r} here (list_indexes names them)")
        return name, self.indexes[name]

    def k(self, k: int | None) -> int:
        top = self.settings.serve_max_k
        if k is not None and not 1 <= k <= top:
            raise ToolError(f"k must be between 1 and {top} (got {k})")
        return k or self.settings.k

    def text(self, value: str, what: str) -> str:
        top = self.settings.serve_max_question_chars
        if not any(c.isprintable() and not c.isspace() for c in value):
            raise ToolError(f"the {what} is empty (no visible characters)")
        if len(value) > top:
            raise ToolError(f"the {what} is {len(value)} characters long; at most {top}")
        return value

    def history(self, turns: list[Turn] | None) -> list[dict] | None:
        s = self.settings
        if not turns:
            return None
        if len(turns) > s.serve_max_history:
            raise ToolError(f"history: at most {s.serve_max_history} earlier messages")
        if any(len(t.content) > s.serve_max_message_chars for t in turns):
            raise ToolError(f"history: each message at most {s.serve_max_message_chars} characters")
        return [t.model_dump() for t in turns]

    def timer(self):
        return anyio.fail_after(self.deadline) if self.deadline else nullcontext()


@asynccontextmanager
async def _nothing():
    yield


@contextmanager
def one_line_errors():
    """rag's errors and a passed deadline as tool errors with a one-line message."""
    try:
        yield
    except ToolError:
        raise
    except RagError as e:
        raise ToolError(" ".join(str(e).split())) from None
    except TimeoutError:
        raise ToolError("the call ran past its deadline (setting serve_deadline)") from None


# --- the tools ------------------------------------------------------------------------------

INDEX = Annotated[str | None, Field(description="the index to use (list_indexes); may be left out where one is served")]


def hit_model(h) -> Hit:
    return Hit(rank=h.rank, score=h.score, source=h.source, page=h.page, heading=h.heading, start=h.start,
               end=h.end, text=h.text, chunk_id=h.chunk_id)


def ask_model(name: str, answer: Answer) -> AskResult:
    data = answer.to_dict()
    spans = {s.n: (s.hit.start, s.hit.end) for s in answer.sources}
    data["sources"] = [{**s, "start": spans[s["n"]][0], "end": spans[s["n"]][1]} for s in data["sources"]]
    return AskResult(index=name, **data)


async def answer_of(door: Door, rag: RAG, question: str, history, ctx: Context) -> Answer:
    """Run the pipeline in a thread; its drafts go to the client as progress notifications
    (the SDK sends them only where the call asked for progress)."""
    cancel = threading.Event()
    stops = {"cancel": cancel} if "cancel" in inspect.signature(rag.stream).parameters else {}

    def work() -> Answer | None:
        answer, n = None, 0
        for event in rag.stream(question, history=history, **stops):
            if isinstance(event, Answer):
                answer = event
            elif not cancel.is_set():
                n += 1
                anyio.from_thread.run(ctx.report_progress, n, None, str(event))
        return answer

    try:
        async with door.line():
            answer = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    finally:
        cancel.set()  # a deadline or a client that left: the pipeline stops at its next step
    if answer is None:
        raise ToolError("the answer was cancelled")
    return answer


def register(server: MCPServer, door: Door) -> None:
    """Add the four tools over `door` to `server`."""

    @server.tool(title="Search the documents")
    async def search(query: Annotated[str, Field(description="what to look for")], ctx: Context,
                     index: INDEX = None,
                     k: Annotated[int | None, Field(description="how many passages (default: the k setting)")] = None,
                     mode: Literal["hybrid", "dense", "keyword"] | None = None) -> SearchResult:
        """The passages of an index that best match a query: each with its file, page, heading,
        character span (start, end), score and text."""
        with one_line_errors(), door.timer():
            name, rag = door.index(ctx, index)
            query, k = door.text(query, "query"), door.k(k)
            if not is_index_dir(rag.root):
                return SearchResult(index=name, query=query, hits=[])
            found = await anyio.to_thread.run_sync(lambda: rag.find(query, k, mode), abandon_on_cancel=True)
            return SearchResult(index=name, query=query, searched_as=found.searched,
                                hits=[hit_model(h) for h in found.hits])

    @server.tool(title="Answer a question from the documents")
    async def ask(question: Annotated[str, Field(description="the question")], ctx: Context, index: INDEX = None,
                  history: Annotated[list[Turn] | None, Field(description="earlier turns of the conversation")] = None
                  ) -> AskResult:
        """Answer a question from an index, with numbered sources (file, page, character span),
        the short answer, whether it was found and a calibrated confidence. Drafts are sent as
        progress notifications where the call asks for progress."""
        with one_line_errors(), door.timer():
            name, rag = door.index(ctx, index)
            question, turns = door.text(question, "question"), door.history(history)
            if not is_index_dir(rag.root):
                raise ToolError(f"the index {name!r} has no documents yet")
            return ask_model(name, await answer_of(door, rag, question, turns, ctx))

    @server.tool(title="List the indexes")
    async def list_indexes(ctx: Context) -> Indexes:
        """The indexes this caller may use, with how many documents and passages each holds."""
        with one_line_errors(), door.timer():
            def count(name):
                rag = door.indexes[name]
                info = rag.info() if is_index_dir(rag.root) else None
                return IndexEntry(name=name, documents=info.documents if info else 0, chunks=info.chunks if info else 0)

            names = door.names(ctx)
            return Indexes(indexes=await anyio.to_thread.run_sync(lambda: [count(n) for n in names]))

    @server.tool(title="List an index's documents")
    async def list_documents(ctx: Context, index: INDEX = None) -> Documents:
        """The documents of an index: path, status (an error for one that could not be read),
        size, passages and when it was last updated."""
        with one_line_errors(), door.timer():
            name, rag = door.index(ctx, index)
            docs = await anyio.to_thread.run_sync(rag.documents) if is_index_dir(rag.root) else []
            return Documents(index=name, documents=[Document(path=d.path, status=d.status, error=d.error,
                                                             size=d.size, chunks=d.chunks, updated=d.updated)
                                                    for d in docs])
