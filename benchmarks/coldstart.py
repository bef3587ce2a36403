"""Cold start: what a new process costs before its first result, as a user meets it (every
`rag ask` in a terminal is a new process). Models are already exported and the files are in
the page cache (one untimed run first); each figure is best and median of --runs.

    .venv/bin/python benchmarks/coldstart.py [--base /tmp/coldstart-base] [--runs 5] [--page]

- `import rag.cli`: a new `python -c "import rag.cli"` (wall), and `-X importtime`'s cumulative
  figure for rag.cli;
- `rag search` / `rag ask`: a new `python -m rag.cli search|ask QUESTION --index IX` on an index
  of docs/, wall time to exit; and which heavy modules (torch, transformers,
  sentence_transformers) the search process imported;
- `--page`: from opening the web page (server already up) to "models ready" in the sidebar,
  in Chromium (playwright), a new server per run.

`--base DIR` runs the same measures on another checkout (e.g. `git worktree add /tmp/coldstart-base
<commit>`) with PYTHONPATH=DIR, interleaved with this tree's runs (base, this, base, ...) so
the machine's load falls on both alike."""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache" / "coldstart"
QUESTION = "How do I ingest a folder?"
HEAVY = ("torch", "transformers", "sentence_transformers")
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def env_for(tree: Path) -> dict:
    """The tree first on the path, and bytecode written as for a user (into the cache here, not
    the source tree): without it every run recompiles rag's modules (about 50 ms)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(CACHE / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def check_tree(tree: Path) -> str:
    """The tree's commit (and +changes), after checking that PYTHONPATH wins over the editable install."""
    found = subprocess.run([sys.executable, "-c", "import rag; print(rag.__file__)"], env=env_for(tree),
                           capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"PYTHONPATH={tree} imports rag from {found}, not from that tree")
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def index(tree: Path) -> Path:
    """An index of docs/ built once (by this tree's code) and shared by every tree measured."""
    target = CACHE / "index-docs"
    if not (target / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(ROOT / "docs"), "--index", str(target)],
                       env=env_for(tree), check=True, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return target


def timed(command: list[str], tree: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env_for(tree), capture_output=True, text=True, cwd=tempfile.gettempdir())
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return took, done


def import_cumulative(tree: Path) -> float:
    """rag.cli's cumulative import time in seconds, by -X importtime."""
    _, done = timed([sys.executable, "-X", "importtime", "-c", "import rag.cli"], tree)
    line = [ln for ln in done.stderr.splitlines() if ln.rstrip().endswith("| rag.cli")][-1]
    return int(line.split("|")[1]) / 1e6


def heavy_imports(tree: Path, ix: Path) -> str:
    """Which heavy modules a `rag search` process imported (-X importtime lists every import)."""
    _, done = timed([sys.executable, "-X", "importtime", "-m", "rag.cli", "search", QUESTION, "--index", str(ix)], tree)
    names = {ln.split("|")[-1].strip() for ln in done.stderr.splitlines() if ln.startswith("import time:")}
    found = [h for h in HEAVY if h in names]
    return ", ".join(found) if found else "none"


def page_ready(tree: Path, ix: Path, text: str, timeout: float = 180) -> float:
    """Seconds from opening the page (server up and healthy) until `text` shows, in Chromium."""
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "rag.cli", "ui", "--index", str(ix), "--port", str(port)],
                              env=env_for(tree), cwd=tempfile.gettempdir(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium())
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(url)
            page.get_by_text(re.compile(text)).first.wait_for(timeout=timeout * 1000)
            took = time.perf_counter() - start
            browser.close()
        return took
    finally:
        server.terminate()
        server.wait(timeout=30)


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(name).exists():
            return name
    return None  # playwright's own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="another checkout to measure the same way (the 'before')")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-ask", action="store_true", help="skip `rag ask` (it needs the decoder)")
    parser.add_argument("--page", action="store_true", help="also the web page's time to ready (Chromium)")
    parser.add_argument("--ready-text", default="models ready", help="what the page shows when ready")
    args = parser.parse_args()

    trees = ([("before", args.base.resolve())] if args.base else []) + [("this tree", ROOT)]
    labels = {name: f"{name} ({check_tree(tree)})" for name, tree in trees}
    ix = index(ROOT)
    py = [sys.executable]
    measures = {
        "`python -c 'import rag.cli'`": lambda t: timed(py + ["-c", "import rag.cli"], t)[0],
        "`python -m rag.cli search Q`": lambda t: timed(py + ["-m", "rag.cli", "search", QUESTION, "--index", str(ix)], t)[0],
    }
    if not args.no_ask:
        measures["`python -m rag.cli ask Q`"] = lambda t: timed(
            py + ["-m", "rag.cli", "ask", QUESTION, "--index", str(ix)], t)[0]
    if args.page:
        measures["page: open to ready"] = lambda t: page_ready(t, ix, args.ready_text)

    for _, tree in trees:  # untimed: exports the models once, fills the page cache
        for name, measure in measures.items():
            if not name.startswith("page"):
                measure(tree)
    times = {(m, t): [] for m in measures for t, _ in trees}
    cumulative = {t: [] for t, _ in trees}
    for _ in range(args.runs):
        for m, measure in measures.items():
            for t, tree in trees:
                times[m, t].append(measure(tree))
        for t, tree in trees:
            cumulative[t].append(import_cumulative(tree))
    heavy = {t: heavy_imports(tree, ix) for t, tree in trees}

    def cell(values):
        return f"{min(values):.2f} / {statistics.median(values):.2f}"

    print(f"\ncold start, best / median of {args.runs} runs, seconds; {os.cpu_count()} CPUs "
          f"({_cpu_name()}); index: docs/ ({ix})\n")
    print("| measure | " + " | ".join(labels[t] for t, _ in trees) + " |")
    print("|---|" + "---|" * len(trees))
    print("| `-X importtime` cumulative for rag.cli | " + " | ".join(cell(cumulative[t]) for t, _ in trees) + " |")
    for m in measures:
        print(f"| {m} | " + " | ".join(cell(times[m, t]) for t, _ in trees) + " |")
    print("| heavy modules a search imports | " + " | ".join(heavy[t] for t, _ in trees) + " |")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
