"""Evaluation on labelled QA data: SQuAD-format JSON (v1.1, v2.0, COVID-QA, CMRC 2018) or
JSONL of {"question", "answers", "source"}. Retrieval metrics (recall@k, MRR@10, nDCG@10) and,
with a generator, answer metrics: exact match and F1 over words with the official SQuAD
normalisation, and over characters for Chinese answers, as the CMRC 2018 scorer does."""

from __future__ import annotations

import json
import math
import random
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rag.core.errors import BadDataset, RagError
from rag.core.present import plain
from rag.index.store import is_index_dir
from rag.language.text import characters, unspaced
from rag.qa import RAG


@dataclass
class Question:
    question: str
    answers: list[str]
    source: str | None  # file name of the gold context (None: unanswerable or unknown)
    answer_starts: list[int] = field(default_factory=list)
    impossible: bool = False


@dataclass
class Dataset:
    name: str
    contexts: dict[str, str]  # file name -> text (empty for JSONL sets without contexts)
    questions: list[Question]
    long_contexts: bool = False  # hits are judged by answer span, not by document


def load(path: str | Path) -> Dataset:
    """Read a dataset, checking its shape: a file that is not one names its first bad record
    (BadDataset, one line) instead of failing somewhere inside the evaluation."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise BadDataset(f"cannot read the dataset {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise BadDataset(f"{path} is not UTF-8 text; a dataset is SQuAD-format JSON or JSONL") from None
    if not text.strip():
        raise BadDataset(f"{path} is empty; a dataset is SQuAD-format JSON or JSONL of "
                         '{"question", "answers", "source"}')
    dataset = _load_jsonl(path, text) if path.suffix.lower() in (".jsonl", ".ndjson") else _load_squad(path, text)
    if not dataset.questions:
        raise BadDataset(f"{path} holds no questions")
    return dataset


def _bad(path: Path, where: str, what: str) -> BadDataset:
    return BadDataset(f"{path}: {where}: {what}" if where else f"{path}: {what}")


def _kind(value) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                                         int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _string(path: Path, where: str, record: dict, key: str, required: bool = True):
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        shown = "missing" if key not in record else "empty" if value == "" else _kind(value)
        raise _bad(path, where, f'"{key}" must be a non-empty string, not {shown}')
    return value


def _parse(path: Path, text: str, where: str = ""):
    try:
        return json.loads(text)
    except RecursionError:
        raise _bad(path, where, "JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        at = f"line {e.lineno} column {e.colno}" if not where else f"column {e.colno}"
        raise _bad(path, where, f"not valid JSON ({e.msg} at {at})") from None


def _load_jsonl(path: Path, text: str) -> Dataset:
    questions = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {n}"
        r = _parse(path, line, where)
        if not isinstance(r, dict):
            raise _bad(path, where, f'expected an object {{"question", "answers", "source"}}, not {_kind(r)}')
        question = _string(path, where, r, "question")
        answers = r.get("answers")
        answers = [] if answers is None else answers if isinstance(answers, list) else [answers]
        if not all(isinstance(a, str) for a in answers):
            raise _bad(path, where, '"answers" must be a string or a list of strings')
        source = _string(path, where, r, "source", required=False)
        questions.append(Question(question, answers, source, impossible=not answers))
    return Dataset(path.stem, {}, questions)


def _load_squad(path: Path, text: str) -> Dataset:
    top = _parse(path, text)
    if not isinstance(top, dict) or not isinstance(top.get("data"), list):
        hint = " (JSON Lines? name the file .jsonl)" if isinstance(top, dict) and "question" in top else ""
        raise _bad(path, "", 'expected SQuAD-format JSON, {"data": [{"paragraphs": [{"context", "qas"}]}]}, '
                   f"or a .jsonl file{hint}")
    contexts, questions = {}, []
    for i, article in enumerate(top["data"]):
        where = f"data[{i}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise _bad(path, where, 'expected an object with a "paragraphs" list')
        for j, para in enumerate(article["paragraphs"]):
            where = f"data[{i}].paragraphs[{j}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise _bad(path, where, 'expected an object with "context" and a "qas" list')
            context = _string(path, where, para, "context")
            name = f"ctx{len(contexts):05d}.txt"
            contexts[name] = context
            for q, qa in enumerate(para["qas"]):
                where = f"data[{i}].paragraphs[{j}].qas[{q}]"
                if not isinstance(qa, dict):
                    raise _bad(path, where, f'expected an object with a "question", not {_kind(qa)}')
                question = _string(path, where, qa, "question")
                given = qa.get("answers") or []
                if not isinstance(given, list) or not all(
                        isinstance(a, dict) and isinstance(a.get("text"), str)
                        and isinstance(a.get("answer_start", 0), int) and not isinstance(a.get("answer_start"), bool)
                        for a in given):
                    raise _bad(path, where, '"answers" must be a list of {"text": string, "answer_start": number}')
                answers = [a["text"] for a in given]
                starts = [a.get("answer_start", -1) for a in given]
                impossible = bool(qa.get("is_impossible")) or not answers
                questions.append(Question(question, answers, name, starts, impossible))
    mean = sum(map(len, contexts.values())) / max(1, len(contexts))
    return Dataset(path.stem, contexts, questions, long_contexts=mean > 5000)


def write_contexts(dataset: Dataset, folder: Path) -> Path:
    """Each context as its own text file: the corpus `rag ingest` indexes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in dataset.contexts.items():
        target = folder / name
        if not target.exists():
            target.write_text(text)
    return folder


def sample(questions: list[Question], limit: int | None, seed: int = 0) -> list[Question]:
    if not limit or limit >= len(questions):
        return list(questions)
    return random.Random(seed).sample(questions, limit)


def is_hit(hit, q: Question, long_contexts: bool) -> bool:
    """A hit is a chunk of the gold context; for long articles, a chunk that holds at least
    half of an answer's character span."""
    if q.source is None or Path(hit.source).name != q.source:
        return False
    if not long_contexts:
        return True
    for text, start in zip(q.answers, q.answer_starts):
        overlap = min(hit.end, start + len(text)) - max(hit.start, start)
        if overlap >= 0.5 * len(text):
            return True
    return False


def retrieval_metrics(search, questions: list[Question], long_contexts: bool = False,
                      ks=(1, 5, 10), progress: bool = False) -> dict:
    """search(question, k) -> hits. Recall@k, MRR@10, nDCG@10 and latency over answerable questions."""
    from tqdm import tqdm

    depth = max(max(ks), 10)
    ranks, latencies = [], []
    answerable = [q for q in questions if not q.impossible and q.source]
    for q in tqdm(answerable, desc="retrieval", disable=not progress, leave=False):
        t = time.perf_counter()
        hits = search(q.question, depth)
        latencies.append(time.perf_counter() - t)
        rank = next((i + 1 for i, h in enumerate(hits) if is_hit(h, q, long_contexts)), None)
        ranks.append(rank)
    n = max(1, len(ranks))
    out = {"questions": len(ranks)}
    for k in ks:
        out[f"recall@{k}"] = round(sum(1 for r in ranks if r and r <= k) / n, 4)
    out["mrr@10"] = round(sum(1 / r for r in ranks if r and r <= 10) / n, 4)
    out["ndcg@10"] = round(sum(1 / math.log2(r + 1) for r in ranks if r and r <= 10) / n, 4)
    out.update(latency_stats(latencies, "search"))
    return out


def latency_stats(seconds: list[float], prefix: str) -> dict:
    if not seconds:
        return {}
    s = sorted(seconds)
    pick = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    return {f"{prefix}_p50_ms": round(pick(0.5) * 1000, 1), f"{prefix}_p95_ms": round(pick(0.95) * 1000, 1)}


# --- answer metrics: the official SQuAD v1.1 evaluation normalisation ----------------------

def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def answer_units(text: str, chinese: bool) -> list[str]:
    """What F1 counts: SQuAD's normalised words, or for a gold answer in a script without
    spaces its characters (each CJK or Thai character, each English word or number,
    punctuation dropped)."""
    return characters(text) if chinese else normalize_answer(text).split()


def exact_match(prediction: str, truths: list[str]) -> float:

    return float(any(answer_units(prediction, _chinese(prediction, t)) == answer_units(t, _chinese(prediction, t))
                     for t in truths))


def _chinese(prediction: str, truth: str) -> bool:
    """Score by characters when either side is in a script without spaces, Chinese,
    Japanese, Thai (CMRC's rule: its answers include English names, which a Chinese
    prediction wraps in characters without spaces)."""
    return unspaced(truth) or unspaced(prediction)


def f1_score(prediction: str, truths: list[str]) -> float:

    def f1(pred, truth):
        chinese = _chinese(pred, truth)
        p, t = answer_units(pred, chinese), answer_units(truth, chinese)
        common = Counter(p) & Counter(t)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(t)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, t) for t in truths), default=0.0)


def contains_answer(prediction: str, truths: list[str]) -> float:

    def joined(text, chinese):
        return " ".join(answer_units(text, chinese))

    return float(any(joined(t, _chinese(prediction, t)) and
                     joined(t, _chinese(prediction, t)) in joined(prediction, _chinese(prediction, t))
                     for t in truths))


def recall_score(prediction: str, truths: list[str]) -> float:
    """Share of the gold answer's words (Chinese: characters) that the prediction holds: for
    sentence-long gold answers (COVID-QA), how much of the answer a reader got."""

    def recall(pred, truth):
        chinese = _chinese(pred, truth)
        p, t = answer_units(pred, chinese), answer_units(truth, chinese)
        return sum((Counter(p) & Counter(t)).values()) / len(t) if t else 0.0

    return max((recall(prediction, t) for t in truths), default=0.0)


def answer_metrics(ask, questions: list[Question], progress: bool = False) -> dict:
    """ask(question) -> Answer. Over answerable questions: EM / F1 of the short answer, the
    share whose whole answer and whose supporting sentences contain the gold answer, the
    gold-answer recall of the whole answer, and the false "not found" rate; abstention (the
    not-found answer) over unanswerable ones; latency percentiles."""
    from tqdm import tqdm

    em, f1, contains, wrong_abstain, first, total = [], [], [], [], [], []
    supported, recall = [], []
    abstain_ok = []
    for q in tqdm(questions, desc="answers", disable=not progress, leave=False):
        answer = ask(q.question)
        if answer.timings.first_token_ms is not None:
            first.append(answer.timings.first_token_ms / 1000)
        total.append(answer.timings.total_ms / 1000)
        if q.impossible:
            abstain_ok.append(not answer.found)
            continue
        whole = plain(answer)
        short = (answer.short or whole) if answer.found else ""
        em.append(exact_match(short, q.answers))
        f1.append(f1_score(short, q.answers))
        contains.append(contains_answer(whole, q.answers))
        supported.append(contains_answer(" ".join(answer.supporting), q.answers) if answer.found else 0.0)
        recall.append(recall_score(whole, q.answers))
        wrong_abstain.append(not answer.found)
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    out = {"answerable": len(em), "exact_match": mean(em), "f1": mean(f1), "contains_answer": mean(contains),
           "supporting_contains": mean(supported), "answer_recall": mean(recall),
           "wrongly_not_found": mean(wrong_abstain)}
    if abstain_ok:
        out.update({"unanswerable": len(abstain_ok), "abstained": mean(abstain_ok)})
    out.update(latency_stats(first, "first_token"))
    out.update(latency_stats(total, "total"))
    return out


def eval_index(dataset: Dataset, index: str | Path | None = None, progress: bool = False, **settings):
    """The RAG of a dataset's index: `indexes/eval-<name>` unless given, built from the
    dataset's contexts once (and brought up to date when they are its corpus)."""
    index = Path(index) if index else Path("indexes") / f"eval-{dataset.name}"
    if not is_index_dir(index) or (dataset.contexts and (index / "corpus").is_dir()):
        if not dataset.contexts:
            raise RagError(f"{dataset.name} has no contexts to index; pass --index with the documents it refers to")
        RAG(index, **settings).ingest([write_contexts(dataset, index / "corpus")], progress=progress)
    return RAG(index, **settings)


def run_eval(dataset_path: str | Path, index: str | Path | None = None, modes=("dense", "keyword", "hybrid"),
             ks=(1, 5, 10), limit: int | None = None, seed: int = 0, answers: bool = False,
             progress: bool = False, **settings) -> dict:
    """Evaluate retrieval (and answers) on a dataset. Without `index`, SQuAD-format data gets
    its own named index `indexes/eval-<name>`, built from its contexts once and reused."""
    dataset = load(dataset_path)
    rag = eval_index(dataset, index, progress, **settings)
    questions = sample(dataset.questions, limit, seed)
    result = {"dataset": dataset.name, "index": str(rag.root), "questions": len(questions),
              "seed": seed, "retrieval": {}}
    for mode in modes:
        result["retrieval"][mode] = retrieval_metrics(lambda q, k: rag.search(q, k=k, mode=mode), questions,
                                                      dataset.long_contexts, ks, progress)
    if answers:
        ask_mode = modes[-1] if len(modes) == 1 else rag.settings.mode
        result["answers"] = answer_metrics(lambda q: rag.ask(q, mode=ask_mode), questions, progress)
    return result


def format_table(result: dict) -> str:
    rows = result["retrieval"]
    ks = [k for k in next(iter(rows.values())) if k.startswith("recall@")]
    answerable = next(iter(rows.values()))["questions"]
    lines = [f"{result['dataset']}: {result['questions']} questions sampled (seed {result['seed']}), "
             f"{answerable} answerable scored for retrieval, index {result['index']}",
             "| mode | " + " | ".join(ks) + " | MRR@10 | nDCG@10 | search p50 ms |",
             "|---" * (len(ks) + 4) + "|"]
    for mode, m in rows.items():
        lines.append(f"| {mode} | " + " | ".join(f"{m[k]:.3f}" for k in ks)
                     + f" | {m['mrr@10']:.3f} | {m['ndcg@10']:.3f} | {m.get('search_p50_ms', '-')} |")
    if "answers" in result:
        a = result["answers"]
        lines.append("")
        lines.append(f"answers: exact match {a['exact_match']}, F1 {a['f1']} (short answer), contains answer "
                     f"{a['contains_answer']}, supporting sentence contains it {a['supporting_contains']}, "
                     f"gold-answer recall {a['answer_recall']}, "
                     f"answerable wrongly not found {a['wrongly_not_found']}"
                     + (f", unanswerable abstained {a['abstained']}" if "abstained" in a else "")
                     + f"; first token p50 {a.get('first_token_p50_ms')} ms, total p50 {a.get('total_p50_ms')} ms"
                     f" / p95 {a.get('total_p95_ms')} ms")
    return "\n".join(lines)


# --- per-language tables ---------------------------------------------------------------------

def language_pairs(spec: str) -> list[tuple[str, str]]:
    """"ar,de,en:zh" -> [("ar", "ar"), ("de", "de"), ("en", "zh")]: (language of the
    questions, language of the documents). A pair asks one file's questions over another
    file's paragraphs, which needs the two files to list the same paragraphs in the same
    order (XQuAD, MLQA's parallel sets)."""
    pairs = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        asked, _, docs = item.partition(":")
        if not re.fullmatch(r"[\w.-]+", asked) or (docs and not re.fullmatch(r"[\w.-]+", docs)):
            raise BadDataset(f"language list {spec!r}: {item!r} is neither a code (zh) nor a pair (en:zh)")
        pairs.append((asked, docs or asked))
    if not pairs:
        raise BadDataset("the language list is empty; give codes such as ar,de,en or pairs such as en:zh")
    return pairs


def run_languages(pattern: str, langs: str, modes=("dense", "keyword", "hybrid"), ks=(1, 5, 10),
                  limit: int | None = None, seed: int = 0, progress: bool = False,
                  index_dir: str | Path = "indexes", answers: bool = False, **settings) -> dict:
    """Retrieval per language: `pattern` names one dataset per language with "{lang}" in its
    path (../shared/datasets/xquad/xquad.{lang}.json). Each documents' language gets its own
    index, `<index_dir>/eval-<name>`; a pair "en:zh" asks the English file's questions over
    the Chinese file's index (the same sampled questions, by position, in every language).
    `answers`: each question is also answered, and the short answer scored against the gold
    answer of the documents' file (in the documents' language: the answer is copied from them)."""
    if "{lang}" not in str(pattern):
        raise BadDataset(f"{pattern}: a language list needs a dataset path with {{lang}} in it, "
                         "e.g. ../shared/datasets/xquad/xquad.{lang}.json")
    rows, loaded, rags = [], {}, {}
    for asked, docs in language_pairs(langs):
        for lang in (asked, docs):
            if lang not in loaded:
                loaded[lang] = load(str(pattern).replace("{lang}", lang))
        if docs not in rags:
            rags[docs] = eval_index(loaded[docs], Path(index_dir) / f"eval-{loaded[docs].name}", progress, **settings)
        rag, questions = rags[docs], sample(loaded[asked].questions, limit, seed)
        if asked != docs:
            missing = {q.source for q in questions if q.source} - set(loaded[docs].contexts)
            if missing:
                raise BadDataset(f"{asked}:{docs}: the {asked} questions refer to paragraphs the {docs} file "
                                 f"does not have ({sorted(missing)[0]}); pairs need parallel files")
        row = {"questions": asked, "documents": docs, "encoder": rag.info().encoder, "retrieval": {}}
        for mode in modes:
            row["retrieval"][mode] = retrieval_metrics(lambda q, k: rag.search(q, k=k, mode=mode), questions,
                                                       loaded[docs].long_contexts, ks, progress)
        if answers:
            gold = sample(loaded[docs].questions, limit, seed)
            asked_gold = [Question(q.question, g.answers, g.source, g.answer_starts, g.impossible)
                          for q, g in zip(questions, gold)]
            row["answers"] = answer_metrics(rag.ask, asked_gold, progress)
        rows.append(row)
    return {"pattern": str(pattern), "limit": limit, "seed": seed, "languages": rows}


def format_languages(result: dict) -> str:
    """One line per language (or pair), recall@k per mode; the default mode first."""
    rows = result["languages"]
    modes = list(rows[0]["retrieval"])
    modes = [m for m in ("hybrid", "dense", "keyword") if m in modes] + [m for m in modes if m not in ("hybrid", "dense", "keyword")]
    ks = [k for k in rows[0]["retrieval"][modes[0]] if k.startswith("recall@")]
    head = " / ".join(k.removeprefix("recall") for k in ks)
    lines = [f"{result['pattern']}: {rows[0]['retrieval'][modes[0]]['questions']} questions per language "
             f"(seed {result['seed']}), recall {head}",
             "| language | encoder | " + " | ".join(modes) + " |", "|---" * (len(modes) + 2) + "|"]
    answered = "answers" in rows[0]
    if answered:
        lines[1] = lines[1][:-1] + "| answer F1 | answered | total p50 s |"
        lines[2] += "---|---|---|"
    for r in rows:
        name = r["questions"] if r["questions"] == r["documents"] else f"{r['questions']} questions, {r['documents']} paragraphs"
        cells = [" / ".join(f"{r['retrieval'][m][k]:.3f}" for k in ks) for m in modes]
        if answered:
            a = r["answers"]
            cells += [f"{a['f1']:.3f}", f"{1 - a['wrongly_not_found']:.3f}", f"{a['total_p50_ms'] / 1000:.1f}"]
        lines.append(f"| {name} | {r['encoder']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
