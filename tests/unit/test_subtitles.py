"""Subtitles made from transcripts follow the output quality rules, and every
SRT and WebVTT file passes a strict validator.

The rules (ARCHITECTURE.md, "Output quality rules") are checked here on the
output, with their numbers written out rather than imported, so a change to a
limit in services/media/subtitles.py has to be a change to these promises too.

The validators are the npm packages srt-validator and webvtt-parser behind
tests/subtitle_validators/validate.js, installed by scripts/setup.sh when npm
is present; without them the validation tests skip and say so (the rule
tests still run). Every scenario below is rendered to both formats and
validated in one batch.
"""

from __future__ import annotations

import html
import json
import math
import random
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, json_format
from octavia.transcribe.v1 import transcribe_pb2

from services.media.subtitles import Cue, Rendered, build_cues, to_srt, to_vtt, transcript_json

ROOT = Path(__file__).resolve().parents[2]
VALIDATORS = ROOT / "tests" / "subtitle_validators"

MIN_DURATION_MS = 834  # 5/6 s, to the millisecond above
MAX_DURATION_MS = 7000


@dataclass(frozen=True)
class Limits:
    line_width: float
    chars_per_second: float
    wide: bool = False  # CJK counting: full-width 1, half-width 0.5


ENGLISH = Limits(42, 20)
LATIN = Limits(42, 17)
JAPANESE = Limits(13, 4, wide=True)
CHINESE = Limits(16, 9, wide=True)

# Words after which neither a line nor an event may end: they belong with
# the noun that follows.
ARTICLES = {
    "en": {"a", "an", "the", "this", "these", "those", "my", "your", "our", "their"},
    "pt": {"o", "a", "os", "as", "um", "uma", "do", "da", "dos", "das", "no", "na", "ao", "pelo", "pela"},
}


# --- Building transcripts by hand ------------------------------------------------


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


PAUSE = "|"  # in a spoken script: a long pause (1.2 s) between two words


def spoken(
    language: str,
    segments: list[str],
    *,
    start: float = 0.4,
    seconds_per_char: float = 0.045,
    word_gap: float = 0.07,
    segment_gap: float = 0.8,
) -> transcribe_pb2.Transcript:
    """A transcript as faster-whisper writes it: one segment per script
    entry, words with a leading space, timed by their length (the defaults
    give about 2.5 words a second of English)."""
    transcript = transcribe_pb2.Transcript(language=language, language_probability=0.97, model="small")
    now = start
    for index, script in enumerate(segments):
        segment = transcript.segments.add(index=index, avg_logprob=-0.2, no_speech_probability=0.01)
        segment.start_offset.CopyFrom(duration(now))
        texts = []
        for token in script.split():
            if token == PAUSE:
                now += 1.2
                continue
            word = segment.words.add(text=" " + token, probability=0.91)
            word.start_offset.CopyFrom(duration(now))
            now += 0.12 + seconds_per_char * len(token)
            word.end_offset.CopyFrom(duration(now))
            now += word_gap
            texts.append(token)
        segment.end_offset.CopyFrom(segment.words[-1].end_offset)
        segment.text = " ".join(texts)
        now += segment_gap
    transcript.duration.CopyFrom(duration(now + 1.0))
    return transcript


def translated(language: str, segments: list[tuple[float, float, str]], *, total: float) -> transcribe_pb2.Transcript:
    """A transcript as the translate stage writes it: text and times, no words."""
    transcript = transcribe_pb2.Transcript(language=language, source_language="en", translation_engine="bergamot", model="small")
    transcript.duration.CopyFrom(duration(total))
    for index, (start, end, text) in enumerate(segments):
        segment = transcript.segments.add(index=index, text=text, source_text="(original)")
        segment.start_offset.CopyFrom(duration(start))
        segment.end_offset.CopyFrom(duration(end))
    return transcript


def seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


# --- The rules, checked on any output ---------------------------------------------


def width(text: str, limits: Limits) -> float:
    if not limits.wide:
        return float(len(text))
    return sum(1.0 if unicodedata.east_asian_width(c) in "FWA" else 0.5 for c in text)


def ms(value: float) -> int:
    return round(value * 1000)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def bare(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word).lower()


def check_rules(
    transcript: transcribe_pb2.Transcript,
    rendered: Rendered,
    limits: Limits,
    *,
    frame_rate: float = 25.0,
    articles: set[str] = frozenset(),
    follows_speech: bool = True,
) -> None:
    """Every rule on `rendered`. With `follows_speech`, for a transcript with
    words, also: no event shows before its first word is spoken (it may
    linger after it, into silence)."""
    cues = rendered.cues
    text = "".join(segment.text for segment in transcript.segments)
    assert squeeze("".join(cue.text for cue in cues)) == squeeze(text), "text was lost or changed"

    gap_ms = math.ceil(2 * 1000 / frame_rate)
    media_end = ms(seconds(transcript.duration))
    if follows_speech and all(segment.words for segment in transcript.segments):
        words = [word for segment in transcript.segments for word in segment.words if word.text.strip()]
        for cue in cues:
            first_word, size = words[0], 0
            while size < len(squeeze(cue.text)):
                size += len(squeeze(words.pop(0).text))
            assert ms(cue.start_s) >= ms(seconds(first_word.start_offset)), f"{cue} shows before {first_word.text!r}"
    too_fast = 0
    for number, cue in enumerate(cues, start=1):
        where = f"cue {number} {cue}"
        start, end = ms(cue.start_s), ms(cue.end_s)
        assert 1 <= len(cue.lines) <= 2, where
        for line in cue.lines:
            assert line and line == line.strip(), where
            # Only a single word wider than a line may be wider than a line.
            assert width(line, limits) <= limits.line_width or " " not in line, where
        assert MIN_DURATION_MS <= end - start <= MAX_DURATION_MS, where
        assert 0 <= start < end <= media_end, where
        if number < len(cues):
            assert ms(cues[number].start_s) - end >= gap_ms, f"{where} is too close to the next"
        characters = sum(width(line, limits) for line in cue.lines)
        if characters > limits.chars_per_second * (end - start) / 1000 + 1e-9:
            too_fast += 1
        if articles:
            # Neither a line nor an event ends on an article.
            for line in cue.lines[:-1] if number == len(cues) else cue.lines:
                assert bare(line.split()[-1]) not in articles, f"{where}: article left at a line end"
    assert too_fast == rendered.reading_speed_warnings


# --- The strict validators ----------------------------------------------------------


def validator_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed, so SRT/VTT files cannot be validated (install Node.js, rerun scripts/setup.sh)"
    for package in ("srt-validator", "webvtt-parser"):
        if not (VALIDATORS / "node_modules" / package).is_dir():
            return (
                f"the subtitle validators are not installed ({package} is missing): "
                "run `bash scripts/setup.sh` on a machine with npm"
            )
    return None


def run_validator(*files: Path) -> subprocess.CompletedProcess[str]:
    reason = validator_missing()
    if reason:
        pytest.skip(reason)
    return subprocess.run(
        ["node", str(VALIDATORS / "validate.js"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def parse_vtt_cues(text: str) -> list[tuple[str, str, list[str]]]:
    blocks = text.split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in filter(None, blocks[1:]):
        timing, *lines = block.split("\n")
        start, end = timing.split(" --> ")
        cues.append((start, end, [html.unescape(line) for line in lines]))
    return cues


# --- Scenarios: transcripts as the stages write them --------------------------------

ENGLISH_TALK = [
    "So today we're going to talk about the way subtitles are made, and why their timing matters so much.",
    "When you watch a film in another language, you read the words at the bottom of the screen.",
    "If the text goes by too fast, you miss the story.",
    "If it stays too long, it feels late.",
    # A long run-on stretch with no pause, longer than one event may last.
    "And that is the reason why the people who write them for a living follow a set of rules about "
    "the length of each line and the speed of reading and the gaps between events so that nobody "
    "ever has to choose between the picture and the words on the screen at the bottom of the frame.",
    # A long pause in the middle of a sentence.
    "But the best subtitles | are the ones you never notice at all.",
    "Yes.",
    "Thank you for watching, and see you next time.",
]
RUN_ON = ENGLISH_TALK[4]
FAST = (
    "Unfortunately the international standardization committee's documentation "
    "requirements fundamentally contradicted everybody's understanding, "
    "consequently implementation responsibilities remained extraordinarily controversial."
)
LONG_WORD = "https://example.org/a/very/long/address/that/nobody/can/break/at/all"

PORTUGUESE = [
    (0.4, 4.9, "Então, hoje vamos falar sobre a forma como as legendas são feitas e por que o seu tempo importa tanto."),
    (5.7, 9.8, "Quando você assiste a um filme em outra língua, lê as palavras na parte de baixo da tela."),
    (10.6, 12.7, "Se o texto passa rápido demais, você perde a história."),
    (
        13.5,
        28.0,
        "E é por isso que as pessoas que as escrevem profissionalmente seguem um conjunto de regras sobre o "
        "comprimento de cada linha, a velocidade de leitura e os intervalos entre os eventos, para que ninguém "
        "precise escolher entre a imagem e as palavras na parte de baixo do quadro.",
    ),
    (28.8, 29.3, "Sim."),
    (30.1, 33.0, "Obrigado por assistir e até a próxima."),
]
JAPANESE_TRANSLATION = [
    (0.5, 6.0, "今日は、字幕がどのように作られるのか、そしてなぜタイミングがそれほど重要なのかについてお話しします。"),
    (6.8, 11.0, "外国語の映画を観るとき、私たちは画面の下に表示される言葉を読みます。"),
    (11.8, 14.0, "文字が速すぎると、物語を見逃してしまいます。"),
    (14.8, 16.0, "はい。"),
]
JAPANESE_WORDS = ["今日", "は", "字幕", "の", "作り方", "に", "ついて", "お", "話し", "します", "。"]
CHINESE_TEXT = "今天我们来谈谈字幕是如何制作的，以及为什么时间安排如此重要。如果文字太快，你就会错过故事。"
KOREAN_TEXT = "오늘은 자막이 어떻게 만들어지는지, 그리고 왜 타이밍이 그렇게 중요한지에 대해 이야기하겠습니다."


def english_talk() -> transcribe_pb2.Transcript:
    return spoken("en", ENGLISH_TALK)


def fast_speech() -> transcribe_pb2.Transcript:
    return spoken("en", [FAST], seconds_per_char=0.02, word_gap=0.0)


def asr_quirks() -> transcribe_pb2.Transcript:
    transcript = spoken("en", ["Well, this one has some rather odd timings in it, as real ones do."])
    words = transcript.segments[0].words
    words[2].end_offset.CopyFrom(words[2].start_offset)  # zero duration
    words[5].start_offset.CopyFrom(words[4].start_offset)  # starts with the word before
    words[6].end_offset.CopyFrom(words[3].end_offset)  # ends before it starts
    words[7].text = "  timings\t"  # stray whitespace around the word
    return transcript


def long_word() -> transcribe_pb2.Transcript:
    return spoken("en", [f"Please visit {LONG_WORD} for the details of the programme."])


def japanese_from_whisper() -> transcribe_pb2.Transcript:
    """Whisper's Japanese words: pieces with no spaces between them."""
    transcript = transcribe_pb2.Transcript(language="ja", language_probability=0.99)
    transcript.duration.CopyFrom(duration(6.0))
    segment = transcript.segments.add(index=0, text="".join(JAPANESE_WORDS))
    now = 0.3
    for piece in JAPANESE_WORDS:
        word = segment.words.add(text=piece, probability=0.8)
        word.start_offset.CopyFrom(duration(now))
        now += 0.18 * len(piece)
        word.end_offset.CopyFrom(duration(now))
    segment.start_offset.CopyFrom(segment.words[0].start_offset)
    segment.end_offset.CopyFrom(segment.words[-1].end_offset)
    return transcript


ASR_VOCABULARY = (
    "the a an this and but or of to in it is was that he for on are with as his they be at one have "
    "from had by hot some what there we can out other were all your when up use word how said each "
    "she which do their time if will way about many then them would write like so these long make "
    "thing see him two has look more day could go come did my sound no most number who over know "
    "water than call first people extraordinarily internationalization, Hello! okay. yes? well, right."
).split()


def odd_transcript(rng: random.Random, *, tight_end: bool) -> transcribe_pb2.Transcript:
    """Random English speech with everything an ASR gets wrong: words that
    overlap, start before the previous one, last no time, or run long;
    pauses of every length; some segments without words."""
    transcript = transcribe_pb2.Transcript(language="en")
    now = rng.uniform(0, 2)
    for index in range(rng.randint(1, 12)):
        segment = transcript.segments.add(index=index)
        segment.start_offset.CopyFrom(duration(now))
        texts = []
        for _ in range(rng.randint(1, 40)):
            text = rng.choice(ASR_VOCABULARY)
            start = max(0.0, now + rng.choice([0, 0, 0, -0.05, 0.02, 0.7, 1.5]))
            end = start + rng.choice([0, 0.05, 0.2, 0.3, 0.5, 1.0])
            word = segment.words.add(text=" " + text, probability=rng.random())
            word.start_offset.CopyFrom(duration(start))
            word.end_offset.CopyFrom(duration(end))
            now = max(now, end) + rng.choice([0, 0.05, 0.1])
            texts.append(text)
        segment.end_offset.CopyFrom(duration(now))
        segment.text = " ".join(texts)
        if rng.random() < 0.3:
            del segment.words[:]
        now += rng.choice([0, 0.1, 0.5, 2.0])
    # The media ends with the last word, or a second later.
    transcript.duration.CopyFrom(duration(max(3.0, now + (rng.choice([0, 0.2]) if tight_end else 1.0))))
    return transcript


def odd_transcripts(seed: int, count: int):
    """(transcript, frame rate, media ends with the speech) triples."""
    rng = random.Random(seed)
    for _ in range(count):
        tight_end = rng.random() < 0.5
        yield odd_transcript(rng, tight_end=tight_end), rng.choice([23.976, 25.0, 30.0, 60.0]), tight_end


# Every scenario, as build_cues is called on it: all are rendered and validated.
SCENARIOS = {
    "english-talk": lambda: (english_talk(), {}),
    "english-talk-60fps-dense": lambda: (spoken("en", ENGLISH_TALK, segment_gap=0.05, word_gap=0.0), {"frame_rate": 60.0}),
    "run-on": lambda: (spoken("en", [RUN_ON]), {}),
    "fast-speech": lambda: (fast_speech(), {}),
    "asr-quirks": lambda: (asr_quirks(), {}),
    "long-word": lambda: (long_word(), {}),
    "portuguese": lambda: (translated("pt-BR", PORTUGUESE, total=34.0), {}),
    "german-by-argument": lambda: (
        translated("", [(0.0, 6.0, "Das ist der Hund des Nachbarn, und er bellt jeden Morgen sehr laut.")], total=7.0),
        {"language": "de"},
    ),
    "japanese-translation": lambda: (translated("ja", JAPANESE_TRANSLATION, total=20.0), {}),
    "japanese-whisper": lambda: (japanese_from_whisper(), {}),
    "chinese-undeclared": lambda: (translated("", [(0.0, 9.0, CHINESE_TEXT)], total=10.0), {}),
    "korean": lambda: (translated("ko", [(0.5, 7.5, KOREAN_TEXT)], total=9.0), {}),
    "empty": lambda: (transcribe_pb2.Transcript(language="en"), {}),
}


# --- Source language, with word timings ---------------------------------------------


def test_an_english_talk_follows_every_rule():
    transcript = english_talk()
    assert len(" ".join(ENGLISH_TALK).split()) > 100
    rendered = build_cues(transcript)

    check_rules(transcript, rendered, ENGLISH, articles=ARTICLES["en"])
    # At about 2.5 words a second, English reads comfortably everywhere.
    assert rendered.reading_speed_warnings == 0


def test_events_end_at_sentence_ends_and_long_pauses():
    cues = build_cues(english_talk()).cues
    for cue in cues:
        words = cue.text.split()
        # No event runs on from one sentence into the next...
        assert not any(word.endswith((".", "?", "!")) for word in words[:-1]), cue
    # ...and the pause after "subtitles" ends an event though no punctuation does.
    assert any(cue.text.endswith("But the best subtitles") for cue in cues)
    # A short answer between two sentences is an event of its own, kept on
    # screen for the minimum time.
    (yes,) = [cue for cue in cues if cue.text == "Yes."]
    assert ms(yes.end_s) - ms(yes.start_s) >= MIN_DURATION_MS


def test_a_run_on_stretch_longer_than_seven_seconds_is_split_at_phrase_starts():
    transcript = spoken("en", [RUN_ON])
    assert seconds(transcript.segments[0].end_offset) - seconds(transcript.segments[0].start_offset) > 14
    rendered = build_cues(transcript)
    check_rules(transcript, rendered, ENGLISH, articles=ARTICLES["en"])
    assert len(rendered.cues) >= 3
    # Each event after the first starts a phrase (a conjunction, a relative
    # pronoun, a preposition...), never in the middle of "the length".
    phrase_starts = {"and", "that", "who", "for", "about", "of", "so", "between", "at", "on", "to"}
    for cue in rendered.cues[1:]:
        assert bare(cue.text.split()[0]) in phrase_starts, cue


def test_a_line_breaks_after_the_comma_not_before_the_noun():
    sentence = "I went to the market early this morning, and then I bought some bread for the kids."
    cues = build_cues(spoken("en", [sentence])).cues
    assert [cue.lines for cue in cues] == [
        ("I went to the market early this morning,", "and then I bought some bread for the kids.")
    ]


def test_an_adjective_stays_with_its_article_and_noun():
    sentence = "It sits on seven hills beside a wide river that flows into the ocean."
    cues = build_cues(spoken("en", [sentence])).cues
    assert [cue.lines for cue in cues] == [("It sits on seven hills beside a wide river", "that flows into the ocean.")]


def test_a_two_line_event_has_no_one_word_line_when_it_can_be_avoided():
    for cue in build_cues(english_talk()).cues:
        if len(cue.lines) == 2:
            counts = [len(line.split()) for line in cue.lines]
            assert not (min(counts) == 1 and max(counts) >= 3), cue


def test_speech_faster_than_anyone_reads_keeps_its_text_and_is_counted():
    transcript = fast_speech()
    speech = seconds(transcript.segments[0].end_offset) - seconds(transcript.segments[0].start_offset)
    assert len(FAST) / speech > 25  # characters a second, spoken
    rendered = build_cues(transcript)

    check_rules(transcript, rendered, ENGLISH, articles=ARTICLES["en"])
    assert rendered.reading_speed_warnings >= 1


def test_reading_speed_borrows_the_silence_after_the_speech():
    # 41 characters said in 1.2 s (34 a second), then 1 s of silence.
    transcript = spoken("en", ["Nevertheless, unquestionably, absolutely."], seconds_per_char=0.02, word_gap=0.0)
    rendered = build_cues(transcript)
    (cue,) = rendered.cues
    assert rendered.reading_speed_warnings == 0
    assert cue.end_s - cue.start_s >= len(cue.text) / 20
    assert cue.end_s > seconds(transcript.segments[0].end_offset)


def test_asr_quirks_zero_length_overlapping_and_padded_words():
    transcript = asr_quirks()
    check_rules(transcript, build_cues(transcript), ENGLISH, articles=ARTICLES["en"])


def test_a_word_longer_than_a_line_stands_alone_on_its_line():
    assert len(LONG_WORD) > 42
    transcript = long_word()
    rendered = build_cues(transcript)

    check_rules(transcript, rendered, ENGLISH, articles=ARTICLES["en"])
    assert any(LONG_WORD in cue.lines for cue in rendered.cues)


@pytest.mark.parametrize("frame_rate", [23.976, 25.0, 29.97, 60.0])
def test_events_keep_two_frames_apart_at_any_frame_rate(frame_rate):
    transcript = spoken("en", ENGLISH_TALK, segment_gap=0.05, word_gap=0.0)
    rendered = build_cues(transcript, frame_rate=frame_rate)
    check_rules(transcript, rendered, ENGLISH, frame_rate=frame_rate, articles=ARTICLES["en"])


@pytest.mark.parametrize("seed", range(4))
def test_any_asr_output_however_odd_gives_cues_that_follow_the_rules(seed):
    for transcript, frame_rate, tight_end in odd_transcripts(seed, 100):
        rendered = build_cues(transcript, frame_rate=frame_rate)
        # Where the media ends with the speech, the last events may start a
        # little before their words to last 5/6 s.
        check_rules(
            transcript,
            rendered,
            ENGLISH,
            frame_rate=frame_rate,
            articles=ARTICLES["en"],
            follows_speech=not tight_end,
        )


# --- Translated transcripts: text and segment times, no words -------------------------


def test_a_portuguese_translation_is_split_in_proportion_within_each_segment():
    transcript = translated("pt-BR", PORTUGUESE, total=34.0)
    rendered = build_cues(transcript)

    check_rules(transcript, rendered, LATIN, articles=ARTICLES["pt"])
    # Each event starts while a segment is spoken, never in the silence
    # between two.
    spans = [(seconds(s.start_offset), seconds(s.end_offset)) for s in transcript.segments]
    for cue in rendered.cues:
        assert any(start - 1e-3 <= cue.start_s <= end for start, end in spans), cue
    # The long segment (14.5 s) needs several events.
    assert sum(1 for cue in rendered.cues if 13.5 <= cue.start_s < 28.0) >= 3


def test_the_language_argument_overrides_the_transcripts():
    transcript, options = SCENARIOS["german-by-argument"]()
    check_rules(transcript, build_cues(transcript, **options), LATIN, articles={"der", "des", "den", "jeden"})


# --- CJK --------------------------------------------------------------------------------


def test_a_japanese_translation_uses_japanese_line_widths_and_reading_speed():
    transcript = translated("ja", JAPANESE_TRANSLATION, total=20.0)
    rendered = build_cues(transcript)

    check_rules(transcript, rendered, JAPANESE)
    for cue in rendered.cues:
        for line in cue.lines:
            # Kinsoku: no line starts with closing punctuation or a small kana.
            assert line[0] not in "、。，．！？）」』ゃゅょっャュョッー", cue
    # Verbatim Japanese speech outruns 4 characters a second: counted, not cut.
    assert rendered.reading_speed_warnings > 0


def test_japanese_words_from_whisper_are_joined_without_spaces():
    transcript = japanese_from_whisper()
    rendered = build_cues(transcript)
    check_rules(transcript, rendered, JAPANESE)
    assert " " not in "".join(cue.text for cue in rendered.cues)


def test_a_chinese_transcript_without_a_language_is_measured_as_chinese():
    transcript = translated("", [(0.0, 9.0, CHINESE_TEXT)], total=10.0)
    rendered = build_cues(transcript)
    check_rules(transcript, rendered, CHINESE)
    # 16 Chinese characters would be 32 by the generic count of 42 a line.
    assert len(rendered.cues) > 1


def test_a_korean_translation_keeps_its_spaces_and_korean_line_widths():
    transcript = translated("ko", [(0.5, 7.5, KOREAN_TEXT)], total=9.0)
    rendered = build_cues(transcript)
    check_rules(transcript, rendered, Limits(16, 12, wide=True))
    assert " ".join(cue.text.replace("\n", " ") for cue in rendered.cues) == KOREAN_TEXT


# --- Edge cases ---------------------------------------------------------------------------


def test_an_empty_transcript_gives_no_cues_and_empty_files():
    rendered = build_cues(transcribe_pb2.Transcript(language="en"))
    assert rendered == Rendered(cues=[], reading_speed_warnings=0)
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"


def test_words_that_do_not_spell_the_segment_text_give_way_to_the_text():
    transcript = spoken("en", ["The words and the text agree here."])
    del transcript.segments[0].words[3]  # the ASR lost "the"
    rendered = build_cues(transcript)
    check_rules(transcript, rendered, ENGLISH, follows_speech=False)
    assert rendered.cues[0].text == "The words and the text agree here."


def test_segments_with_nothing_to_say_are_skipped():
    transcript = translated("en", [(0.0, 1.0, "   "), (1.0, 3.0, "Hello there.")], total=4.0)
    (cue,) = build_cues(transcript).cues
    assert cue.lines == ("Hello there.",)


def test_a_frame_rate_of_zero_means_25_and_a_negative_one_is_refused():
    transcript = spoken("en", ENGLISH_TALK[:2])
    assert build_cues(transcript, frame_rate=0) == build_cues(transcript, frame_rate=25)
    with pytest.raises(ValueError, match="frame_rate"):
        build_cues(transcript, frame_rate=-24)


def test_the_last_event_ends_with_the_media():
    transcript = spoken("en", ["Okay.", "Goodbye."], segment_gap=0.05)
    transcript.duration.CopyFrom(transcript.segments[-1].end_offset)
    check_rules(transcript, build_cues(transcript), ENGLISH)


# --- File formats and the strict validators -------------------------------------------------

SYNTAX_CUES = [
    Cue(1.0, 2.5, ("Tom & Jerry <3", "a -> b --> c")),
    Cue(3661.042, 3663.0, ("<i>not a tag</i>",)),
]


def test_srt_and_vtt_carry_the_same_cues_with_their_own_syntax():
    srt, vtt = to_srt(SYNTAX_CUES), to_vtt(SYNTAX_CUES)

    assert srt.startswith("1\r\n00:00:01,000 --> 00:00:02,500\r\nTom & Jerry <3\r\n")
    assert "2\r\n01:01:01,042 --> 01:01:03,000\r\n<i>not a tag</i>\r\n\r\n" in srt
    # SubRip cannot escape: a timing arrow in the text is broken by an
    # invisible zero-width space, so only timing lines hold one.
    arrow_lines = [line for line in srt.split("\r\n") if "-->" in line]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", line) for line in arrow_lines)
    assert "a -> b --\u200b> c" in srt
    assert vtt.startswith("WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nTom &amp; Jerry &lt;3\na -&gt; b --&gt; c\n\n")
    assert [lines for _, _, lines in parse_vtt_cues(vtt)] == [list(cue.lines) for cue in SYNTAX_CUES]


def test_every_rendered_srt_and_vtt_passes_the_strict_validators(tmp_path):
    rendered = {"syntax": SYNTAX_CUES}
    for name, scenario in SCENARIOS.items():
        transcript, options = scenario()
        rendered[name] = build_cues(transcript, **options).cues
    for seed in range(2):
        for index, (transcript, frame_rate, _) in enumerate(odd_transcripts(seed, 25)):
            rendered[f"odd-{seed}-{index}"] = build_cues(transcript, frame_rate=frame_rate).cues
    files = []
    for name, cues in rendered.items():
        srt, vtt = tmp_path / f"{name}.srt", tmp_path / f"{name}.vtt"
        srt.write_bytes(to_srt(cues).encode("utf-8"))
        vtt.write_bytes(to_vtt(cues).encode("utf-8"))
        files += [srt, vtt]

    result = run_validator(*files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid") == len(files)


def test_the_validators_refuse_broken_files(tmp_path):
    broken = {
        # WebVTT wants a full stop before the milliseconds.
        "comma.vtt": "WEBVTT\n\n00:00:01,000 --> 00:00:02,000\nHello\n",
        # A bare ampersand is not a valid WebVTT escape.
        "ampersand.vtt": "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nTom & Jerry\n",
        "no-header.vtt": "00:00:01.000 --> 00:00:02.000\nHello\n",
        # No blank line between the two cues.
        "no-blank-line.srt": "1\n00:00:01,000 --> 00:00:02,000\nHello\n2\n00:00:03,000 --> 00:00:04,000\nWorld\n",
        "dot.srt": "1\n00:00:01.000 --> 00:00:02.000\nHello\n\n",
        "overlap.srt": "1\n00:00:01,000 --> 00:00:03,000\nHello\n\n2\n00:00:02,000 --> 00:00:04,000\nWorld\n\n",
        "backwards.srt": "1\n00:00:03,000 --> 00:00:02,000\nHello\n\n",
    }
    paths = []
    for name, content in broken.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        paths.append(path)

    result = run_validator(*paths)
    assert result.returncode == 1
    for path in paths:
        assert f"{path}: INVALID" in result.stderr, f"{path.name} passed the validator"


# --- The transcript as JSON -------------------------------------------------------------


def test_the_transcript_json_is_the_protobuf_json_mapping():
    transcript = spoken("en", ENGLISH_TALK[:2])
    transcript.language_probability = 0.875
    document = json.loads(transcript_json(transcript))

    assert document["language"] == "en"
    assert document["languageProbability"] == 0.875
    first_word = document["segments"][0]["words"][0]
    assert set(first_word) == {"text", "startOffset", "endOffset", "probability"}
    assert first_word["startOffset"] == "0.400s"
    assert json_format.Parse(transcript_json(transcript), transcribe_pb2.Transcript()) == transcript


def test_the_transcript_json_keeps_non_ascii_text_readable():
    transcript = translated("ja", JAPANESE_TRANSLATION[:1], total=7.0)
    assert "今日は" in transcript_json(transcript)
