"""What every reader shares: the records a file is read into (`Document`, `Section`), the
limits one file may expand to, text decoding, and safe access to zip archives and their XML
(no zip bombs, no entities, no network). Imports nothing of rag above the core."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, fields

from rag.core.errors import UnreadableFile
from rag.core.settings import Settings

# Every limit's default is the setting of the same name (rag/core/settings.py): one default each.
_SETTING = {f.name: f.default for f in fields(Settings)}


@dataclass(frozen=True)
class Limits:
    """What one file may expand to; each breach fails that file alone with a reason.
    Defaults are far above real documents (the 5,000-page PDF held) and far below what
    exhausts a 2-core, 24 GB machine."""

    max_inflated_mb: float = _SETTING["max_inflated_mb"]  # an archive's members once decompressed, in all
    max_text_mb: float = _SETTING["max_text_mb"]  # text extracted from one file
    max_json_depth: int = _SETTING["max_json_depth"]  # nesting of JSON values
    max_ocr_seconds: float = _SETTING["max_ocr_seconds"]  # OCR of one file's pages; pages past it are reported skipped
    max_parse_seconds: float = _SETTING["max_parse_seconds"]  # parsing one archive (.docx .pptx .xlsx .ods .epub)

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        """The limits a Settings object sets."""
        return cls(settings.max_inflated_mb, settings.max_text_mb, settings.max_json_depth, settings.max_ocr_seconds,
                   settings.max_parse_seconds)

    def check_text(self, n_chars: int) -> None:
        if n_chars > self.max_text_mb * 2**20:
            raise UnreadableFile(f"extracted text is over the {self.max_text_mb:g} MB limit (max_text_mb)")


@dataclass
class Section:
    """A run of text with one page and one heading path; `start` is its offset in the page text."""

    text: str
    page: int | None = None
    heading: str = ""
    start: int = 0


@dataclass
class Document:
    path: str
    sections: list[Section] = field(default_factory=list)
    skipped: list[tuple[int | None, str]] = field(default_factory=list)  # (page, why) of pages not read

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


class HeadingPath:
    """The headings above the current line: entering a level-n heading drops the ones at n
    and below ("Install > Linux" then a level-2 "Windows" gives "Install > Windows")."""

    def __init__(self):
        self.titles: list[str] = []

    def enter(self, level: int, title: str) -> None:
        del self.titles[level - 1:]
        self.titles.append(title)

    def __str__(self) -> str:
        return " > ".join(self.titles)


SNIFF_BYTES = 8192  # the head of a file that tells text from binary
MAX_CONTROL_SHARE = 0.05  # more control characters than this in the head: binary (text has ~0)

def decode(data: bytes) -> str:
    """Bytes to str: UTF-8 (with or without BOM), else the encoding charset-normalizer detects.
    Binary data is refused rather than turned into mojibake."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16").encode()
    elif b"\x00" in data[:SNIFF_BYTES]:
        encoding = _utf16_without_bom(data[:SNIFF_BYTES])
        if encoding is None:
            raise UnreadableFile("binary content, not text")
        try:
            data = data.decode(encoding).encode()
        except UnicodeDecodeError:
            raise UnreadableFile("binary content, not text") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise UnreadableFile("binary content or unknown text encoding") from None
        text = str(best)
    controls = sum(1 for c in text[:SNIFF_BYTES] if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > MAX_CONTROL_SHARE * min(len(text), SNIFF_BYTES):
        raise UnreadableFile("binary content, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _utf16_without_bom(head: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when every other byte is zero, as in UTF-16 text of Latin
    script (CJK UTF-16 without a BOM has no such tell and is left to the binary check)."""
    even, odd = head[0::2], head[1::2]
    if len(head) >= 4 and odd.count(0) >= 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if len(head) >= 4 and even.count(0) >= 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


class Budget:
    """What one file may cost as it is read, across all its parts (not per part): bytes
    inflated from its archive (`max_inflated_mb` in all, a member charged its declared size
    each time it is opened, before it inflates) and seconds of parsing (`max_parse_seconds`,
    checked as parts stream in and element by element)."""

    def __init__(self, limits: Limits):
        self.limits, self.inflated = limits, 0
        self.deadline = time.monotonic() + limits.max_parse_seconds

    def inflate(self, name: str, size: int) -> None:
        self.inflated += size
        if self.inflated > self.limits.max_inflated_mb * 2**20:
            raise UnreadableFile(f"the archive's members inflate to over {self.limits.max_inflated_mb:g} MB in all "
                                 f"(at {name}), the limit per file (max_inflated_mb)")
        self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise UnreadableFile(f"reading took over {self.limits.max_parse_seconds:g} s, the limit per file "
                                 "(max_parse_seconds)")


class _Member:
    """An archive member's stream that checks the file's parse time at every read."""

    def __init__(self, stream, budget: Budget):
        self.stream, self.budget = stream, budget

    def read(self, n: int = -1) -> bytes:
        self.budget.tick()
        return self.stream.read(n)

    def close(self) -> None:
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()


def _archive_class():
    import zipfile

    class Archive(zipfile.ZipFile):
        """A zip whose member reads are charged to one `Budget` (the file's); `names` is the
        set of its members, made once (zipfile rebuilds its list at every namelist())."""

        budget: Budget
        names: frozenset

        def open(self, name, mode="r", pwd=None, **kwargs):
            if mode != "r":
                return super().open(name, mode, pwd, **kwargs)
            info = name if isinstance(name, zipfile.ZipInfo) else self.getinfo(name)
            self.budget.inflate(info.filename, info.file_size)
            return _Member(super().open(info, mode, pwd, **kwargs), self.budget)

    return Archive


def open_archive(data: bytes, limits: Limits, kind: str, budget: Budget | None = None):
    """The zip inside a .docx, .pptx, .xlsx or .epub, refused when a member would inflate past
    `max_inflated_mb` (a zip bomb is refused before it inflates: zipfile never reads past a
    member's declared size), and its members' reads charged to `budget` (a new one when not
    given): a part listed many times cannot inflate the limit many times over."""
    import zipfile

    try:
        archive = _archive_class()(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise UnreadableFile(f"corrupt {kind} (not a zip archive)") from e
    archive.budget = budget or Budget(limits)
    archive.names = frozenset(info.filename for info in archive.filelist)
    for member in archive.infolist():
        if member.file_size > limits.max_inflated_mb * 2**20:
            archive.close()
            raise UnreadableFile(f"archive member {member.filename} inflates to "
                                 f"{member.file_size / 2**20:.0f} MB, over the "
                                 f"{limits.max_inflated_mb:g} MB limit (max_inflated_mb)")
    return archive


def xml_events(stream, tags, budget: Budget | None = None, keep=(), flat: bool = True):
    """Elements of `tags` as each ends (those inside another of `tags` too), from an archive
    member, with entities and network access off (no billion laughs, no fetching). With
    `flat`, elements outside any of `tags` are forgotten as they end, and inside one of them,
    an element that ends empty (what it held forgotten) is too unless its tag is in `keep`
    (what the caller reads there): a part of any size, of any elements, streams in flat memory
    as long as the caller `drop`s what it is given (without, 50 MB of elements the reader does
    not keep took 1.1-1.7 GB). Text outside `keep`'s elements (tails) is not kept."""
    from lxml import etree

    tags, tick = frozenset(tags), budget.tick if budget is not None else (lambda: None)
    if not flat:
        for _, element in etree.iterparse(stream, events=("end",), tag=tags, resolve_entities=False,
                                          no_network=True, remove_comments=True):
            tick()
            yield element
        return
    keep = frozenset(keep) | tags
    inside = 0  # how many of `tags` are open around the parser
    for event, element in etree.iterparse(stream, events=("start", "end"), resolve_entities=False,
                                          no_network=True, remove_comments=True, remove_pis=True):
        tag = element.tag
        if event == "start":
            if tag in tags:
                inside += 1
        elif tag in tags:
            inside -= 1
            tick()
            yield element
        elif not inside:
            drop(element)
        elif tag not in keep and not len(element):
            element.getparent().remove(element)


def drop(element) -> None:
    """Forget an element that was read, and the siblings before it: lxml's iterparse keeps
    every element it passes, so without this a part of any size is held whole in memory."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


MAX_WHOLE_PART_MB = 16  # a part parsed whole (manifest, styles, relationships): real ones are under 2 MB


def check_whole(archive, name: str) -> None:
    """Refuse a part that would be parsed whole (50 MB of XML so parsed took over a GB) when it
    is over MAX_WHOLE_PART_MB."""
    size = archive.getinfo(name).file_size
    if size > MAX_WHOLE_PART_MB * 2**20:
        raise UnreadableFile(f"archive member {name} is {size / 2**20:.0f} MB, over the {MAX_WHOLE_PART_MB} MB "
                             "a part read whole (manifest, styles, relationships, contents) may be")


def xml_root(archive, name: str):
    """A small archive member (manifest, relationships) parsed whole, entities and network off;
    one over MAX_WHOLE_PART_MB is refused."""
    from lxml import etree

    check_whole(archive, name)
    return etree.fromstring(archive.read(name), etree.XMLParser(resolve_entities=False, no_network=True))


# Records (CSV rows, JSON elements, JSON Lines) are grouped into sections of about this many
# characters, at record boundaries: the splitter packs each group's records into passages
# (a passage never crosses a section), works on small strings, and can stop a file at
# max_chunks_per_file without splitting it all. A section per record made a passage per
# record (500,000 for a 5 MB JSON array); one section per file made the splitter take
# minutes over a 10 MB string before anything could be stored.
RECORD_GROUP_CHARS = 8192


def grouped(records, limits: Limits, separator: str = "\n", heading: str = "") -> list[Section]:
    """Records (each a self-contained string: keys or column names kept) as sections of about
    RECORD_GROUP_CHARS under `heading`, with offsets into the document's text. Used for CSV,
    JSON and spreadsheet rows alike."""
    sections, group, size, start, total = [], [], 0, 0, 0

    def close():
        nonlocal start, group, size
        if group:
            text = separator.join(group)
            sections.append(Section(text, heading=heading, start=start))
            start += len(text) + 2  # Document.text joins sections with a blank line
            group, size = [], 0

    for record in records:
        if not record.strip():
            continue
        if group and size + len(separator) + len(record) > RECORD_GROUP_CHARS:
            close()
        group.append(record)
        size += len(record) + len(separator)
        total += len(record) + len(separator)
        limits.check_text(total)  # a huge file fails here, before the rest is read
    close()
    return sections
