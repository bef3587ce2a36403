"""Held-out corpora for hybrid search (issue 37): the documentation of an installed package asked
the questions of its own FAQ, over the whole package. No fusion rule was chosen on them.

- valgrind: the HTML manual Debian's valgrind package installs (/usr/share/doc/valgrind/html, 40
  pages: the core manual, each tool's, the release notes, the licences, the FAQ); the FAQ's
  questions, the gold passage the first paragraph of each answer.
- git: every git man page (/usr/share/man/man1/git*.1.gz and man7/git*.7.gz, rendered by man(1),
  about 170 pages); the questions of gitfaq(7), the gold passage the first paragraph of each answer.
- git-pages: the same pages without gitfaq(7), its questions whose answer refers to other pages
  (git-config(1), or a command named: "git revert"); gold: any passage of a page referred to (no
  FAQ to match the words).
- lsof: lsof's documentation (/usr/share/doc/lsof: the FAQ, quick start, mailing-list note, Debian
  README; and lsof(8)) asked the FAQ's 287 questions, gold the first paragraph of each answer.
  Added after the fusion rule of issue 37 was chosen, and reported once.

Each is written as a SQuAD-format file, one context per page, so that `rag eval` and
benchmarks/hybrid.py read it as they read the shared sets (pages are long: a hit is a chunk
holding at least half of the gold paragraph's span):

    .venv/bin/python benchmarks/heldout.py            # -> benchmarks/.cache/heldout/*.json
    rag eval benchmarks/.cache/heldout/valgrind-faq.json --mode all
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

OUT = Path(__file__).resolve().parent / ".cache" / "heldout"
VALGRIND = Path("/usr/share/doc/valgrind/html")
MAN = Path("/usr/share/man")
LSOF = Path("/usr/share/doc/lsof")
BLOCKS = {"p", "div", "br", "tr", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table",
          "title", "blockquote"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip, self.pre = [], 0, 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")
        self.pre += tag == "pre"
        if tag in BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0
        self.pre -= tag == "pre" and self.pre > 0
        if tag in BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_text(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]*\n[ \t]*\n\s*", "\n\n", text)
    return text.strip()


def first_paragraph(text: str, limit: int = 200) -> str:
    para = next((p for p in text.split("\n\n") if len(p.strip()) > 20), text).strip()
    return para[:limit]


def _entry(question: str, page: str, text: str, answer: str, after: int) -> dict | None:
    start = text.find(answer, after)
    if start < 0 or not question:
        return None
    return {"question": question, "id": f"{page}-{start}", "answers": [{"text": answer, "answer_start": start}]}


def valgrind() -> dict:
    pages = {p.name.replace(".html", ".txt"): html_text(p.read_text(encoding="utf-8", errors="replace"))
             for p in sorted(VALGRIND.glob("*.html"))}
    faq = (VALGRIND / "faq.html").read_text(encoding="utf-8", errors="replace")
    text, qas, after = pages["faq.txt"], [], 0
    for q, a in re.findall(r'<tr class="question">(.*?)</tr>\s*<tr class="answer">(.*?)</tr>', faq, re.DOTALL):
        question = re.sub(r"^\d+\.\d+\.\s*", "", " ".join(html_text(q).split()))[:300]
        entry = _entry(question, "faq.txt", text, first_paragraph(html_text(a)), after)
        if entry:
            qas.append(entry)
            after = entry["answers"][0]["answer_start"]
    return squad("valgrind-faq", pages, "faq.txt", qas)


def man_text(path: Path) -> str:
    env = dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0")
    out = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True, env=env, check=True).stdout
    return re.sub(r".\x08", "", out)


def git() -> dict:
    files = sorted(MAN.glob("man1/git*.1.gz")) + sorted(MAN.glob("man7/git*.7.gz"))
    pages = {p.name.removesuffix(".gz") + ".txt": man_text(p) for p in files}
    text, qas = pages["gitfaq.7.txt"], []
    lines = text.split("\n")
    offset = 0
    for n, line in enumerate(lines):
        if (line.startswith("       ") and not line.startswith("        ") and line.rstrip().endswith("?")
                and n + 1 < len(lines) and lines[n + 1].startswith(" " * 11)):
            body = []
            for nxt in lines[n + 1:]:
                if not nxt.strip():
                    break
                body.append(nxt)
            answer = "\n".join(body).strip()[:200]
            head = [line.strip()]  # a question wrapped over lines: its earlier lines too
            for prev in reversed(lines[:n]):
                if not prev.startswith("       ") or prev.startswith("        ") or prev.rstrip().endswith("?"):
                    break
                head.insert(0, prev.strip())
            entry = _entry(" ".join(head), "gitfaq.7.txt", text, answer, offset)
            if entry:
                qas.append(entry)
        offset += len(line) + 1
    return squad("git-faq", pages, "gitfaq.7.txt", qas)


def git_pages() -> dict:
    """The git man pages without gitfaq(7), asked gitfaq's questions; gold: every page the
    FAQ's answer refers to (git-config(1) ...), any passage of it ("pages" of each question:
    the context file names rag eval gives them; benchmarks/hybrid.py reads them)."""
    files = sorted(MAN.glob("man1/git*.1.gz")) + sorted(MAN.glob("man7/git*.7.gz"))
    pages = {p.name.removesuffix(".gz") + ".txt": man_text(p) for p in files}
    faq = pages.pop("gitfaq.7.txt")
    pages = {name: text for name, text in pages.items() if text.strip()}
    ctx = {name: f"ctx{i:05d}.txt" for i, name in enumerate(pages)}  # as evaluate.load names them
    lines = faq.split("\n")
    starts = [n for n, line in enumerate(lines)
              if line.startswith("       ") and not line.startswith("        ") and line.rstrip().endswith("?")
              and n + 1 < len(lines) and lines[n + 1].startswith(" " * 11)]
    qas = []
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        head = [lines[a].strip()]
        for prev in reversed(lines[:a]):
            if not prev.startswith("       ") or prev.startswith("        ") or prev.rstrip().endswith("?"):
                break
            head.insert(0, prev.strip())
        body = "\n".join(lines[a + 1:b])
        refs = {f"{m[0]}.{m[1]}.txt" for m in re.findall(r"\b(git[\w-]*)\((\d)\)", body)}
        refs |= {f"git-{m}.1.txt" for m in re.findall(r"\bgit ([a-z][a-z-]+)\b", body)}  # "git revert"
        refs &= set(ctx)
        if refs:
            qas.append({"question": " ".join(head), "id": f"gitfaq-{a}", "pages": sorted(ctx[r] for r in refs),
                        "answers": [{"text": pages[min(refs)][:40], "answer_start": 0}], "first": min(refs)})
    data = []
    for name, text in pages.items():
        mine = [{k: v for k, v in q.items() if k != "first"} for q in qas if q["first"] == name]
        data.append({"title": name, "paragraphs": [{"context": text, "qas": mine}]})
    return {"version": "git-pages", "data": data}


_NUMBERED = re.compile(r"^(\d+(?:\.\d+)+)\.?[ \t]+(\S.*)$")


def numbered_faq(text: str) -> list[tuple[str, str]]:
    """(question, first paragraph of its answer) of a plain-text FAQ whose entries are numbered
    ("4.1. How do I ...?", "1.2.1<TAB>Are there ...?"), a question possibly wrapped over indented
    lines, then a blank line and the indented answer. The table of contents lists the same
    numbers without answers: each number's last entry is its own."""
    lines = text.split("\n")
    found: dict[str, tuple[str, str]] = {}
    for n, line in enumerate(lines):
        m = _NUMBERED.match(line)
        if not m:
            continue
        head, j = [m[2].strip()], n + 1
        while j < len(lines) and lines[j].strip() and lines[j][:1].isspace() and not _NUMBERED.match(lines[j]):
            head.append(lines[j].strip())
            j += 1
        question = " ".join(head)
        if not question.endswith("?") or j + 1 >= len(lines) or lines[j].strip() \
                or not lines[j + 1][:1].isspace() or not lines[j + 1].strip():
            continue
        body = []
        for nxt in lines[j + 1:]:
            if not nxt.strip():
                break
            body.append(nxt)
        found[m[1]] = (question, "\n".join(body).strip()[:200])
    return [qa for qa in found.values() if len(qa[1]) > 20]


def plain_faq(name: str, faq_page: str, pages: dict[str, str]) -> dict:
    text, qas, after = pages[faq_page], [], 0
    for question, answer in numbered_faq(text):
        entry = _entry(question[:300], faq_page, text, answer, after)
        if entry:
            qas.append(entry)
            after = entry["answers"][0]["answer_start"]
    return squad(name, pages, faq_page, qas)


def lsof() -> dict:
    """lsof's documentation (its FAQ, quick start, mailing-list note, Debian README and the
    lsof(8) man page) asked the FAQ's questions."""
    pages = {p.name.removesuffix(".gz") + ".txt": _read(p) for p in sorted(LSOF.iterdir())
             if p.name.startswith(("00", "README"))}
    pages["lsof.8.txt"] = man_text(MAN / "man8" / "lsof.8.gz")
    return plain_faq("lsof-faq", "00FAQ.txt", pages)


def _read(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8", errors="replace")


def squad(title: str, pages: dict[str, str], faq: str, qas: list[dict]) -> dict:
    data = [{"title": name, "paragraphs": [{"context": text, "qas": qas if name == faq else []}]}
            for name, text in pages.items() if text.strip()]
    return {"version": title, "data": data}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in (("valgrind-faq", valgrind), ("git-faq", git), ("git-pages", git_pages),
                        ("lsof-faq", lsof)):
        data = build()
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(data, ensure_ascii=False))
        questions = sum(len(p["qas"]) for d in data["data"] for p in d["paragraphs"])
        print(f"{path}: {len(data['data'])} pages, {questions} questions")


if __name__ == "__main__":
    main()
