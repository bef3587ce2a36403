"""Held-out corpora for hybrid search (issue 37): the documentation of an installed package asked
the questions of its own FAQ, over the whole package. No fusion rule was chosen on them.

- valgrind: the HTML manual Debian's valgrind package installs (/usr/share/doc/valgrind/html, 40
  pages: the core manual, each tool's, the release notes, the licences, the FAQ); the FAQ's
  questions, the gold passage the first paragraph of each answer.
- git: every git man page (/usr/share/man/man1/git*.1.gz and man7/git*.7.gz, rendered by man(1),
  about 170 pages); the questions of gitfaq(7), the gold passage the first paragraph of each answer.

Each is written as a SQuAD-format file, one context per page, so that `rag eval` and
benchmarks/hybrid.py read it as they read the shared sets (pages are long: a hit is a chunk
holding at least half of the gold paragraph's span):

    .venv/bin/python benchmarks/heldout.py            # -> benchmarks/.cache/heldout/{valgrind,git}-faq.json
    rag eval benchmarks/.cache/heldout/valgrind-faq.json --mode all
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

OUT = Path(__file__).resolve().parent / ".cache" / "heldout"
VALGRIND = Path("/usr/share/doc/valgrind/html")
MAN = Path("/usr/share/man")
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


def squad(title: str, pages: dict[str, str], faq: str, qas: list[dict]) -> dict:
    data = [{"title": name, "paragraphs": [{"context": text, "qas": qas if name == faq else []}]}
            for name, text in pages.items() if text.strip()]
    return {"version": title, "data": data}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in (("valgrind-faq", valgrind), ("git-faq", git)):
        data = build()
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(data, ensure_ascii=False))
        questions = sum(len(p["qas"]) for d in data["data"] for p in d["paragraphs"])
        print(f"{path}: {len(data['data'])} pages, {questions} questions")


if __name__ == "__main__":
    main()
