"""Subtitles from a transcript: cues that follow Octavia's output quality rules,
and their SubRip, WebVTT and JSON renderings.

Pure functions over the system's transcript format (octavia.transcribe.v1
Transcript): no I/O, no gRPC. The render-subtitles stage reads a transcript,
calls `build_cues`, and writes `to_srt`, `to_vtt` and `transcript_json`.

The rules (the architecture brief's "Output quality rules"; their numbers
follow Netflix's Timed Text Style Guides, cited per language in `_RULES`):
- at most 2 lines per event, each at most the language's line width;
- reading speed at most the language's characters per second, reached by
  borrowing the silence after the speech; speech too fast for it keeps its
  text and is counted in `Rendered.reading_speed_warnings`;
- each event 5/6 s to 7 s, at least 2 frames between events;
- events end at sentence ends and long pauses; lines and events break after
  punctuation or before conjunctions and prepositions, never between an
  article and its noun;
- no text is ever dropped.

How: every word becomes a timed token (a translated segment has no words, so
its text is split and timed in proportion to its characters). A dynamic
programme chooses where events end, scoring each candidate event by where it
breaks, how its two lines balance and whether it leaves time to be read; then
the events are timed against their neighbours.
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from dataclasses import dataclass

from google.protobuf import duration_pb2, json_format
from octavia.transcribe.v1 import transcribe_pb2

# --- Rules common to every language (Netflix TTSG, General Requirements) ----

MIN_DURATION_S = 5 / 6
MAX_DURATION_S = 7.0
MIN_GAP_FRAMES = 2
DEFAULT_FRAME_RATE = 25.0
# A silence this long between two words ends an event: text shown over the
# silence before it is spoken runs ahead of the speech. (An event still spans
# one when the alternative is worse: an event too short to read, or an
# article cut from its noun.)
LONG_PAUSE_S = 0.6
# Gaps shorter than this between events are closed down to the minimum gap,
# so subtitles do not blink off and on (Netflix's timing guidelines chain
# subtitles less than 12 frames apart, half a second at 24 fps).
CHAIN_GAP_FRAMES = 12

# Times are kept in whole milliseconds, the precision of both file formats,
# so what the files say is exactly what was checked.
_MIN_DURATION_MS = math.ceil(MIN_DURATION_S * 1000)
_MAX_DURATION_MS = round(MAX_DURATION_S * 1000)
_LONG_PAUSE_MS = round(LONG_PAUSE_S * 1000)


@dataclass(frozen=True)
class LanguageRules:
    """How subtitles are measured and broken in one language."""

    # Widest line, in the units of `wide_script`.
    max_line_width: float
    # Fastest reading speed, in the same units per second of display.
    max_chars_per_second: float
    # CJK counting (Netflix's Japanese and Korean guides): a full-width
    # character counts 1, a half-width one (Latin letter, space, ASCII
    # punctuation) 0.5. Otherwise every character, space and punctuation
    # mark counts 1.
    wide_script: bool = False
    # Words are separated by spaces; False for Japanese and Chinese, whose
    # text may break between any two characters (kinsoku rules aside).
    spaced: bool = True
    # Articles and determiners: a line or event never ends on one, since it
    # belongs with the noun after it.
    articles: frozenset[str] = frozenset()
    # A line may start with these: breaking before a conjunction or
    # preposition keeps a clause together. Ending a line on one is avoided.
    conjunctions: frozenset[str] = frozenset()
    prepositions: frozenset[str] = frozenset()
    # Prepositions that bind their phrase to the word before ("a set of
    # rules"): a line may end before them no more readily than anywhere.
    binding: frozenset[str] = frozenset()
    # Unspaced scripts: particles after which a line reads well (Japanese
    # breaks after the particle that closes a phrase).
    particles: frozenset[str] = frozenset()
    # Where the numbers come from.
    source: str = ""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_LATIN_LINE = 42  # Netflix TTSG: 42 characters per line for Latin-script languages
_LATIN_SOURCE = "Netflix TTSG: 42 characters a line; 17 cps, the architecture brief's limit and Netflix's for adults"

# The per-language tables, defined once. Word lists are lower case, without
# punctuation; contracted forms (pt "do", es "del", de "zum") are articles too.
_RULES: dict[str, LanguageRules] = {
    "en": LanguageRules(
        max_line_width=_LATIN_LINE,
        max_chars_per_second=20,  # Netflix English (USA) TTSG, adult programmes
        articles=_words("a an the this that these those my your his her its our their some any each every no another whose"),
        conjunctions=_words(
            "and but or nor so yet because although though while whereas if unless until when whenever where since which who whom"
        ),
        prepositions=_words(
            "about above across after against along among around at before behind below beneath "
            "beside between beyond by despite during except for from in inside into like near of "
            "off on onto over past through throughout to toward towards under unlike upon with "
            "within without"
        ),
        binding=_words("of"),
        source="Netflix English (USA) TTSG: 42 characters a line, 20 cps for adult programmes",
    ),
    "pt": LanguageRules(
        max_line_width=_LATIN_LINE,
        max_chars_per_second=17,
        articles=_words(
            "o a os as um uma uns umas do da dos das no na nos nas ao à aos às pelo pela pelos pelas "
            "num numa dum duma este esta estes estas esse essa esses essas aquele aquela aqueles "
            "aquelas meu minha meus minhas teu tua teus tuas seu sua seus suas nosso nossa nossos "
            "nossas cada algum alguma nenhum nenhuma"
        ),
        conjunctions=_words("e mas ou porque pois que quando se embora enquanto porém contudo então como"),
        prepositions=_words("de em para por com sem sobre entre até desde contra após durante perante sob"),
        binding=_words("de"),
        source=_LATIN_SOURCE,
    ),
    "es": LanguageRules(
        max_line_width=_LATIN_LINE,
        max_chars_per_second=17,
        articles=_words(
            "el la los las un una unos unas del al lo este esta estos estas ese esa esos esas aquel "
            "aquella aquellos aquellas mi mis tu tus su sus nuestro nuestra nuestros nuestras cada "
            "algún alguna ningún ninguna"
        ),
        conjunctions=_words("y e o u pero sino porque pues que cuando si aunque mientras como"),
        prepositions=_words(
            "a ante bajo con contra de desde durante en entre hacia hasta mediante para por según sin sobre tras"
        ),
        binding=_words("de"),
        source=_LATIN_SOURCE,
    ),
    "fr": LanguageRules(
        max_line_width=_LATIN_LINE,
        max_chars_per_second=17,
        articles=_words(
            "le la les un une des du au aux ce cet cette ces mon ma mes ton ta tes son sa ses notre "
            "nos votre vos leur leurs chaque quelques aucun aucune"
        ),
        conjunctions=_words("et mais ou donc car ni or que qui quand si parce lorsque puisque comme"),
        prepositions=_words("à dans par pour en vers avec sans sous sur chez entre contre depuis pendant avant après de selon"),
        binding=_words("de"),
        source=_LATIN_SOURCE,
    ),
    "de": LanguageRules(
        max_line_width=_LATIN_LINE,
        max_chars_per_second=17,
        articles=_words(
            "der die das den dem des ein eine einen einem einer eines kein keine keinen keinem "
            "keiner mein meine meinen meinem meiner dein deine sein seine seinen seinem ihr ihre "
            "ihren ihrem unser unsere euer eure dieser diese dieses diesen diesem jeder jede jedes "
            "jeden jedem zum zur im am vom beim ins ans"
        ),
        conjunctions=_words("und aber oder denn sondern weil dass wenn als ob obwohl während damit bevor nachdem"),
        prepositions=_words(
            "an auf aus bei bis durch für gegen hinter in mit nach neben ohne seit über um unter von vor zu zwischen trotz wegen"
        ),
        source=_LATIN_SOURCE,
    ),
    "it": LanguageRules(
        max_line_width=_LATIN_LINE,
        max_chars_per_second=17,
        articles=_words(
            "il lo la i gli le un uno una del dello della dei degli delle al allo alla ai agli alle "
            "dal dallo dalla dai dagli dalle nel nello nella nei negli nelle sul sullo sulla sui "
            "sugli sulle col questo questa questi queste quel quello quella quei quegli quelle mio "
            "mia miei mie tuo tua suo sua nostro nostra ogni"
        ),
        conjunctions=_words("e ed ma o oppure però perché che quando se mentre come poiché quindi"),
        prepositions=_words("di a da in con su per tra fra verso senza sopra sotto durante dopo prima"),
        binding=_words("di"),
        source=_LATIN_SOURCE,
    ),
    "ja": LanguageRules(
        max_line_width=13,
        # 4 cps is the long-standing norm of Japanese subtitling (the "4
        # characters a second" rule); an eye-tracking study (Toyokura and
        # Yamada, 2017) found up to 6 accepted, but the norm is what Japanese
        # subtitlers and viewers expect.
        max_chars_per_second=4,
        wide_script=True,
        spaced=False,
        conjunctions=_words("でも しかし だから そして それで けれども ところが また"),
        particles=_words("は が を に で と も へ から まで より けど ので のに"),
        source="Netflix Japanese TTSG: 13 full-width characters a horizontal line, half-width 0.5; "
        "4 cps, the norm of Japanese subtitling",
    ),
    "zh": LanguageRules(
        max_line_width=16,
        max_chars_per_second=9,  # Netflix Simplified Chinese TTSG, adult programmes
        wide_script=True,
        spaced=False,
        conjunctions=_words("但是 可是 而且 因为 所以 如果 虽然 然后 或者 并且 不过 因此"),
        source="Netflix Simplified Chinese TTSG: 16 characters a line, 9 cps for adult programmes",
    ),
    "ko": LanguageRules(
        max_line_width=16,
        max_chars_per_second=12,  # adult programmes (Netflix's and Pixelogic's Korean guides)
        wide_script=True,
        conjunctions=_words("그리고 그러나 하지만 그래서 그런데 또는 혹은 그러면 왜냐하면 그러므로"),
        source="Netflix Korean TTSG: 16 characters a line (Latin, spaces, punctuation 0.5), 12 cps",
    ),
}

# Any other language: the general limits, breaks at punctuation only.
GENERIC_RULES = LanguageRules(max_line_width=_LATIN_LINE, max_chars_per_second=17, source=_LATIN_SOURCE)


def rules_for(language: str | None) -> LanguageRules:
    """The rules of a BCP-47 language (`pt-BR` uses `pt`); generic when unknown."""
    primary = (language or "").strip().replace("_", "-").split("-")[0].lower()
    return _RULES.get(primary, GENERIC_RULES)


# --- Punctuation and break scoring --------------------------------------------

_SENTENCE_END = ".!?…。！？‼⁇⁈⁉"
_CLAUSE_END = ",;:—–、，；："
# Closing quotes and brackets that may follow a sentence's last mark.
_CLOSERS = "\"'»”’)]}」』）］｝】〕〉》"
# Kinsoku and its Latin equivalent: these never start a line...
_NO_BREAK_BEFORE = frozenset(",.!?;:)]}»”’…、。，．！？；：）］｝」』】〕〉》ー～ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ・")
# ...and these never end one.
_NO_BREAK_AFTER = frozenset("([{«“‘¿¡（［｛「『【〔〈《")
# A full stop after these does not end a sentence.
_ABBREVIATIONS = _words("mr. mrs. ms. dr. prof. st. sr. sra. jr. vs. e.g. i.e. mme. mlle. hr. fr. nr.")

# Costs of a line or event break between two tokens: lower is better.
_COST_AFTER_SENTENCE = 0.0
_COST_AFTER_CLAUSE = 1.0
_COST_BEFORE_CONJUNCTION = 2.0
_COST_BEFORE_PREPOSITION = 3.0
_COST_AFTER_PARTICLE = 3.0
# Unspaced Japanese without a dictionary: phrases (bunsetsu) mostly end in
# hiragana and start with kanji or katakana, so that change of script is a
# fair place to break, and a kanji followed by hiragana (a verb's ending, a
# particle) a poor one.
_COST_KANA_TO_KANJI = 4.0
_COST_ANYWHERE = 5.0
_COST_KANJI_TO_KANA = 7.0
_COST_AFTER_CONNECTIVE = 8.0  # a line ending on "of" or "and"
_COST_INSIDE_NOUN_PHRASE = 20.0  # added: the break falls between an article's adjective and noun
# Finite, so that some split always exists (a 7 s stretch of nothing but
# articles would still be subtitled), but never chosen when avoidable.
_COST_AFTER_ARTICLE = 100.0
_COST_KINSOKU = 1000.0

# Event-level scores: each event costs something, so text is not cut into
# needlessly many events; sentence ends and pauses earn more than that, so
# events follow sentences and speech. A break between events weighs more than
# the same break between lines: the viewer loses the first half from view.
_EVENT_COST = 3.0
_EVENT_BREAK_WEIGHT = 2.0
_SENTENCE_BONUS = 6.0
_PAUSE_BONUS = 6.0
_SEGMENT_BONUS = 2.0
# Per second of a long pause an event is held over (see LONG_PAUSE_S).
_HELD_PAUSE_PENALTY_PER_S = 15.0
# Per second the event lacks to reach the minimum duration or the reading
# speed, counting the silence it could borrow.
_SHORT_PENALTY_PER_S = 20.0
_READING_PENALTY_PER_S = 4.0
# Two-line layouts: prefer balanced lines, a shorter top line over a longer
# one (bottom-heavy), and no one-word line beside a long one.
_BALANCE_WEIGHT = 4.0
_TOP_HEAVY_WEIGHT = 1.0
_ORPHAN_PENALTY = 4.0

_WORD_CHARS = re.compile(r"^[^\w]+|[^\w]+$")


def _bare(token: str) -> str:
    """A token as the word tables spell it: lower case, no outer punctuation."""
    return _WORD_CHARS.sub("", token).lower()


def _ends_sentence(text: str) -> bool:
    stripped = text.rstrip(_CLOSERS)
    if not stripped or stripped[-1] not in _SENTENCE_END:
        return False
    return stripped.lower() not in _ABBREVIATIONS


def _break_cost(left: str, right: str, rules: LanguageRules) -> float:
    """Cost of breaking a line (or an event) between text `left` and `right`.

    For spaced languages `left` and `right` are the two words either side;
    for unspaced ones they are a few characters of context either side.
    """
    if right[0] in _NO_BREAK_BEFORE or left[-1] in _NO_BREAK_AFTER:
        return _COST_KINSOKU
    tail = left.rstrip(_CLOSERS) or left
    if _ends_sentence(left):
        return _COST_AFTER_SENTENCE
    if tail[-1] in _SENTENCE_END or tail[-1] in _CLAUSE_END:
        return _COST_AFTER_CLAUSE
    if rules.spaced:
        left_word, right_word = _bare(left), _bare(right)
        if left_word in rules.articles:
            return _COST_AFTER_ARTICLE
        if left_word in rules.conjunctions or left_word in rules.prepositions:
            return _COST_AFTER_CONNECTIVE
        if right_word in rules.conjunctions:
            return _COST_BEFORE_CONJUNCTION
        if right_word in rules.prepositions and right_word not in rules.binding:
            return _COST_BEFORE_PREPOSITION
        return _COST_ANYWHERE
    if any(right.startswith(word) for word in rules.conjunctions):
        return _COST_BEFORE_CONJUNCTION
    if _ends_with_particle(left, rules):
        return _COST_AFTER_PARTICLE
    if rules.particles:  # a script with kana
        if _is_hiragana(left[-1]) and not _is_hiragana(right[0]):
            return _COST_KANA_TO_KANJI
        if _is_kanji(left[-1]) and _is_hiragana(right[0]):
            return _COST_KANJI_TO_KANA
    return _COST_ANYWHERE


def _is_hiragana(char: str) -> bool:
    return "\u3041" <= char <= "\u309f"


def _is_kanji(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


def _ends_with_particle(left: str, rules: LanguageRules) -> bool:
    for particle in rules.particles:
        if left.endswith(particle):
            before = left[: -len(particle)]
            # A one-kana particle is only a particle after a content word
            # (kanji, katakana...): inside a hiragana word it is just a kana.
            if len(particle) > 1 or (before and not _is_hiragana(before[-1])):
                return True
    return False


# --- Measuring ------------------------------------------------------------------


def _width(text: str, rules: LanguageRules) -> float:
    """Width of text as the rules count it; combining marks (a decomposed
    accent) take no room of their own."""
    visible = [c for c in text if not unicodedata.combining(c)]
    if not rules.wide_script:
        return float(len(visible))
    return sum(1.0 if unicodedata.east_asian_width(c) in "FWA" else 0.5 for c in visible)


# --- Public types ---------------------------------------------------------------


@dataclass(frozen=True)
class Cue:
    """One subtitle event: its display times and its one or two lines."""

    start_s: float
    end_s: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Rendered:
    """The cues of a transcript, and how many of them are shown for less
    time than their reading speed asks (the speech itself was too fast)."""

    cues: list[Cue]
    reading_speed_warnings: int


# --- Tokens ---------------------------------------------------------------------


@dataclass(slots=True)
class _Token:
    text: str
    start_ms: int
    end_ms: int
    # Whether a space separates it from the token before (when both are on
    # the same line).
    space_before: bool
    ends_segment: bool = False


def _ms(duration: duration_pb2.Duration) -> int:
    return duration.seconds * 1000 + round(duration.nanos / 1_000_000)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _is_narrow_word_char(char: str) -> bool:
    return char.isalnum() and unicodedata.east_asian_width(char) not in "FWA"


def _split_text(text: str, rules: LanguageRules) -> list[tuple[str, bool]]:
    """Text as (token, space before) pairs: words, or for unspaced scripts
    single characters with runs of Latin letters and digits kept whole."""
    if rules.spaced:
        return [(word, True) for word in text.split()]
    pieces: list[tuple[str, bool]] = []
    space = False
    run = ""
    for char in text:
        if char.isspace():
            if run:
                pieces.append((run, space))
                run, space = "", False
            space = bool(pieces)
            continue
        if _is_narrow_word_char(char):
            run += char
            continue
        if run:
            pieces.append((run, space))
            run, space = "", False
        pieces.append((char, space))
        space = False
    if run:
        pieces.append((run, space))
    return pieces


def _word_tokens(segment: transcribe_pb2.Segment, rules: LanguageRules) -> list[_Token]:
    raw = [word.text for word in segment.words]
    # Whisper marks a word boundary with a leading space on the word; an ASR
    # without that convention gives bare words, spaced by the language.
    whisper_spacing = any(text[:1].isspace() for text in raw[1:])
    tokens = []
    for word, text in zip(segment.words, raw, strict=True):
        cleaned = _clean(text)
        if not cleaned:
            continue
        space = text[:1].isspace() if whisper_spacing else rules.spaced
        tokens.append(_Token(cleaned, _ms(word.start_offset), _ms(word.end_offset), space))
    return tokens


def _text_tokens(segment: transcribe_pb2.Segment, rules: LanguageRules) -> list[_Token]:
    """A segment without words (a translation): its text, timed in proportion
    to the characters of each token within the segment's time span."""
    pieces = _split_text(segment.text, rules)
    start, end = _ms(segment.start_offset), _ms(segment.end_offset)
    end = max(end, start)
    space_width = _width(" ", rules)
    # The space before a token is part of the time before it, except before
    # the first (it separates the segment from the one before, not speech).
    spaces = [space_width if space and index else 0.0 for index, (_, space) in enumerate(pieces)]
    weights = [_width(text, rules) + gap for (text, _), gap in zip(pieces, spaces, strict=True)]
    total = sum(weights) or 1.0
    tokens = []
    elapsed = 0.0
    for (text, space), weight, gap in zip(pieces, weights, spaces, strict=True):
        token_start = elapsed + gap
        elapsed += weight
        tokens.append(
            _Token(
                text,
                start + round((end - start) * token_start / total),
                start + round((end - start) * elapsed / total),
                space,
            )
        )
    return tokens


def _tokens(transcript: transcribe_pb2.Transcript, rules: LanguageRules) -> list[_Token]:
    tokens: list[_Token] = []
    for segment in transcript.segments:
        segment_tokens = _word_tokens(segment, rules) if segment.words else []
        words_text = _squeeze("".join(token.text for token in segment_tokens))
        # The segment's text is the reference: words that do not spell it
        # (an ASR quirk) give way to the text, timed proportionally.
        if not segment_tokens or (segment.text.strip() and words_text != _squeeze(segment.text)):
            segment_tokens = _text_tokens(segment, rules)
        if segment_tokens:
            segment_tokens[-1].ends_segment = True
            tokens.extend(segment_tokens)
    # ASR times can overlap or run backwards; starts are made monotonic and
    # every end at least its start, so spans and gaps are never negative.
    previous_start = 0
    for token in tokens:
        token.start_ms = max(token.start_ms, previous_start, 0)
        token.end_ms = max(token.end_ms, token.start_ms)
        previous_start = token.start_ms
    return tokens


# --- Language of the text ---------------------------------------------------------


def _script_language(text: str) -> str:
    """For a transcript without a language: a CJK script picks its rules."""
    kana = sum(1 for c in text if "\u3040" <= c <= "\u30ff")
    hangul = sum(1 for c in text if "\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff")
    han = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
    letters = sum(1 for c in text if c.isalpha()) or 1
    if kana and (kana + han) / letters > 0.3:
        return "ja"
    if hangul / letters > 0.3:
        return "ko"
    if han / letters > 0.3:
        return "zh"
    return ""


# --- Building events --------------------------------------------------------------


class _Planner:
    """Chooses events over the token list and lays out their lines."""

    def __init__(self, tokens: list[_Token], rules: LanguageRules, gap_ms: int, media_end_ms: int | None):
        self.tokens = tokens
        self.rules = rules
        self.gap_ms = gap_ms
        self.media_end_ms = media_end_ms
        n = len(tokens)
        space = _width(" ", rules)
        self.widths = [_width(t.text, rules) for t in tokens]
        self.separators = [space if t.space_before else 0.0 for t in tokens]
        self._widest_separator = space
        # prefix[k]: width of tokens[:k] with every separator, so that the
        # width of tokens[a:b] on one line is prefix[b] - prefix[a] - sep[a].
        self.prefix = [0.0] * (n + 1)
        for k in range(n):
            self.prefix[k + 1] = self.prefix[k] + self.widths[k] + self.separators[k]
        # break_costs[k]: cost of breaking between tokens[k - 1] and tokens[k].
        self.break_costs = [0.0] * (n + 1)
        for k in range(1, n):
            self.break_costs[k] = self._boundary_cost(k)
        # The same boundary as the end of an event, and the cost of an event
        # holding its text over a long pause there instead.
        self.event_break_costs = [0.0] * (n + 1)
        self.held_pause_costs = [0.0] * (n + 1)
        for k in range(1, n):
            self.event_break_costs[k] = self._event_break_cost(k)
            self.held_pause_costs[k] = self._held_pause_cost(k)

    def _boundary_cost(self, k: int) -> float:
        tokens = self.tokens
        if self.rules.spaced:
            cost = _break_cost(tokens[k - 1].text, tokens[k].text, self.rules)
            # "a wide | river": one word after an article, the noun usually has not come yet.
            if k >= 2 and cost >= _COST_ANYWHERE and _bare(tokens[k - 2].text) in self.rules.articles:
                cost += _COST_INSIDE_NOUN_PHRASE
            return cost
        left = "".join(t.text for t in tokens[max(0, k - 4) : k])
        right = "".join(t.text for t in tokens[k : k + 4])
        return _break_cost(left, right, self.rules)

    def width(self, a: int, b: int) -> float:
        return self.prefix[b] - self.prefix[a] - self.separators[a]

    def layout(self, a: int, b: int) -> tuple[float, int | None] | None:
        """Best lines for tokens[a:b], one if they fit, else two (never more):
        (cost, index of the second line's first token, None for one line), or
        None if they fit in no two lines.

        A single token wider than a line (a very long word) stands alone on
        its line rather than being cut."""
        limit = self.rules.max_line_width
        if b - a == 1 or self.width(a, b) <= limit:
            return 0.0, None
        best: tuple[float, int | None] | None = None
        # Only splits where both lines can fit are worth scoring: the top line
        # ends by `last`, the bottom starts from `first` (bisecting the prefix
        # widths), and a lone token may stand on either line whatever its width.
        prefix, separators, break_costs = self.prefix, self.separators, self.break_costs
        top_start = prefix[a] + separators[a]
        last = bisect.bisect_right(prefix, top_start + limit, a, b) - 1
        first = bisect.bisect_left(prefix, prefix[b] - limit - self._widest_separator, a, b)
        candidates = range(max(a + 1, first), min(b - 1, last) + 1)
        for k in (a + 1, *candidates, b - 1) if candidates else (a + 1, b - 1):
            top = prefix[k] - top_start
            bottom = prefix[b] - prefix[k] - separators[k]
            if (top > limit and k - a > 1) or (bottom > limit and b - k > 1):
                continue
            difference = (top - bottom) / limit
            cost = break_costs[k] + _BALANCE_WEIGHT * abs(difference)
            if difference > 0:
                cost += _TOP_HEAVY_WEIGHT * difference
            if (k - a == 1 and b - k >= 3) or (b - k == 1 and k - a >= 3):
                cost += _ORPHAN_PENALTY
            if best is None or cost < best[0]:
                best = (cost, k)
        return best

    def _event_break_cost(self, k: int) -> float:
        """Cost of ending an event between tokens[k - 1] and tokens[k]."""
        cost = self.break_costs[k] * _EVENT_BREAK_WEIGHT
        if self.break_costs[k] >= _COST_AFTER_ARTICLE:
            return cost
        before = self.tokens[k - 1]
        bonus = 0.0
        if _ends_sentence(before.text):
            bonus = max(bonus, _SENTENCE_BONUS)
        if self._pause_ms(k) >= _LONG_PAUSE_MS:
            bonus = max(bonus, _PAUSE_BONUS)
        if before.ends_segment:
            bonus = max(bonus, _SEGMENT_BONUS)
        return cost - bonus

    def _pause_ms(self, k: int) -> int:
        return self.tokens[k].start_ms - self.tokens[k - 1].end_ms

    def _held_pause_cost(self, k: int) -> float:
        pause = self._pause_ms(k)
        if pause < _LONG_PAUSE_MS:
            return 0.0
        return _HELD_PAUSE_PENALTY_PER_S * pause / 1000

    def _timing_penalty(self, a: int, b: int, speech_end_ms: int) -> float:
        tokens = self.tokens
        start = tokens[a].start_ms
        available_end = start + _MAX_DURATION_MS
        if b < len(tokens):
            available_end = min(available_end, tokens[b].start_ms - self.gap_ms)
        elif self.media_end_ms is not None:
            available_end = min(available_end, self.media_end_ms)
        available = max(available_end, speech_end_ms) - start
        reading = self.width(a, b) * 1000 / self.rules.max_chars_per_second
        return (
            _SHORT_PENALTY_PER_S * max(0.0, _MIN_DURATION_MS - available) / 1000
            + _READING_PENALTY_PER_S * max(0.0, reading - available) / 1000
        )

    def events(self) -> list[tuple[int, int]]:
        """Event boundaries as (first token, one past the last), best overall."""
        tokens = self.tokens
        n = len(tokens)
        best = [math.inf] * (n + 1)
        best[0] = 0.0
        came_from = [0] * (n + 1)
        for a in range(n):
            if best[a] == math.inf:
                continue
            speech_end = tokens[a].end_ms
            held_pauses = 0.0
            for b in range(a + 1, n + 1):
                speech_end = max(speech_end, tokens[b - 1].end_ms)
                single = b - a == 1
                # Longer spans and more text only get worse, so stop there.
                if not single and speech_end - tokens[a].start_ms > _MAX_DURATION_MS:
                    break
                if not single:
                    held_pauses += self.held_pause_costs[b - 1]
                lines = self.layout(a, b)
                if lines is None:
                    break
                cost = best[a] + _EVENT_COST + lines[0] + held_pauses
                cost += self._timing_penalty(a, b, speech_end)
                if b < n:
                    cost += self.event_break_costs[b]
                if cost < best[b]:
                    best[b] = cost
                    came_from[b] = a
        bounds = []
        b = n
        while b > 0:
            bounds.append((came_from[b], b))
            b = came_from[b]
        return bounds[::-1]

    def lines(self, a: int, b: int) -> tuple[str, ...]:
        layout = self.layout(a, b)
        split = layout[1] if layout else None
        if split is None:
            return (self._join(a, b),)
        return (self._join(a, split), self._join(split, b))

    def _join(self, a: int, b: int) -> str:
        parts = [self.tokens[a].text]
        for token in self.tokens[a + 1 : b]:
            parts.append((" " if token.space_before else "") + token.text)
        return "".join(parts)


def _time_events(
    spans: list[tuple[int, int]],
    reading_ms: list[int],
    gap_ms: int,
    chain_ms: int,
    media_end_ms: int | None,
) -> list[list[int]]:
    """Display times [start, end] in ms for events whose speech spans
    (start, end) are given, in order."""
    times: list[list[int]] = []
    for index, (speech_start, speech_end) in enumerate(spans):
        start = speech_start if not times else max(speech_start, times[-1][1] + gap_ms)
        hard_end = start + _MAX_DURATION_MS
        if media_end_ms is not None:
            hard_end = min(hard_end, media_end_ms)
        # Borrow the silence after the speech, up to the next event's speech.
        free_end = hard_end
        if index + 1 < len(spans):
            free_end = min(free_end, spans[index + 1][0] - gap_ms)
        wanted = max(speech_end, start + _MIN_DURATION_MS, start + reading_ms[index])
        end = min(wanted, free_end)
        if end < start + _MIN_DURATION_MS:
            # The next event's speech starts too soon for 5/6 s: the minimum
            # duration wins, and the next event shows a little after its speech.
            end = min(start + _MIN_DURATION_MS, hard_end)
        times.append([start, max(end, start + 1)])
    if media_end_ms is not None:
        # Events pushed late, or cut short by the end of the media, must fit
        # before it and still last 5/6 s: pull them back, borrowing the
        # silence before them instead.
        limit = media_end_ms
        for pair in reversed(times):
            end = min(pair[1], limit)
            start = max(0, min(pair[0], end - _MIN_DURATION_MS))
            if [start, end] == pair:
                break
            pair[:] = [start, end]
            limit = start - gap_ms
    # Chain events separated by a blink: extend the first to the minimum gap.
    for current, following in zip(times, times[1:], strict=False):
        if following[0] - current[1] < chain_ms:
            current[1] = max(current[1], min(following[0] - gap_ms, current[0] + _MAX_DURATION_MS))
    return times


def build_cues(
    transcript: transcribe_pb2.Transcript,
    *,
    frame_rate: float = DEFAULT_FRAME_RATE,
    language: str | None = None,
) -> Rendered:
    """Subtitle events for a transcript, following the quality rules.

    `language` overrides the transcript's own; `frame_rate` (0 means 25)
    sets the minimum gap of 2 frames between events.
    """
    if frame_rate == 0:
        frame_rate = DEFAULT_FRAME_RATE
    if not math.isfinite(frame_rate) or frame_rate < 0:
        raise ValueError(f"frame_rate must be a positive number of frames per second, not {frame_rate!r}")
    gap_ms = math.ceil(MIN_GAP_FRAMES * 1000 / frame_rate)
    chain_ms = math.ceil(CHAIN_GAP_FRAMES * 1000 / frame_rate)

    code = language if language is not None else transcript.language
    if not code:
        code = _script_language("".join(segment.text for segment in transcript.segments))
    rules = rules_for(code)

    tokens = _tokens(transcript, rules)
    if not tokens:
        return Rendered(cues=[], reading_speed_warnings=0)
    media_end: int | None = None
    if transcript.HasField("duration") and _ms(transcript.duration) > 0:
        media_end = max(_ms(transcript.duration), max(t.end_ms for t in tokens))

    planner = _Planner(tokens, rules, gap_ms, media_end)
    bounds = planner.events()
    lines = [planner.lines(a, b) for a, b in bounds]
    widths = [sum(_width(line, rules) for line in event_lines) for event_lines in lines]
    reading_ms = [math.ceil(w * 1000 / rules.max_chars_per_second) for w in widths]
    spans = [(tokens[a].start_ms, max(t.end_ms for t in tokens[a:b])) for a, b in bounds]
    times = _time_events(spans, reading_ms, gap_ms, chain_ms, media_end)

    cues = [Cue(start / 1000, end / 1000, event_lines) for (start, end), event_lines in zip(times, lines, strict=True)]
    warnings = sum(
        1
        for (start, end), width in zip(times, widths, strict=True)
        if width > rules.max_chars_per_second * (end - start) / 1000 + 1e-9
    )
    return Rendered(cues=cues, reading_speed_warnings=warnings)


# --- File formats -----------------------------------------------------------------


def _timestamp(seconds: float, decimal_mark: str) -> str:
    total_ms = round(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


# SubRip has no escapes; a timing arrow in the text would read as a timing
# line to some parsers, so a zero-width space (not drawn) is slipped into it.
_SRT_ARROW = "-->"
_SRT_ARROW_BROKEN = "--\u200b>"
# SubRip's line ending is CRLF, the format's origin; every reader takes it.
_SRT_NEWLINE = "\r\n"


def to_srt(cues: list[Cue]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, CRLF line
    endings. No cues give an empty file (SubRip has no header)."""
    blocks = []
    for number, cue in enumerate(cues, start=1):
        timing = f"{_timestamp(cue.start_s, ',')} --> {_timestamp(cue.end_s, ',')}"
        text = [line.replace(_SRT_ARROW, _SRT_ARROW_BROKEN) for line in cue.lines]
        blocks.append(_SRT_NEWLINE.join([str(number), timing, *text, "", ""]))
    return "".join(blocks)


def _vtt_escape(line: str) -> str:
    # Escaping ">" also keeps "-->" out of the cue text.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues: list[Cue]) -> str:
    """WebVTT: the `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`
    with escaped text."""
    parts = ["WEBVTT\n\n"]
    for cue in cues:
        timing = f"{_timestamp(cue.start_s, '.')} --> {_timestamp(cue.end_s, '.')}"
        parts.append("\n".join([timing, *map(_vtt_escape, cue.lines)]) + "\n\n")
    return "".join(parts)


def transcript_json(transcript: transcribe_pb2.Transcript) -> str:
    """The TRANSCRIPT_JSON artifact: the transcript's protobuf JSON mapping
    (lowerCamelCase names, durations as "1.500s"), non-ASCII text kept as is."""
    return json_format.MessageToJson(transcript, preserving_proto_field_name=False, indent=2, ensure_ascii=False)
