"""The answer a person reads, built around what the decoder chose. The decoder picks the
passage and the span; rag turns that into a complete statement: the short answer (a name,
a date, a number) inside the sentence of the source that supports it, or, for what/how/why
questions, the one to three sentences that answer. A freely written answer (a bigger model)
is checked in `citations.py`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.language.text import (
    CLOSE_BRACKET,
    COLON,
    COMMA,
    EXCLAMATION_MARK,
    FULL_STOP,
    OPEN_BRACKET,
    QUESTION_MARK,
    SEMICOLON,
    SENTENCE_ENDS,
    full_width,
    has_cjk,
    latin,
    word_count,
    words,
)

# "How many ...", "how long ...": the answer is a quantity.
HOW_MUCH = r"how (many|much|long|old|far|big|large|tall|high|often|fast|deep|wide)"
# Questions that ask for a number or a date, in English ("how many", "when", "what year"; in
# Chinese: ASKS_QUANTITY_ZH, ASKS_TIME_ZH, below). `asks_number` reads both.
_WHAT_NUMBER = "year|date|number|percentage|percent|amount|age"
ASKS_NUMBER = re.compile(rf"\b({HOW_MUCH}|when|what ({_WHAT_NUMBER}))\b", re.I)
# The confidence model's type signal (confidence.type_fit) also counts "what time", "what
# decade" and "what century": it was fitted so.
ASKS_NUMBER_OR_PERIOD = re.compile(rf"\b({HOW_MUCH}|when|what ({_WHAT_NUMBER}|time|decade|century))\b", re.I)
# Questions whose answer is a short fact: the fact is shown first, emphasised.
FACTOID = re.compile(
    r"^\W*(who|whom|whose|when|where|which|what (year|day|date|time|percentage|percent|number|amount|"
    r"age|colou?r|size|name|kind|type|country|city|state|language|company|team|decade|century|period)|"
    rf"{HOW_MUCH}|"
    r"(in|on|at|to|from|for|by) (what|which|whom)|name)\b"
    r"|(谁|哪|何时|几|多少|什么时候|哪一年|哪里|多久|多长|多大|多高)", re.I)
MAX_SHORT_WORDS = 10  # a longer copied span is a statement, not a short answer
MAX_SENTENCES = 3
ENOUGH_WORDS = 25  # an explanation keeps adding the next sentence until it has this many words


@dataclass
class Composed:
    """The statement an answer makes around its copied span, as parts (present.py words it)."""
    short: str = ""  # the short answer, when the question has one
    supporting: list[str] = field(default_factory=list)  # the source's sentences, verbatim
    evidence: str = ""  # the verbatim stretch of the passage they cover (for highlighting)
    support: float | None = None  # the question's similarity to the chosen sentence (encoder)
    said: list[str] = field(default_factory=list)  # the supporting sentences as prose (the statement's)
    short_first: bool = False  # the statement opens with the short answer
    copied: str = ""  # the span it is built around (the second copy's, where the check overruled the first)
    respanned: str = ""  # the sentence the decoder copied again from, where the check overruled it


# A line that is a unit of its own: a heading, a table row, a quote, or the start of a list item.
_STRUCTURE = re.compile(r"\s*(?:#{1,6}\s|\||>|[-*+]\s|\d+[.)]\s)")
# English sentences end at . ? ! before a space and a capital, digit, quote or bracket (not
# after an initial: "I. M. Pei"); CJK ones at 。？！ anywhere (text.SENTENCE_ENDS).
_SENTENCE_END = re.compile(rf"(?<=[{re.escape(latin(*SENTENCE_ENDS))}])(?<!\s[A-Z]\.)\s+(?=[A-Z0-9\"'(\[`])"
                           rf"|(?<=[{full_width(*SENTENCE_ENDS)}])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`. English sentences end at . ! ? before a
    capital; Chinese ones at 。！？ anywhere. A blank line ends one; a heading, table row or
    quote line is one; a list item starts one; other line breaks only wrap a paragraph."""
    blocks, start, offset, prev_end = [], None, 0, 0
    for line in text.splitlines(keepends=True):
        end = offset + len(line.rstrip("\r\n"))
        if not line.strip():
            if start is not None:
                blocks.append((start, prev_end))
            start = None
        elif _STRUCTURE.match(line):
            if start is not None:
                blocks.append((start, prev_end))
            start = offset
            if not re.match(r"\s*(?:[-*+]\s|\d+[.)]\s)", line):  # a heading, row or quote: alone
                blocks.append((start, end))
                start = None
        elif start is None:
            start = offset
        prev_end = end
        offset += len(line)
    if start is not None:
        blocks.append((start, prev_end))
    spans = []
    for a, b in blocks:
        cut = a
        for m in _SENTENCE_END.finditer(text, a, b):
            spans.append((cut, m.start()))
            cut = m.end()
        spans.append((cut, b))
    return [(a + len(text[a:b]) - len(text[a:b].lstrip()), b - (len(text[a:b]) - len(text[a:b].rstrip())))
            for a, b in spans if text[a:b].strip()]


def sentences(text: str) -> list[str]:
    """The sentences of `text` (see sentence_spans), each on one line."""
    return [" ".join(text[a:b].split()) for a, b in sentence_spans(text)]


def overlap(question: str, sentence: str) -> float:
    """Share of the question's content words that the sentence contains."""
    wanted = set(words(question, "content"))
    return len(wanted & set(words(sentence, "content"))) / len(wanted) if wanted else 0.0


def is_factoid(question: str) -> bool:
    return FACTOID.search(question.strip()) is not None


def readable(sentence: str) -> str:
    """A source line as prose: no list marker, heading hashes, quote marks of Markdown, code
    ticks or emphasis stars; a table row's cells joined by commas."""
    s = sentence.strip()
    if s.startswith("|") and s.endswith("|"):
        s = ", ".join(c.strip() for c in s.strip("|").split("|") if c.strip() and not set(c.strip()) <= set("-: "))
    s = re.sub(r"^(?:[#>]+|[-*+]|\d+[.)])\s+", "", s)
    s = re.sub(r"(\*\*|__|`)", "", s)
    return re.sub(r"\s+", " ", s).strip()


def usable_short(span: str, question: str) -> str:
    """The span as a short answer, or "" when it is none: markup, a bare list number for a
    question that asks no number, or a whole clause."""
    s = re.sub(r"\s*\|\s*", ", ", readable(span)).strip(" ,;:.–—*#")
    if not re.search(r"\w", s):
        return ""
    if re.fullmatch(r"\d{1,2}", s) and not asks_number(question):
        return ""  # "2": the list number in front of the paragraph, not an answer
    if has_cjk(s) or has_cjk(question):
        s = tighten_zh(s, question)
        if not s:
            return ""
    return s if word_count(s) <= MAX_SHORT_WORDS else ""


def asks_number(question: str, periods: bool = False) -> bool:
    """Whether the question asks for a number or a date (ASKS_NUMBER, or with `periods`
    ASKS_NUMBER_OR_PERIOD; in Chinese ASKS_QUANTITY_ZH or ASKS_TIME_ZH)."""
    english = ASKS_NUMBER_OR_PERIOD if periods else ASKS_NUMBER
    return bool(english.search(question) or ASKS_QUANTITY_ZH.search(question) or ASKS_TIME_ZH.search(question))


# --- Chinese short answers --------------------------------------------------------------------
# A Chinese span has no spaces to end on, so the decoder copies past the answer ("5条白色之垂直
# 条纹" for 几条, "2009年加盟上海申花" for 什么时候). What the question asks for says where it ends.
ASKS_QUANTITY_ZH = re.compile(r"多少|几|多大|多长|多高|多重|多远|多深|多宽|多久|多快")
ASKS_TIME_ZH = re.compile(r"什么时候|何时|哪一?年|哪个年代|什么年代|什么时间|几月|哪天|哪一天|何年|哪个朝代|什么朝代")
_NUMERAL = r"(?:\d[\d,.]*|[零〇一二三四五六七八九十百千两]+)"
# measure words and units after a number (longest first, so 平方公里 wins over 公里)
_UNITS = sorted("""个 条 只 头 张 本 部 场 次 人次 人 名 位 座 家 所 件 种 项 届 期 年 个月 月 日 天 周 星期 小时
分钟 秒 岁 公里 千米 米 厘米 公分 毫米 平方公里 平方千米 平方米 公顷 亩 吨 公斤 千克 克 斤 两 元 美元 港元 英镑
欧元 日元 新台币 % 度 倍 层 站 球 分 集 卷 册 首 枚 架 艘 辆 台 块 株 户 篇 章 节 英尺 英里 英寸 磅 公升 升 毫升
码 海里 光年 季 轮 局 票 席 级 套 栋 间 幅 匹 尾 粒 颗 支 瓶 份 段 代 世纪 cm km kg m""".split(), key=len, reverse=True)
QUANTITY_ZH = re.compile(
    rf"(?:约|近|逾|超过|大约|至少|多达|仅)?{_NUMERAL}(?:多|余)?(?:[万亿千百]+)?(?:多|余)?"
    rf"(?:{'|'.join(map(re.escape, _UNITS))})?(?:多|余)?")
_DATE_ONE = rf"(?:公元前|公元)?{_NUMERAL}年(?:代|初|底|末)?(?:{_NUMERAL}月(?:{_NUMERAL}日)?)?|{_NUMERAL}月(?:{_NUMERAL}日)?|{_NUMERAL}世纪(?:{_NUMERAL}0年代)?"
DATE_ZH = re.compile(rf"(?:{_DATE_ONE})(?:\s*[－—–\-~至到]\s*(?:{_DATE_ONE}))?(?:间|前后|左右)?")
# words that start a copied clause rather than its answer ("位于河北省曲阳县": 河北省曲阳县)
LEADING_ZH = ("位于", "位在", "坐落于", "是", "为", "于", "在", "由", "被", "即", "乃", "属于", "成为", "称为", "叫做", "叫")
TRAILING_ZH = ("的", "了", "之")


# Chinese keeps the question word where the answer goes (塞雷茨的儿子叫什么 -> ...儿子叫伊恩·卡马):
# the words around it in the question mark the answer's place in the sentence.
WH_ZH = re.compile(r"什么时候|什么时间|什么地方|什么样的?|什么|哪一[年天个位种本部]|哪[个些里儿位种家国所部条座项年天]|哪|谁|"
                   r"多少|几|何时|何地|何处|何人|何种")
WHY_HOW_ZH = re.compile(r"为什么|为何|怎么|怎样|如何|什么原因")  # the answer is a clause, not a slot
# where a Chinese answer's clause ends: a comma, semicolon, sentence end or opening bracket
# (CJK or Latin; not the list comma 、, which stays inside an answer)
_CLAUSE_END_ZH = re.compile(
    f"[{full_width(COMMA, FULL_STOP, SEMICOLON, EXCLAMATION_MARK, QUESTION_MARK, OPEN_BRACKET)}"
    f"{re.escape(latin(OPEN_BRACKET, COMMA, SEMICOLON))}]")
MIN_ANCHOR = 2  # characters of question context that must be found around the answer
MAX_ALIGNED_CHARS = 40  # a longer aligned "answer" is a stretch of the sentence, not a slot filled


def align_zh(question: str, sentence: str) -> tuple[str, int]:
    """(the answer, characters of question context matched around it) by aligning the
    question's words before and after its question word with the sentence; ("", 0) when
    the sentence holds neither side."""
    q = question.strip().rstrip("？?。.! ")
    m = WH_ZH.search(q)
    if m is None or not has_cjk(q) or WHY_HOW_ZH.search(q):
        return "", 0
    left, right = q[:m.start()].rstrip("着了过的是为"), q[m.end():]
    start = score = 0
    found_left = False
    for n in range(len(left), MIN_ANCHOR - 1, -1):
        at = sentence.find(left[-n:])
        if at >= 0:
            start, score, found_left = at + n, n, True
            while start < len(sentence) - 1 and sentence[start] in "着了过的是为":
                start += 1  # the particle dropped from the question's side
            break
    end = None
    for n in range(len(right), 0, -1):
        at = sentence.find(right[:n], start + 1 if found_left else 0)
        if at > start or (at >= 0 and not found_left):
            if n >= MIN_ANCHOR or found_left:
                end, score = at, score + n
            break
    if not found_left and (end is None or score < 2 * MIN_ANCHOR):
        return "", 0  # a subject answer needs a longer anchor after it
    if end is None:  # the question ends with its question word: the answer runs to the clause end
        cut = _CLAUSE_END_ZH.search(sentence, start + 1)
        end = cut.start() if cut else len(sentence)
    if not found_left:  # the answer is the subject: from the clause start
        start = max((c.end() for c in _CLAUSE_END_ZH.finditer(sentence, 0, end)), default=0)
    unit = re.match("|".join(map(re.escape, _UNITS)), right)
    if unit and ASKS_QUANTITY_ZH.search(m.group(0)) and sentence.startswith(unit.group(0), end):
        end += len(unit.group(0))  # 几站 -> 5站: the measure word belongs to the answer
    answer = re.sub(r"^[\s。，、；：！？）)\]」』”’.,;:!?了着过]+|[\s，、：:,（(]+$", "", sentence[start:end])  # no leading punctuation or particle
    return (answer, score) if answer and len(answer) <= MAX_ALIGNED_CHARS else ("", 0)


# An aligned answer overrules the decoder's span when this many characters of the question
# were found around it (swept 2-10 on a CMRC sample, README's Chinese answer table).
ALIGN_OVERRULES = 8


def _aligned_short(short: str, question: str, sentence: str) -> str:
    """The decoder's short answer, or the aligned one (align_zh) where the decoder gave none,
    or where the alignment is strong and the decoder's answer is not inside it."""
    aligned, matched = align_zh(question, sentence)
    aligned = tighten_zh(aligned, question) if aligned else ""
    if len(re.sub(r"[^\w]|[的是了在和与及或]", "", aligned)) < 1 + (not re.search(r"\d", aligned)):
        aligned = ""  # particles and punctuation only ("的是")
    if not aligned or (short and short in aligned):
        return short or aligned
    return aligned if not short or matched >= ALIGN_OVERRULES else short


def tighten_zh(span: str, question: str) -> str:
    """The short answer inside a Chinese span: the number and its unit for 多少/几 questions,
    the date for 什么时候 ones, without a leading verb or preposition or a trailing 的; ""
    when the span only repeats the question."""
    s = span
    if ASKS_QUANTITY_ZH.search(question) and not ASKS_TIME_ZH.search(question):
        # the first number written in digits, or one in Chinese numerals that starts the span
        # (a 一 inside a word such as 统一 is no number)
        m = next((m for m in QUANTITY_ZH.finditer(s) if re.search(r"\d", m.group(0))
                  or (m.start() == 0 and m.group(0))), None)
        if m:
            s = m.group(0)
    elif ASKS_TIME_ZH.search(question):
        m = DATE_ZH.search(s)
        if m:
            s = m.group(0)
    for w in LEADING_ZH:
        if s.startswith(w) and len(s) - len(w) >= 2:
            s = s[len(w):]
            break
    while s.endswith(TRAILING_ZH) and len(s) > 2:
        s = s[:-1]
    bare = re.sub(r"\W", "", s)
    if bare and bare in re.sub(r"\W", "", question):
        return ""  # the question's own words are not its answer
    return s


def _locate(span: str, passage: str) -> tuple[int, int] | None:
    """Where the span (copied from the passage with its white space collapsed) is in it."""
    pieces = span.split()
    if not pieces:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in pieces), passage)
    if m is None:
        m = re.search(r"\s*".join(re.escape(c) for c in span.replace(" ", "")), passage)  # Chinese: no spaces
    return (m.start(), m.end()) if m else None


@dataclass
class Choice:
    """The sentence of the passage an answer rests on (an index into the sentence table)."""
    where: tuple[int, int]  # the copied span's place in the passage
    index: int
    support: float | None = None  # its score in the sentence check
    overruled: bool = False  # the check chose another sentence than the decoder's


def sentence_table(passage: str) -> list[tuple[int, int, str]]:
    """(start, end, words) of each sentence of the passage."""
    return [(a, b, " ".join(passage[a:b].split())) for a, b in sentence_spans(passage)]


def locate(span: str, passage: str, table: list[tuple[int, int, str]]) -> Choice | None:
    """The sentence the decoder copied `span` from, or None when the span is not in the passage."""
    where = _locate(span, passage)
    if where is None:
        return None
    return Choice(where, next((i for i, (a, b, _) in enumerate(table) if a <= where[0] < b), 0))


def check_sentence(choice: Choice, table: list[tuple[int, int, str]], scores: list[float], margin: float) -> Choice:
    """The decoder's sentence, unless another is closer to the question by `margin` in
    `scores` (the encoder's, one per sentence of the table): then that one, `overruled`."""
    sims = list(scores)
    for i in range(len(table) - 1):  # a table's header row names columns, it answers nothing
        if re.fullmatch(r"\|[\s:|-]+\|", table[i + 1][2]):
            sims[i] = -1.0
    sims = [v if readable(t) else -1.0 for (_, _, t), v in zip(table, sims)]
    best = max(range(len(table)), key=sims.__getitem__)
    if sims[choice.index] < sims[best] - margin:  # the decoder's span lies elsewhere
        return Choice((table[best][0], table[best][0]), best, sims[best], overruled=True)
    return Choice(choice.where, choice.index, sims[choice.index])


def statement(span: str, passage: str, table: list[tuple[int, int, str]], choice: Choice,
              question: str) -> Composed:
    """The readable answer around `span` in the chosen sentence: for what/how/why questions
    the sentence and the next ones while short; a list announced, its items; a span running
    past its sentence, the sentences it covers; the short answer first for a factoid."""
    where, chosen = choice.where, [choice.index]
    spans = table
    factoid = is_factoid(question)
    if not factoid:  # an explanation: the sentence and the next ones while it is short
        while (len(chosen) < MAX_SENTENCES and chosen[-1] + 1 < len(spans)
               and sum(length(spans[i][2]) for i in chosen) < ENOUGH_WORDS):
            chosen.append(chosen[-1] + 1)
    # a sentence that announces a list ("these tables:") takes the items after it
    while spans[chosen[-1]][2].endswith((":", "：")) and chosen[-1] + 1 < len(spans) and len(chosen) < MAX_SENTENCES:
        chosen.append(chosen[-1] + 1)
    # a span running past its sentence end takes the sentences it covers
    while chosen[-1] + 1 < len(spans) and spans[chosen[-1]][1] < where[1] and len(chosen) < MAX_SENTENCES:
        chosen.append(chosen[-1] + 1)
    supporting = [spans[i][2] for i in chosen]
    evidence = passage[spans[chosen[0]][0]:spans[chosen[-1]][1]]
    said = [r for r in (readable(s) for s in supporting) if r]
    short = usable_short(span, question) if span else ""
    if has_cjk(question):
        short = _aligned_short(short, question, " ".join(supporting))
    lead = leads(short, said, question)
    return Composed(short=short, supporting=supporting, evidence=evidence, support=choice.support, said=said,
                    short_first=lead, copied=span)


def compose(span: str, passage: str, question: str, score=None, margin: float = 0.0, respan=None) -> Composed:
    """The readable answer around `span`, a verbatim copy from `passage` (the answer pipeline's
    Compose stage). `score(table)`: the sentence check's score of each sentence of the passage
    (the encoder's); where another sentence beats the decoder's by `margin`, `respan(sentence)`
    copies a new span from it (the decoder again), else the span is dropped."""
    table = sentence_table(passage)
    choice = locate(span, passage, table)
    if choice is None:
        return Composed(short=usable_short(span, question), said=[span], copied=span)
    respanned = ""
    if score is not None and len(table) > 1:
        choice = check_sentence(choice, table, score(table), margin)
        if choice.overruled:
            respanned = table[choice.index][2]
            span = respan(respanned) if respan is not None else ""
    made = statement(span, passage, table, choice, question)
    made.respanned = respanned
    return made


# what a finished sentence ends with: a sentence end, colon or semicolon (Latin or CJK), a
# closing bracket or quote
_FINISHED = re.compile(rf"[{re.escape(latin(*SENTENCE_ENDS, COLON, SEMICOLON, CLOSE_BRACKET))}"
                       rf"{full_width(*SENTENCE_ENDS, COLON, SEMICOLON)}\]\"'”]$")


def unfinished(sentence: str) -> bool:
    """A sentence cut by the end of its passage (no closing punctuation)."""
    return not _FINISHED.search(sentence.strip())


def first_sentence(text: str) -> str:
    """The words of `text` up to its first sentence end (how a cut sentence continues)."""
    spans = sentence_spans(text)
    return " ".join(text[spans[0][0]:spans[0][1]].split()) if spans else ""


length = word_count  # words, counting two Chinese characters as one (text.word_count)
# The short answer leads the statement only where it is clearly shorter than its sentences:
# under this share of their words (`leads`).
LEAD_SHARE = 0.6


def leads(short: str, said: list[str], question: str) -> bool:
    """Whether the statement opens with the short answer: a factual question, and a short
    answer clearly shorter than the sentences it stands in."""
    return bool(is_factoid(question) and short and length(short) < LEAD_SHARE * length(" ".join(said)))
