"""How likely an answer's short answer is right: signals the answer pipeline already has
(retrieval, the sentence check, whether the encoder overruled the decoder) and the decoder's
own log-probabilities of its span and of the other candidates in the supporting sentences
("unknown" among them), combined by a logistic model fitted on held-out questions
(`benchmarks/calibrate.py`, coefficients below). A probability, so a person can tell which
answers to doubt and a threshold (`min_confidence`) can turn the doubtful ones into "the
documents may not say this"."""

from __future__ import annotations

import math
import re

from rag.answer.prompt import ABSTAIN
from rag.language.text import (
    CLAUSE_ENDS,
    CLOSE_BRACKET,
    OPEN_BRACKET,
    SENTENCE_ENDS,
    STOPWORDS,
    STOPWORDS_EN,
    STOPWORDS_ZH,
    full_width,
    has_cjk,
    latin,
    words,
)

MAX_CANDIDATES = 10  # alternatives scored per answer (each costs a short decode)
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE_EN = re.compile(rf"\b(?:{_MONTH}\s+\d{{1,2}},?\s+\d{{3,4}}|\d{{1,2}}\s+{_MONTH}\s+\d{{3,4}}|{_MONTH}\s+\d{{3,4}})\b")
_NUMBER_EN = re.compile(r"(?:\$|£|€)?\b\d[\d,.]*(?:\s*(?:%|percent|million|billion|thousand))?(?:\s+[a-z]+)?")
_NAME_EN = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|von|van|and|du|la)\s+[A-Z][\w'’-]*|\s+[A-Z][\w'’-]*)*")
# tokens of an English text for its phrases: words (an apostrophe or hyphen inside) and each
# punctuation mark, which ends a phrase (not text.words: it drops the punctuation)
_WORD_EN = re.compile(r"[\w'’-]+|[^\w\s]")


def candidates(question: str, sentences: list[str], limit: int = MAX_CANDIDATES) -> list[str]:
    """Other answers the supporting sentences offer: dates, numbers, names and noun phrases
    (Chinese: numbers with their unit, dates, words and clauses), none that only repeats the
    question, in order of appearance; at most `limit`."""
    text = " ".join(sentences)
    if has_cjk(text) or has_cjk(question):
        found = _candidates_zh(question, text)
    else:
        found = [m.group(0) for pattern in (_DATE_EN, _NUMBER_EN, _NAME_EN) for m in pattern.finditer(text)]
        found += _phrases_en(text)
    asked = set(words(question, "plain"))
    out, seen = [], set()
    for c in found:
        c = c.strip(" ,.;:()\"'“”‘’，。；：（）、")
        parts = c.split(" ")
        while len(parts) > 1 and parts[-1].lower() in STOPWORDS_EN:  # "1822 to": the number alone
            parts.pop()
        c = " ".join(parts)
        key = c.lower()
        said = set(words(c, "plain"))
        if not c or key in seen or not said or said <= asked | STOPWORDS:
            continue
        seen.add(key)
        out.append(c)
    return out[:limit]


def _phrases_en(text: str) -> list[str]:
    """Runs of up to four content words between function words and punctuation."""
    runs, run = [], []
    for w in _WORD_EN.findall(text) + ["."]:
        if re.match(r"\w", w) and w.lower() not in STOPWORDS_EN:
            run.append(w)
            continue
        if run:
            runs.append(" ".join(run[-4:]))
        run = []
    return runs


# what a Chinese clause candidate ends at: every CJK sentence and clause end, brackets, quotes
_CLAUSE_ZH = re.compile(f"[{full_width(*SENTENCE_ENDS, *CLAUSE_ENDS, OPEN_BRACKET, CLOSE_BRACKET)}"
                        f"{re.escape(latin(OPEN_BRACKET, CLOSE_BRACKET))}“”]")


def _candidates_zh(question: str, text: str) -> list[str]:
    from rag.answer.compose import DATE_ZH, QUANTITY_ZH, align_zh

    found = [align_zh(question, text)[0]]
    found += [m.group(0) for m in DATE_ZH.finditer(text)]
    found += [m.group(0) for m in QUANTITY_ZH.finditer(text) if re.search(r"\d", m.group(0))]
    found += [w for w in words(text, "cjk") if len(w) >= 2 and w not in STOPWORDS_ZH]
    found += [c for c in _CLAUSE_ZH.split(text) if 2 <= len(c.strip()) <= 12]
    return found


# --- signals ------------------------------------------------------------------------------

def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def decoder_signals(span: str, alternatives: list[str], scores: list[list[float]]) -> dict:
    """From the decoder's token log-probabilities of [span, "unknown", *alternatives]: the
    span's mean and first-token log-probability, the best alternative's mean, and "unknown"'s."""
    span_lp, unknown_lp, alt = scores[0], scores[1], scores[2:]
    alt_means = [mean(s) for s in alt if s]
    best_alt = max(alt_means) if alt_means else None
    span_mean = mean(span_lp)
    return {
        "lp_span": span_mean, "lp_first": span_lp[0] if span_lp else None,
        "lp_unknown": mean(unknown_lp),
        "lp_alt": best_alt,
        "lp_gap": span_mean - best_alt if span_mean is not None and best_alt is not None else None,
        "span_tokens": len(span_lp),
    }


_ASKS_NAME = re.compile(r"^\W*(who|whom|whose|where)\b|\b(in|at|from) (what|which) (country|city|state|place|town|region)\b|\b(what|which) (company|team|country|city|state|person|man|woman)\b",
                        re.I)
_NUMBERISH = re.compile(rf"\d|{_MONTH}|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
                        r"thirty|forty|fifty|hundred|thousand|million|billion|dozen|half)\b|[零〇一二三四五六七八九十百千万亿两]", re.I)


def type_fit(question: str, short: str) -> float:
    """1 when the short answer is of the kind the question asks (a number or date for "how
    many"/"when"/多少/何时, a name for "who"), -1 when it is not, 0 when the question asks no kind."""
    from rag.answer.compose import asks_number

    if asks_number(question, periods=True):
        return 1.0 if _NUMBERISH.search(short) else -1.0
    if _ASKS_NAME.search(question):
        return 1.0 if re.search(r"\b[A-Z]", short) else -1.0
    return 0.0


def text_signals(question: str, short: str, supporting: list[str]) -> dict:
    """What the words say: the question's share of words in the supporting sentence, whether
    the short answer is of the asked kind, how much of it only repeats the question."""
    from rag.answer.compose import length, overlap

    asked = set(words(question, "plain"))
    said = words(short, "plain")
    return {"overlap": overlap(question, " ".join(supporting)) if supporting else None,
            "type_fit": type_fit(question, short) if short else None,
            "repeats": sum(w in asked for w in said) / len(said) if said else None,
            "short_len": float(length(short))}


def nearness(question: str, candidate: str, text: str) -> float | None:
    """Words between the candidate and the nearest of the question's content words in the
    supporting text, log-scaled (SQuAD's answers sit next to the question's words); None
    when the candidate is not found in the text."""
    found = words(text, "plain")
    cand = words(candidate, "plain")
    if not cand:
        return None
    at = next((i for i in range(len(found) - len(cand) + 1) if found[i:i + len(cand)] == cand), None)
    if at is None:
        return None
    wanted = set(words(question, "content"))
    near = [i for i, w in enumerate(found) if w in wanted and not at <= i < at + len(cand)]
    if not near:
        return math.log(1 + len(found))
    return math.log(1 + min(at - i if i < at else i - (at + len(cand) - 1) for i in near))


def candidate_signals(question: str, shorts: list[str], scores: list[list[float]], supporting: list[str],
                      answer: dict) -> list[dict]:
    """One row per candidate short answer (the decoder's first): its own signals (log-probability,
    against the best candidate's, kind, repetition of the question, length, nearness to the
    question's words) and the answer's (retrieval, sentence check)."""
    text = " ".join(supporting)
    means = [mean(s) for s in scores]
    best = max((m for m in means if m is not None), default=None)
    rows = []
    for i, (short, lp, m) in enumerate(zip(shorts, scores, means)):
        own = text_signals(question, short, supporting)
        rows.append({**{k: answer.get(k) for k in ("top_dense", "margin", "support", "overruled", "overlap")},
                     "type_fit": own["type_fit"], "repeats": own["repeats"], "short_len": own["short_len"],
                     "short_empty": float(not short), "greedy": float(i == 0),
                     "lp_span": m, "lp_first": lp[0] if lp else None, "span_tokens": float(len(lp)),
                     "lp_best": m - best if m is not None and best is not None else None,
                     "near": nearness(question, short, text) if short else None})
    return rows


# --- the calibrated probability -------------------------------------------------------------

# The features each model reads, in order; a missing one is replaced by its training mean
# (the standardisation's centre: zero weight at that point).
FEATURES = ("top_dense", "margin", "support", "overruled", "short_empty", "overlap", "type_fit", "repeats",
            "short_len")
# a candidate short answer's (candidate_signals): the answer's confidence is its chosen candidate's
FEATURES_RANK = ("top_dense", "margin", "support", "overruled", "overlap", "type_fit", "repeats", "short_len",
                 "short_empty", "greedy", "lp_span", "lp_first", "span_tokens", "lp_best", "near", "lp_unknown")

# Fitted by `benchmarks/calibrate.py fit --write` (its docstring has the commands, the samples
# and the held-out tables): per language (encoder scale; "-qwen": on Qwen2.5's answers, the
# others on Gemma 3 270M's), "<language>-rank" on the candidates
# the decoder scored (with `switch`, the margin a candidate must beat the decoder's own by, and
# `platt`, the recalibration of the chosen one), "<language>" on the answer's signals alone (a
# backend that cannot score, e.g. transformers). mean/scale standardise the features; weights
# end with the intercept.
MODELS: dict[str, dict] = {
    "en": {
        "features": ["top_dense", "margin", "support", "overruled", "short_empty", "overlap", "type_fit", "repeats",
            "short_len"],
        "mean": [0.584747, 0.232186, 0.985158, 0.378378, 0.045045, 0.601556, 0.089623, 0.123113, 2.644144],
        "scale": [0.1276, 0.158781, 0.211188, 0.484983, 0.207403, 0.242579, 0.566708, 0.20923, 2.333546],
        "weights": [-0.087942, 0.11737, 0.781884, -0.291581, -0.300673, -0.295929, 0.287635, 0.033248, -0.393727,
            -0.848867],
    },
    "en-rank": {
        "features": ["top_dense", "margin", "support", "overruled", "overlap", "type_fit", "repeats", "short_len",
            "short_empty", "greedy", "lp_span", "lp_first", "span_tokens", "lp_best", "near",
            "lp_unknown"],
        "mean": [0.58205, 0.233793, 0.975826, 0.358156, 0.599465, -0.053462, 0.078312, 1.868794, 0.005066, 0.112462,
            -5.558166, -7.522028, 2.723911, -4.244864, 1.903907, -10.184547],
        "scale": [0.126899, 0.161139, 0.209071, 0.479458, 0.243826, 0.566449, 0.185138, 1.225576, 0.070994, 0.315934,
            3.999431, 4.030143, 2.270748, 3.943666, 0.762435, 2.540344],
        "weights": [-0.07337, 0.04347, 0.311286, 0.044754, -0.017842, 0.299717, -0.063661, 0.104847, 0.060645,
            0.348344, 0.036605, 0.416359, -0.187634, 0.793182, -0.698856, -0.015714, -3.266556],
        "switch": 0.0,
        "platt": [0.857728, 0.145006, 0.076603],
    },
    "zh": {
        "features": ["top_dense", "margin", "support", "overruled", "short_empty", "overlap", "type_fit", "repeats",
            "short_len"],
        "mean": [0.890341, 0.156035, 1.198659, 0.34, 0.086667, 0.504441, 0.145985, 0.103545, 3.32],
        "scale": [0.033005, 0.16537, 0.183896, 0.473709, 0.281346, 0.276074, 0.440305, 0.168206, 2.730861],
        "weights": [0.562495, 0.496636, 0.329461, -0.213232, -0.405532, 0.277666, 0.381104, -0.04528, 0.145608,
            -1.836644],
    },
    "zh-rank": {
        "features": ["top_dense", "margin", "support", "overruled", "overlap", "type_fit", "repeats", "short_len",
            "short_empty", "greedy", "lp_span", "lp_first", "span_tokens", "lp_best", "near",
            "lp_unknown"],
        "mean": [0.889808, 0.150468, 1.190931, 0.321552, 0.495033, -0.082517, 0.019132, 1.451836, 0.009009, 0.10395,
            -3.640143, -3.651116, 3.45045, -2.716183, 1.63078, -16.692705],
        "scale": [0.032498, 0.160794, 0.181903, 0.467072, 0.275867, 0.446952, 0.087426, 1.323439, 0.094487, 0.305196,
            2.348816, 3.281157, 3.099327, 2.30871, 0.775341, 2.010522],
        "weights": [0.636882, 0.213696, 0.26153, 0.055504, 0.06273, 0.483136, -0.059078, 0.367598, 0.031542, 0.218524,
            1.681855, -0.099977, -0.257221, -0.304109, -0.656579, 0.186624, -4.265839],
        "switch": 1.0,
        "platt": [0.235019, 0.390276, -0.314029],
    },
    "zh-qwen": {
        "features": ["top_dense", "margin", "support", "overruled", "short_empty", "overlap", "type_fit", "repeats",
            "short_len"],
        "mean": [0.893859, 0.137701, 1.192866, 0.3, 0.02, 0.492732, 0.108844, 0.088864, 3.146667],
        "scale": [0.030873, 0.143782, 0.190777, 0.458258, 0.14, 0.291145, 0.463742, 0.178135, 2.42868],
        "weights": [0.850205, 0.509038, 0.731663, -0.894389, -0.378137, 0.422021, 0.510962, -0.066076, -0.09617,
            -1.487938],
    },
    "zh-qwen-rank": {
        "features": ["top_dense", "margin", "support", "overruled", "overlap", "type_fit", "repeats", "short_len",
            "short_empty", "greedy", "lp_span", "lp_first", "span_tokens", "lp_best", "near",
            "lp_unknown"],
        "mean": [0.893209, 0.132707, 1.185094, 0.293956, 0.48212, -0.086717, 0.017456, 1.434753, 0.00206, 0.103022,
            -3.095533, -3.961357, 3.975275, -2.455027, 1.676582, -15.802239],
        "scale": [0.030336, 0.139449, 0.189138, 0.455572, 0.291435, 0.454732, 0.085573, 1.256249, 0.045345, 0.303988,
            1.959242, 2.529951, 2.31026, 1.991004, 0.818354, 2.204286],
        "weights": [0.80247, 0.090944, 0.266196, -0.730367, 0.290738, 0.346526, -0.035938, 0.160451, -0.199889,
            0.523902, 0.363116, 0.13156, 0.047192, 0.624575, -0.548992, -0.061059, -4.487591],
        "switch": 1.0,
        "platt": [0.24821, 0.455207, -0.160525],
    },
}


# A question asked in another language than the passages is read in translation, by another
# model (the translator's), and its words are compared with the passages through the translation:
# the models above, fitted on same-language answers, misjudge it (XQuAD English questions over
# the Chinese paragraphs: right answers at confidence 0.003-0.044, refused). Its probability is
# recalibrated per model key, p -> sigmoid(a * logit(p) + b), [a, b] fitted by `benchmarks/
# calibrate.py cross` on held-out cross-language answers (languages and questions other than
# those `rag eval --lang` reports; its docstring has the commands), where that lowers their
# ECE, [1, 0] otherwise. The third number is the threshold under which such an answer is refused,
# chosen by min_confidence's own rule (at most 5% of answerable held-out questions refused):
# min_confidence's 0.06 refused 27% (English documents; 8% before recalibration) and 20%
# (Chinese; 39% before) of XQuAD ar, hi, th questions over English and de, ru, ar over Chinese
# paragraphs (75 and 89 answers; held-out ECE 0.095 -> 0.082 and 0.144 -> 0.114).
CROSS: dict[str, list[float]] = {"en": [1.811012, -0.027137, 0.0], "zh-qwen": [0.944903, 0.898812, 0.02]}


def across(p: float | None, language: str, cross: dict | None = None) -> float | None:
    """The probability `p` of a same-language model, recalibrated for a question asked in
    another language than the passages (unchanged where no recalibration was fitted)."""
    ab = (CROSS if cross is None else cross).get(language)
    if p is None or not ab:
        return p
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, ab[0] * _logit(p) + ab[1]))))


def cross_threshold(language: str, default: float, cross: dict | None = None) -> float:
    """The confidence under which a cross-language answer is refused: the lower of `default`
    (min_confidence) and the threshold fitted for the model key."""
    fitted = (CROSS if cross is None else cross).get(language)
    return min(default, fitted[2]) if fitted and len(fitted) > 2 else default


def model_key(base: str, family: str = "") -> str:
    """Which fitted model an index's answers get: its encoder's (`base`, "en" or "zh": cosines
    have each encoder's own scale), or its decoder family's on that encoder where one was
    fitted ("zh-qwen": a decoder is sure of its spans on its own scale). Both come from the
    model profiles (rag/models/catalog.py)."""
    return f"{base}-{family}" if family and f"{base}-{family}" in MODELS else base


def features(signals: dict, names: tuple[str, ...]) -> list[float | None]:
    out = []
    for n in names:
        v = signals.get(n)
        out.append(None if v is None else float(v))
    return out


def probability(signals: dict, language: str, models: dict | None = None) -> float | None:
    """The calibrated probability that the short answer is right (F1 >= 0.5 against the
    gold answer, measured), or None when no model was fitted for this language."""
    models = MODELS if models is None else models
    model = models.get(language)
    if model is None:
        return None
    x = features(signals, tuple(model["features"]))
    z = model["weights"][-1]
    for v, mu, sd, w in zip(x, model["mean"], model["scale"], model["weights"]):
        z += w * (((v if v is not None else mu) - mu) / sd)
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def shortlist(question: str, short: str, alternatives: list[str], scores: list[list[float]]):
    """(short answers, their scores): the answer's own short answer with the decoder's score of
    its copied span, then each scored alternative as a short answer (compose.usable_short),
    without repeats. `scores`: the decoder's, of [copied span, "unknown", *alternatives]."""
    from rag.answer.compose import usable_short

    shorts, kept, seen = [short], [scores[0]], {short.lower()}
    for alternative, lp in zip(alternatives, scores[2:]):
        s = usable_short(alternative, question)
        if s and lp and s.lower() not in seen:
            seen.add(s.lower())
            shorts.append(s)
            kept.append(lp)
    return shorts, kept


def choose(question: str, short: str, alternatives: list[str], scores: list[list[float]], supporting: list[str],
           answer: dict, language: str, models: dict | None = None) -> tuple[str, float | None]:
    """(the short answer to give, the probability that it is right): the candidate the ranking
    model finds likeliest, where it beats the decoder's own by the model's `switch` margin;
    the probability recalibrated for being the best of several (Platt, fitted by cross-fitting)."""
    models = MODELS if models is None else models
    model = models.get(f"{language}-rank")
    if model is None:
        return short, probability(answer, language, models)
    shorts, kept = shortlist(question, short, alternatives, scores)
    rows = candidate_signals(question, shorts, kept, supporting, answer)
    unknown = mean(scores[1]) if len(scores) > 1 else None
    ps = [probability({**r, "lp_unknown": unknown}, f"{language}-rank", models) for r in rows]
    best = max(range(len(ps)), key=ps.__getitem__)
    pick = best if ps[best] > ps[0] + model.get("switch", 0.0) else 0
    platt = model.get("platt")
    if not platt:
        return shorts[pick], ps[pick]
    # the chosen candidate's probability and the answer model's (on the chosen short answer)
    together = {**answer, **text_signals(question, shorts[pick], supporting), "short_empty": float(not shorts[pick])}
    p_answer = probability(together, language, models)
    z = platt[-1] + platt[0] * _logit(ps[pick]) + (platt[1] * _logit(p_answer) if len(platt) > 2 and p_answer else 0.0)
    return shorts[pick], 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def fit(rows: list[dict], names: tuple[str, ...], l2: float = 1.0, steps: int = 50) -> dict:
    """A logistic model of rows' "right" on the named signals (Newton's method with an L2
    penalty, numpy only): the dict `probability` reads."""
    import numpy as np

    raw = np.array([[np.nan if r.get(n) is None else float(r[n]) for n in names] for r in rows], dtype=float)
    mu = np.nanmean(raw, axis=0)
    mu = np.where(np.isnan(mu), 0.0, mu)
    raw = np.where(np.isnan(raw), mu, raw)
    sd = raw.std(axis=0)
    sd = np.where(sd < 1e-9, 1.0, sd)
    x = np.hstack([(raw - mu) / sd, np.ones((len(rows), 1))])
    y = np.array([float(r["right"]) for r in rows])
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return {"features": list(names), "mean": [round(float(v), 6) for v in mu],
            "scale": [round(float(v), 6) for v in sd], "weights": [round(float(v), 6) for v in w]}


def calibration_error(probs: list[float], right: list[bool], bins: int = 10) -> float:
    """Expected calibration error: the gap between confidence and accuracy per equal-width
    bin, weighted by the bin's share of answers."""
    total, n = 0.0, len(probs)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if idx:
            total += len(idx) / n * abs(sum(probs[i] for i in idx) / len(idx) - sum(right[i] for i in idx) / len(idx))
    return total


UNKNOWN = ABSTAIN
