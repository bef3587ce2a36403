"""Ingest speed, memory and retrieval quality: rag against the pipeline a user would write
with LangChain (DirectoryLoader + RecursiveCharacterTextSplitter + HuggingFaceEmbeddings on
the same bundled MiniLM + FAISS.from_documents + save_local), on the same files, each in its
own child process (peak RSS per pipeline).

    .venv/bin/pip install langchain-community langchain-huggingface   # the peer only
    .venv/bin/python benchmarks/ingest.py                  # COVID-QA's 98 articles
    .venv/bin/python benchmarks/ingest.py --corpus big --mb 50 --only rag   # memory on ~50 MB
    .venv/bin/python benchmarks/ingest.py --engine local,ray --only rag     # rag on one machine vs on Ray

`rag-ray` is `rag ingest --ray` on a local Ray started by the run: its wall time includes
Ray's start-up (also shown on its own) and the actors loading their encoders; peak RSS is the
driver's (the process that writes the index).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "datasets"
COVID = DATA / "covidqa_deepset" / "200423_covidQA.json"


def make_corpus(kind: str, folder: Path, mb: float) -> Path:
    """covid: the 98 articles as files. big: ~mb MB of distinct files mixing SQuAD and COVID
    paragraphs (shuffled per file, so no two files are identical and dedup does not help)."""
    from rag.evaluate import load, write_contexts

    covid = load(COVID)
    if kind == "covid":
        return write_contexts(covid, folder)
    squad = load(DATA / "squad_dev" / "squad-dev-v1.1.json")
    paragraphs = [p for t in list(covid.contexts.values()) + list(squad.contexts.values()) for p in t.split("\n") if len(p) > 200]
    folder.mkdir(parents=True, exist_ok=True)
    rng, size, n = random.Random(0), 0, 0
    while size < mb * 1e6:
        text = "\n\n".join(rng.sample(paragraphs, 40))
        (folder / f"doc{n:05d}.txt").write_text(text)
        size, n = size + len(text.encode()), n + 1
    return folder


def run_rag(corpus: Path, out: Path, engine: str = "local") -> dict:
    from rag import RAG

    rag = RAG(out)
    rag.encoder.model  # model load is not ingest work (same for the peer)
    t = time.perf_counter()
    startup = None
    if engine == "ray":
        from rag.index.cluster import connect

        connect(None)
        startup = time.perf_counter() - t
    report = rag.ingest([corpus], engine=engine)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "chunks": report.chunks, "tokens": report.tokens,
            "failed": len(report.failed), "ray_startup_s": startup, "files_per_node": report.files_per_node}


def run_peer(corpus: Path, out: Path) -> dict:
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.models.catalog import encoder_path

    embeddings = HuggingFaceEmbeddings(model_name=encoder_path("all-MiniLM-L6-v2"),
                                       encode_kwargs={"normalize_embeddings": True})
    embeddings.embed_query("warm up")
    t = time.perf_counter()
    docs = DirectoryLoader(str(corpus), glob="**/*.txt", loader_cls=TextLoader).load()
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200,
                                            add_start_index=True).split_documents(docs)
    db = FAISS.from_documents(chunks, embeddings)
    db.save_local(str(out))
    seconds = time.perf_counter() - t
    tok = embeddings._client.tokenizer
    tokens = sum(len(ids) for ids in tok([c.page_content for c in chunks], add_special_tokens=False)["input_ids"])
    return {"seconds": seconds, "chunks": len(chunks), "tokens": tokens, "failed": 0}


def recall_rag(out: Path, questions, k: int = 5) -> float:
    from rag import RAG
    from rag.evaluate import is_hit

    rag = RAG(out)
    return sum(any(is_hit(h, q, True) for h in rag.search(q.question, k=k)) for q in questions) / len(questions)


def recall_peer(out: Path, questions, k: int = 5) -> float:
    from types import SimpleNamespace

    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings

    from rag.evaluate import is_hit
    from rag.models.catalog import encoder_path

    embeddings = HuggingFaceEmbeddings(model_name=encoder_path("all-MiniLM-L6-v2"),
                                       encode_kwargs={"normalize_embeddings": True})
    db = FAISS.load_local(str(out), embeddings, allow_dangerous_deserialization=True)
    found = 0
    for q in questions:
        docs = db.similarity_search(q.question, k=k)
        hits = [SimpleNamespace(source=d.metadata["source"], start=d.metadata["start_index"],
                                end=d.metadata["start_index"] + len(d.page_content)) for d in docs]
        found += any(is_hit(h, q, True) for h in hits)
    return found / len(questions)


def child(args) -> None:
    """One pipeline in this process: ingest, then (optionally) recall; prints JSON."""
    corpus, out = Path(args.corpus_dir), Path(args.out)
    if args.child == "peer":
        result = run_peer(corpus, out)
    else:
        result = run_rag(corpus, out, "ray" if args.child == "rag-ray" else "local")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["index_mb"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    if args.questions:
        from rag.evaluate import load, sample

        questions = [q for q in sample(load(COVID).questions, args.questions, 0) if not q.impossible]
        result["recall@5"] = (recall_peer if args.child == "peer" else recall_rag)(out, questions)
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=["covid", "big"], default="covid")
    ap.add_argument("--mb", type=float, default=50.0, help="size of the big corpus")
    ap.add_argument("--only", choices=["rag", "peer"], help="run rag's engines or the peer only")
    ap.add_argument("--engine", default="local", help="rag engines to run: local, ray or local,ray")
    ap.add_argument("--questions", type=int, default=1000, help="COVID-QA questions for recall@5 (covid corpus)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["rag", "rag-ray", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        corpus = make_corpus(args.corpus, work / "corpus", args.mb)
        mb = sum(f.stat().st_size for f in corpus.iterdir()) / 1e6
        rows = {}
        names = [{"local": "rag", "ray": "rag-ray"}[e] for e in args.engine.split(",")] + ["peer"]
        for name in names:
            if args.only and name.split("-")[0] != args.only:
                continue
            cmd = [sys.executable, __file__, "--child", name, "--corpus-dir", str(corpus),
                   "--out", str(work / f"index-{name}"),
                   "--questions", str(args.questions if args.corpus == "covid" else 0)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows.values():
        r["chunks_per_s"] = r["chunks"] / r["seconds"]
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
    if args.json:
        print(json.dumps({"corpus": args.corpus, "corpus_mb": mb, "rows": rows}, indent=2))
        return
    print(f"corpus {args.corpus}: {mb:.1f} MB")
    print("| pipeline | wall s | chunks | chunks/s | word pieces/s | peak RSS MB | index MB | recall@5 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.1f} | {r['chunks']} | {r['chunks_per_s']:.1f} | {r['tokens_per_s']:.0f} "
              f"| {r['peak_rss_mb']:.0f} | {r['index_mb']:.1f} | {r.get('recall@5', float('nan')):.3f} |")
    if "rag-ray" in rows:
        ray_row = rows["rag-ray"]
        print(f"\nrag-ray: Ray start-up {ray_row['ray_startup_s']:.1f} s; files per node {ray_row['files_per_node']}")
        if "rag" in rows:
            print(f"rag-ray / rag wall time: {ray_row['seconds'] / rows['rag']['seconds']:.2f}x")
    if "rag" in rows and "peer" in rows:
        rag, peer = rows["rag"], rows["peer"]
        print(f"| rag/peer | {peer['seconds'] / rag['seconds']:.2f}x faster | | "
              f"{rag['chunks_per_s'] / peer['chunks_per_s']:.2f}x | {rag['tokens_per_s'] / peer['tokens_per_s']:.2f}x "
              f"| {rag['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x | {rag['index_mb'] / peer['index_mb']:.2f}x "
              f"| {rag.get('recall@5', 0) - peer.get('recall@5', 0):+.3f} |")


if __name__ == "__main__":
    main()
