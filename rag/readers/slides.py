"""PowerPoint (.pptx) to sections: one per slide, in the deck's order, its page the slide
number and its heading the slide's title. Every shape's text is kept (groups included),
tables as rows, pictures by their alt text, and the speaker notes under a marked line.

Read straight from the zip with lxml, streaming each slide part as the .docx reader does:
python-pptx builds the whole object tree, which a hostile deck can make huge."""

from __future__ import annotations

import posixpath

from rag.core.errors import UnreadableFile
from rag.readers.base import Limits, Section, drop, open_archive, xml_events

_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
TITLES = {"title", "ctrTitle"}
BOILERPLATE = {"dt", "sldNum", "ftr", "hdr", "sldImg"}  # date, slide number, footer: on every slide
NOTES_MARK = "Speaker notes:"
# What the reader reads inside a shape, table or picture (the rest is forgotten as it streams by)
_READ = (_P + "nvSpPr", _P + "nvPr", _P + "ph", _P + "nvPicPr", _P + "cNvPr", _A + "p", _A + "t", _A + "br",
         _A + "tr", _A + "tc")


def read_pptx(data: bytes, limits: Limits) -> list[Section]:
    import zipfile

    from lxml import etree

    try:
        with open_archive(data, limits, ".pptx") as archive:
            rels = _rels(archive, "ppt/presentation.xml")
            with archive.open("ppt/presentation.xml") as xml:  # streamed: its size is the file's to choose
                ids = []
                for element in xml_events(xml, (_P + "sldId",), archive.budget):
                    ids.append(element.get(_R + "id"))
                    drop(element)
            sections, size, seen = [], 0, set()
            for number, part in enumerate((rels.get(i) for i in ids), 1):
                if part is None or part not in archive.names or part in seen:
                    continue  # a slide listed twice is read once
                seen.add(part)
                title, lines = _slide_text(archive, part)
                notes_part = next((t for t, kind in _rels(archive, part, kinds=True).items()
                                   if kind.endswith("/notesSlide")), None)
                if notes_part and notes_part in archive.names:
                    _, notes = _slide_text(archive, notes_part, notes=True)
                    if any(n.strip() for n in notes):
                        lines += [NOTES_MARK] + notes
                text = "\n".join(line for line in lines if line.strip())
                size += len(text)
                limits.check_text(size)
                if text.strip() or title:
                    sections.append(Section(text or title, page=number, heading=title))
            return sections
    except (zipfile.BadZipFile, KeyError, ValueError, etree.XMLSyntaxError, EOFError) as e:
        raise UnreadableFile(f"corrupt .pptx ({type(e).__name__})") from e


def _rels(archive, part: str, kinds: bool = False) -> dict[str, str]:
    """A part's relationships: id -> target part (or target part -> type with `kinds`), streamed."""
    folder, name = posixpath.split(part)
    rels_part = posixpath.join(folder, "_rels", name + ".rels")
    if rels_part not in archive.names:
        return {}
    out = {}
    with archive.open(rels_part) as xml:
        for rel in xml_events(xml, (_REL + "Relationship",), archive.budget):
            if rel.get("TargetMode") != "External":
                target = posixpath.normpath(posixpath.join(folder, rel.get("Target") or ""))
                if kinds:
                    out[target] = rel.get("Type") or ""
                else:
                    out[rel.get("Id")] = target
            drop(rel)
    return out


def _paragraphs(element) -> list[str]:
    lines = []
    for p in element.iter(_A + "p"):
        parts = [node.text or "" if node.tag == _A + "t" else "\n"
                 for node in p.iter(_A + "t", _A + "br")]
        lines.append("".join(parts))
    return lines


def _slide_text(archive, part: str, notes: bool = False) -> tuple[str, list[str]]:
    """(title, lines) of one slide or notes part, shape by shape in the slide's order."""
    title, lines = "", []
    with archive.open(part) as xml:
        for element in xml_events(xml, (_P + "sp", _P + "graphicFrame", _P + "pic"), archive.budget, _READ):
            if element.tag == _P + "sp":
                ph = element.find(f"{_P}nvSpPr/{_P}nvPr/{_P}ph")
                kind = ph.get("type", "body") if ph is not None else ""
                text = "\n".join(_paragraphs(element)).strip()
                if kind in BOILERPLATE or (notes and kind != "body") or not text:
                    pass
                elif kind in TITLES and not title and not notes:
                    title = " ".join(text.split())
                else:
                    lines.append(text)
            elif element.tag == _P + "graphicFrame":
                for row in element.iter(_A + "tr"):
                    cells = [" ".join(" ".join(_paragraphs(cell)).split()) for cell in row.iter(_A + "tc")]
                    if any(cells):
                        lines.append(" | ".join(cells))
            else:
                props = element.find(f"{_P}nvPicPr/{_P}cNvPr")
                alt = (props.get("descr") or "").strip() if props is not None else ""
                if alt:
                    lines.append(f"[Image: {alt}]")
            drop(element)  # a group's shapes are read one by one: clearing each loses nothing
    return title, lines
