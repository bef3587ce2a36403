"""The `rag` command: parse flags, call the Python API, print. No logic of its own.
Exit status: 0 success, 1 some files failed (the rest was ingested), 2 usage or index errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import textwrap
from dataclasses import asdict, fields

from rag.core.errors import RagError
from rag.core.present import is_blank, lone_surrogate, safe, terminal, timings_line, where
from rag.core.settings import Settings

_SETTING = {f.name: f.default for f in fields(Settings)}  # the defaults a flag's help names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1 (got {text!r})")
    return value


def _default_index() -> str:
    """The index a command uses without --index: the `index` setting (RAG_INDEX, rag.toml), else
    "default". A bad setting is reported when the command loads its settings, not here."""
    from rag.core.settings import configured

    try:
        return configured().index
    except RagError:
        return "default"


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("--index", "-i", default=_default_index(),
                   help="index name (under indexes/) or path (default: %(default)s)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag", description="Local question answering over your own documents.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              rag ingest ~/papers            index a folder (again: only changes are redone)
              rag search "attention heads"   best passages
              rag ask "What limits X?"       a short answer with numbered sources
              rag ui                         the web page
              rag eval squad-dev-v1.1.json   retrieval quality on labelled data
              rag info                       what the index holds
            """))
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_ingest_parser, _search_parser, _ask_parser, _eval_parser, _ui_parser, _index_parsers,
                _serve_parser, _mcp_parser):
        add(sub)
    return parser


def _ingest_parser(sub) -> None:
    p = sub.add_parser("ingest", help="add or update documents (files or folders)",
                       description="Index files and folders; unchanged files are skipped, changed ones "
                                   "re-indexed, vanished ones removed.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _common(p)
    p.add_argument("--no-prune", action="store_true", help="keep documents whose files disappeared")
    p.add_argument("--encoder", help="sentence-transformers model name or directory (new index only)")
    p.add_argument("--chunk-size", type=int, help="passage length in word pieces (new index only)")
    p.add_argument("--chunk-overlap", type=int, help="overlap in word pieces (new index only)")
    p.add_argument("--max-file-mb", type=float, help="skip files larger than this")
    p.add_argument("--follow-links", action="store_true", default=None,
                   help="follow symlinks that lead out of the ingested folders (skipped by default)")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait if another process writes the index")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="read, split and encode on a Ray cluster: ADDRESS (e.g. ray://head:10001 or "
                        "head:6379) joins one, no ADDRESS starts Ray on this machine; files must be at the "
                        "same path on every node (needs pip install -e '.[ray]')")
    p.add_argument("--shards", type=_positive, metavar="N",
                   help="make a new index of N shards, searched in parallel and merged (an index keeps "
                        "its number; --ray writes them in parallel; see docs/cluster.md)")


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="retrieve the best passages for a query")
    p.add_argument("query")
    _common(p)
    p.add_argument("-k", type=_positive, help="number of passages (default: the k setting, 4)")
    p.add_argument("--mode", choices=["dense", "keyword", "hybrid"], help="retrieval method")


def _ask_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question from the documents, with numbered sources",
                       description="Streams the answer as it is generated, then the numbered sources and timings.")
    p.add_argument("question")
    _common(p)
    p.add_argument("-k", type=_positive, help="sources to retrieve and show (default: the k setting, 4); the decoder "
                                             "reads the best answer_k of them (default: 1)")
    p.add_argument("--mode", choices=["dense", "keyword", "hybrid"], help="retrieval method")
    p.add_argument("--generator", help="decoder: auto (default: qwen2.5-0.5b for a multilingual index, else "
                                       "gemma3-270m), gemma3-270m, qwen2.5-0.5b, smollm2, a GGUF file, a Hugging "
                                       "Face model directory, or openai:MODEL for an OpenAI-compatible server "
                                       "(RAG_OPENAI_BASE_URL, key in OPENAI_API_KEY)")
    p.add_argument("--backend", choices=["auto", "llama.cpp", "transformers", "openai"], help="decoder runtime")
    p.add_argument("--max-tokens", type=int, help="longest answer in tokens")
    p.add_argument("--free", action="store_true",
                   help="let the decoder write freely instead of copying spans from the passages")
    p.add_argument("--server", metavar="URL",
                   help="ask a running `rag serve` (e.g. http://127.0.0.1:8000) instead of loading the models "
                        "here; key in RAG_API_KEY")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="measure retrieval (and answer) quality on a labelled dataset",
                       description="DATASET: SQuAD-format JSON (v1.1, v2.0, COVID-QA) or JSONL of "
                                   '{"question", "answers": [...], "source"}. Without --index, SQuAD-format '
                                   "data is indexed into indexes/eval-<name> once and reused.")
    p.add_argument("dataset")
    p.add_argument("--index", "-i", help="evaluate an existing index instead of building one")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--mode", choices=["dense", "keyword", "hybrid", "all"], default="all")
    p.add_argument("-k", default="1,5,10", help="cut-offs for recall (default: %(default)s)")
    p.add_argument("--limit", type=int, help="evaluate a random sample of this many questions")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default: %(default)s)")
    p.add_argument("--answers", action="store_true", help="also generate answers: EM, F1, abstention, latency")
    p.add_argument("--chunk-size", type=int, help="chunk size for a newly built index")
    p.add_argument("--chunk-overlap", type=int, help="chunk overlap for a newly built index")
    p.add_argument("--lang", metavar="LIST",
                   help="one table row per language: DATASET has {lang} in its path, LIST is codes "
                        "(ar,de,zh) and question:documents pairs (en:zh, parallel files such as XQuAD)")


def _ui_parser(sub) -> None:
    p = sub.add_parser("ui", help="open the web page (Streamlit)")
    _common(p, json_flag=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port (default: %(default)s)")


def _index_parsers(sub) -> None:
    """info, rebuild and remove: one index, described or repaired."""
    p = sub.add_parser("info", help="what the index holds")
    _common(p)

    p = sub.add_parser("rebuild", help="rebuild a damaged index from the documents it lists",
                       description="Re-ingests every document the index lists into a fresh index and swaps "
                                   "it in; the old one is kept as <index>.damaged-<time>.")
    _common(p)

    p = sub.add_parser("remove", help="remove a document (or all under a folder) from the index")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _common(p)


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="the HTTP API (OpenAI-compatible, with sources)",
                       description="Serve indexes over HTTP: /v1/chat/completions, /v1/models, /v1/embeddings "
                                   "(OpenAI-compatible, answers carry their sources), /v1/search, "
                                   "/v1/indexes/NAME[/documents]; API docs at /docs. See docs/api.md.")
    p.add_argument("--index", "-i", action="append", metavar="NAME",
                   help="index to serve (repeat for several; default: every index under indexes/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only; another needs --keys)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--keys", metavar="FILE", help="keys file: which key may read and write which index "
                                                  "(make one with `python -m rag.http.keys add FILE --index NAME`)")
    p.add_argument("--queue", type=int, help="questions waiting for the decoder before 429 "
                   f"(setting serve_queue, default {_SETTING['serve_queue']})")
    p.add_argument("--deadline", type=float, help="seconds a request may take in all "
                   f"(setting serve_deadline, default {_SETTING['serve_deadline']:g})")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="answer on Ray Serve replicas: ADDRESS of a Ray cluster (e.g. head:6379), or "
                        "`local` (the default with no ADDRESS); indexes at the same path on every node "
                        "(see docs/cluster.md; needs pip install -e '.[ray]')")
    p.add_argument("--replicas", default="1", metavar="N|MIN:MAX",
                   help="--ray: answerer replicas, each with its own encoder and decoder; MIN:MAX "
                        "scales with the load (default: %(default)s)")
    p.add_argument("--replica-cpus", type=float, default=1.0, metavar="N",
                   help="--ray: CPU cores each replica holds (default: %(default)s)")
    p.add_argument("--replica-gpus", type=float, default=0.0, metavar="N",
                   help="--ray: GPUs each replica holds, e.g. 1 (default: %(default)s)")


def _mcp_parser(sub) -> None:
    p = sub.add_parser("mcp", help="the MCP server over stdio, for assistants (Claude Desktop, VS Code, Cursor)",
                       description="Serve indexes to an assistant over the Model Context Protocol on stdin/stdout: "
                                   "tools search, ask, list_indexes, list_documents. See docs/mcp.md.")
    p.add_argument("--index", "-i", action="append", metavar="NAME",
                   help="index to serve (repeat for several; default: the index setting)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        return COMMANDS[args.command](args)
    except RagError as e:
        print(f"rag: error: {safe(str(e), keep_newlines=False)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rag: interrupted; the index is as it was at the last commit", file=sys.stderr)
        return 130


def _rag(args, **overrides):
    from rag.qa import RAG

    return RAG(args.index, **overrides)


def _emit(args, value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_failed(report) -> None:
    for f in report.failed:
        print(f"failed {safe(f.path, keep_newlines=False)}: {safe(f.reason, keep_newlines=False)}", file=sys.stderr)


def cmd_ingest(args) -> int:
    rag = _rag(args, encoder=args.encoder, chunk_size=args.chunk_size,
               chunk_overlap=args.chunk_overlap, max_file_mb=args.max_file_mb, follow_links=args.follow_links)
    # stdout carries only the report: what libraries print there (Ray's worker notices) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        report = rag.ingest(args.paths, prune=not args.no_prune, progress=not args.json, wait=args.wait,
                            engine="ray" if args.ray else "local",
                            address=None if args.ray in (None, "local") else args.ray, shards=args.shards)
        if args.ray:  # Ray's own goodbye lines come now, to stderr, not after the report
            from rag.index.cluster import disconnect

            disconnect()
    _print_failed(report)
    shown = report.skipped_files if args.verbose else report.skipped_files[:20]
    for f in shown:
        print(f"skipped {safe(f.path, keep_newlines=False)}: {safe(f.reason, keep_newlines=False)}", file=sys.stderr)
    if len(shown) < len(report.skipped_files):
        print(f"skipped {len(report.skipped_files) - len(shown)} more (-v or --json lists them all)", file=sys.stderr)
    for note in report.notes:
        print(f"note: {safe(note, keep_newlines=False)}", file=sys.stderr)
    if args.json:
        _emit(args, report.to_dict())
    else:
        print(report.summary())
    return 1 if report.failed else 0


def _text(value: str, what: str) -> str:
    """A question or query from the command line, or a usage error: bytes that are not UTF-8
    (Python keeps them as lone surrogates, which no encoder takes), or nothing visible."""
    if lone_surrogate(value):
        raise RagError(f"the {what} has bytes that are not UTF-8 text; type it again in a UTF-8 terminal")
    if is_blank(value):
        raise RagError(f"the {what} is empty (no visible characters)")
    return value


def cmd_search(args) -> int:
    _text(args.query, "query")
    rag = _rag(args)
    searched = rag.translated_query(args.query)
    if searched:
        print(f"searched as: {safe(searched, keep_newlines=False)}", file=sys.stderr)
    hits = rag.search(args.query, k=args.k, mode=args.mode)  # the translation is remembered
    if args.json:
        keys = ("rank", "score", "source", "page", "heading", "text", "chunk_id")
        _emit(args, [{k: getattr(h, k) for k in keys} for h in hits])
        return 0
    if not hits:
        print("no passages found")
    for h in hits:
        print(f"[{h.rank}] {h.score:.3f}  {safe(where(h), keep_newlines=False)}")
        print(textwrap.indent(safe(textwrap.shorten(h.text, 400, placeholder=" ...")), "    "))
    return 0


def cmd_ask(args) -> int:
    _text(args.question, "question")
    if args.server: return _ask_remote(args)  # noqa: E701
    from rag.core.records import Answer

    rag = _rag(args, generator=args.generator, backend=args.backend, copy=False if args.free else None)
    live = sys.stdout.isatty() and not args.json  # a terminal sees the decoder's words as they come
    answer, drafted = None, ""
    for event in rag.stream(args.question, k=args.k, mode=args.mode, max_tokens=args.max_tokens):
        if isinstance(event, Answer):
            answer = event
        elif live:  # a draft, shown dim on a status line that the answer then replaces
            drafted += event
            print(f"\r\033[2m{safe(_last_line(drafted))}\033[0m\033[K", end="", flush=True)
    if args.json:
        _emit(args, answer.to_dict())
        return 0
    if drafted and live:
        print("\r\033[K", end="")
    _print_answer(answer, bold=live)
    return 0


def _print_answer(answer, bold: bool, server: str = "") -> None:
    """An answer, its sources, and (on stderr) what was searched and the timings; `server`: the
    `rag serve` it came from."""
    print(terminal(answer, bold=bold))
    _print_sources(answer.sources, answer.found)
    if answer.searched:
        print(f"\nsearched as: {safe(answer.searched, keep_newlines=False)}", file=sys.stderr)
    print("\n" + timings_line(answer.timings) + (f" (server {safe(server, keep_newlines=False)})" if server else ""),
          file=sys.stderr)


def _last_line(text: str) -> str:
    """What fits the terminal's status line: the end of the draft."""
    width = max(10, shutil.get_terminal_size().columns - 1)
    flat = " ".join(text.split())
    return flat[-width:]


def _print_sources(sources, found: bool) -> None:
    if sources:
        print("\nSources:" if found else "\nClosest passages:")
    for s in sources:
        mark = "*" if s.cited else " "
        print(f"{mark}[{s.n}] {safe(where(s), keep_newlines=False)}  (score {s.score:.3f})")
        print(textwrap.indent(safe(textwrap.shorten(s.evidence or s.text, 240, placeholder=" ...")), "     "))


def cmd_eval(args) -> int:
    from rag.evaluate import format_table, run_eval

    modes = ("dense", "keyword", "hybrid") if args.mode == "all" else (args.mode,)
    ks = tuple(int(k) for k in args.k.split(","))
    if args.lang:
        from rag.evaluate import format_languages, run_languages

        if args.index:
            raise RagError("--lang builds one index per language: leave out --index")
        result = run_languages(args.dataset, args.lang, modes, ks, args.limit, args.seed, progress=not args.json,
                               answers=args.answers, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
        if args.json:
            _emit(args, result)
        else:
            print(format_languages(result))
        return 0
    result = run_eval(args.dataset, args.index, modes, ks, args.limit, args.seed, args.answers,
                      progress=not args.json, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    if args.json:
        _emit(args, result)
    else:
        print(format_table(result))
    return 0


def cmd_ui(args) -> int:
    from pathlib import Path

    app = Path(__file__).resolve().parents[1] / "ui" / "app.py"
    if not app.is_file():
        raise RagError(f"the web UI is not installed ({app} is missing); install rag from its source tree")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host,
               "--server.port", str(args.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal", "--", "--index", args.index]
    print(f"rag ui: http://{args.host}:{args.port}  (index {args.index}; Ctrl+C stops)", file=sys.stderr)
    os.execv(sys.executable, command)


def cmd_info(args) -> int:
    info = _rag(args).info()
    if args.json:
        _emit(args, asdict(info))
        return 0
    for key in ("index", "documents", "chunks", "tokens", "encoder", "dimension", "index_type",
                "chunk_size", "chunk_overlap", "created", "last_ingest"):
        print(f"{key:14} {getattr(info, key)}")
    print(f"{'size':14} {info.size_bytes / 2**20:.1f} MB")
    print(f"{'failed':14} {len(info.failed)}")
    for f in info.failed:
        print(f"  {safe(f.path, keep_newlines=False)}: {safe(f.reason, keep_newlines=False)}")
    return 0


def cmd_remove(args) -> int:
    rag = _rag(args)
    removed = sum(rag.remove(p) for p in args.paths)
    if args.json:
        _emit(args, {"removed": removed})
    else:
        print(f"removed {removed} document(s)")
    return 0 if removed else 1


def cmd_rebuild(args) -> int:
    report = _rag(args).rebuild(progress=not args.json)
    _print_failed(report)
    if args.json:
        _emit(args, report.to_dict())
    else:
        print(report.summary())
    return 1 if report.failed else 0


def cmd_serve(args) -> int:
    from rag.http.app import serve

    if args.ray:
        from rag.http.replicas import serve as serve_on_ray

        serve_on_ray(args.index, args.host, args.port, args.keys, args.queue, args.deadline, args.ray,
                     args.replicas, args.replica_cpus, args.replica_gpus)
        return 0
    serve(args.index, args.host, args.port, args.keys, queue=args.queue, deadline=args.deadline)
    return 0


def cmd_mcp(args) -> int:
    from rag.mcp.server import serve_stdio

    serve_stdio(args.index or [_default_index()])
    return 0


def _ask_remote(args) -> int:
    """`rag ask --server URL`: the same output, from a running `rag serve`: its answer record
    rebuilt from the JSON fields and printed as a local one is."""
    from rag.core.paths import index_name
    from rag.core.records import Answer
    from rag.http.client import ServerError, ask

    data = ask(args.server, index_name(args.index), args.question, k=args.k, mode=args.mode, max_tokens=args.max_tokens)
    if args.json:
        _emit(args, {k: v for k, v in data.items() if k not in ("id", "object", "created", "model", "choices", "usage")})
        return 0
    try:
        answer = Answer.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ServerError(f"{args.server} answered without a rag answer's fields: is it a rag server?") from None
    _print_answer(answer, bold=sys.stdout.isatty(), server=args.server)
    return 0


COMMANDS = {"rebuild": cmd_rebuild, "ingest": cmd_ingest, "search": cmd_search, "ask": cmd_ask, "info": cmd_info,
            "remove": cmd_remove, "eval": cmd_eval, "ui": cmd_ui,
            "serve": cmd_serve, "mcp": cmd_mcp}

if __name__ == "__main__":
    sys.exit(main())
