"""EPUB e-books to sections: the chapters in the spine's reading order, each read as HTML
(its h1..h6 give the heading path; a chapter without headings is named by the book's table
of contents), with images' alt text kept. Books under DRM are refused with the reason: their
chapters are encrypted, and reading them would index ciphertext.

Plain zipfile and lxml (no e-book library): an EPUB is a zip of XHTML files and one XML
manifest, and the zip goes through the same inflated-size guard as .docx."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from rag.core.errors import UnreadableFile
from rag.readers.base import Budget, Limits, Section, open_archive, xml_root
from rag.readers.html import read_html, stream_html

_OPF = "{http://www.idpf.org/2007/opf}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_ENC = "{http://www.w3.org/2001/04/xmlenc#}"
_NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
_XHTML = "{http://www.w3.org/1999/xhtml}"
_EPUB = "{http://www.idpf.org/2007/ops}"
# Font obfuscation (IDPF and Adobe) is listed in encryption.xml too, but is not DRM: the text is clear
FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}
# Tags ("<") in a chapter past which it is streamed rather than parsed whole: a long novel's
# chapter has a few thousand, a whole book in one file some tens of thousands; parsed whole, a
# 20 MB chapter of <p>a</p> (5 million) took 214 s and 5.1 GB
MAX_CHAPTER_TAGS = 200_000
CHAPTER_TYPES = {"application/xhtml+xml", "text/html", "application/x-dtbook+xml"}


def read_epub(data: bytes, limits: Limits) -> list[Section]:
    import zipfile

    from lxml import etree

    try:
        with open_archive(data, limits, ".epub") as archive:
            names = archive.names
            _refuse_drm(archive, names)
            opf = _rootfile(archive)
            package = xml_root(archive, opf)
            folder = posixpath.dirname(opf)
            manifest = {}
            for item in package.iter(_OPF + "item"):
                href = posixpath.normpath(posixpath.join(folder, unquote(item.get("href") or "")))
                manifest[item.get("id")] = (href, item.get("media-type") or "", item.get("properties") or "")
            titles = _toc(archive, names, manifest, package)
            sections, size, seen = [], 0, set()
            for itemref in package.iter(_OPF + "itemref"):
                href, kind, _ = manifest.get(itemref.get("idref"), ("", "", ""))
                if kind not in CHAPTER_TYPES or href not in names or href in seen:
                    continue  # a chapter listed twice in the spine is read once
                seen.add(href)
                for section in _chapter(archive.read(href), limits, archive.budget):
                    if not section.heading and titles.get(href):
                        section.heading = titles[href]
                    size += len(section.text)
                    limits.check_text(size)
                    sections.append(section)
            return sections
    except UnreadableFile:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, etree.XMLSyntaxError, EOFError) as e:
        raise UnreadableFile(f"corrupt .epub ({type(e).__name__})") from e


def _refuse_drm(archive, names: set[str]) -> None:
    if "META-INF/rights.xml" in names:
        raise UnreadableFile("DRM-protected e-book (META-INF/rights.xml): its chapters are encrypted")
    if "META-INF/encryption.xml" in names:
        root = xml_root(archive, "META-INF/encryption.xml")
        for method in root.iter(_ENC + "EncryptionMethod"):
            if method.get("Algorithm") not in FONT_OBFUSCATION:
                raise UnreadableFile("DRM-protected e-book (META-INF/encryption.xml): its chapters are encrypted")


def _rootfile(archive) -> str:
    """The package document's path, from META-INF/container.xml (or the one .opf there is)."""
    try:
        container = xml_root(archive, "META-INF/container.xml")
        for rootfile in container.iter(_CONTAINER + "rootfile"):
            if rootfile.get("full-path"):
                return rootfile.get("full-path")
    except KeyError:
        pass
    opfs = [n for n in archive.namelist() if n.endswith(".opf")]
    if not opfs:
        raise UnreadableFile("corrupt .epub (no package document: META-INF/container.xml or .opf)")
    return opfs[0]


def _toc(archive, names: set[str], manifest: dict, package) -> dict[str, str]:
    """Chapter file -> its title in the table of contents (EPUB 3 nav, else EPUB 2 NCX)."""
    from lxml import etree

    titles: dict[str, str] = {}
    nav = next((href for href, _, props in manifest.values() if "nav" in props.split()), None)
    ncx = next((href for href, kind, _ in manifest.values() if kind == "application/x-dtbncx+xml"), None)
    try:
        if nav and nav in names:
            root = xml_root(archive, nav)
            for link in root.iter(_XHTML + "a"):
                href = (link.get("href") or "").split("#")[0]
                title = " ".join("".join(link.itertext()).split())
                if href and title:
                    titles.setdefault(posixpath.normpath(posixpath.join(posixpath.dirname(nav), unquote(href))), title)
        elif ncx and ncx in names:
            root = xml_root(archive, ncx)
            for point in root.iter(_NCX + "navPoint"):
                label, content = point.find(f"{_NCX}navLabel/{_NCX}text"), point.find(_NCX + "content")
                if label is not None and content is not None and label.text:
                    href = (content.get("src") or "").split("#")[0]
                    titles.setdefault(posixpath.normpath(posixpath.join(posixpath.dirname(ncx), unquote(href))),
                                      " ".join(label.text.split()))
    except etree.XMLSyntaxError:
        return {}  # a broken table of contents costs the titles only
    return titles


def _chapter(data: bytes, limits: Limits, budget: Budget) -> list[Section]:
    """One XHTML chapter through the HTML reader, images replaced by their alt text first.
    The chapter's <header> is unwrapped: books put their chapter headings in it, and the HTML
    reader drops page headers. A chapter of more than MAX_CHAPTER_TAGS tags is streamed
    instead, element by element, within the file's parse time (the HTML reader holds about
    2 KB per tag)."""
    from bs4 import BeautifulSoup

    if data.count(b"<") > MAX_CHAPTER_TAGS:
        return stream_html(data, limits, budget.tick, book=True)
    soup = BeautifulSoup(data, "lxml")
    for img in soup.find_all("img"):
        alt = " ".join((img.get("alt") or "").split())
        img.replace_with(f" [Image: {alt}] " if alt else "")
    for header in soup.find_all("header"):
        header.unwrap()
    return read_html(str(soup).encode(), limits)
