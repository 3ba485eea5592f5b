"""The tts stage: one segment of a translation spoken, fitted to its time where the voice allows.

Each task is one segment (the orchestrator fans the stage out), so several tts
workers speak one job side by side. The worker reads the language's
translation (kept briefly: the next task is usually the next segment of the
same one) and speaks the segment at a rate chosen so that it fits the time the
segment may fill (its start to the next segment's start), within the job's cap
(octavia_runtime.fit, step 2). The rate is chosen before speaking, from the
voice's pace (seconds per character) measured on the segments this worker
spoke before; when the speech still needs a noticeably faster rate it is
spoken again. The mix stage stretches the rest.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
from octavia.jobs.v1 import stages_pb2
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime import fit
from octavia_runtime.blobs import RemoteBlobs
from octavia_runtime.stages import StageContext, StageOutput, duration, permanent

from .engines import Engines, EngineUnavailable, Speech
from .voices import VoiceSpec, find_voice

R = stages_pb2
TRANSLATIONS_KEPT = 8
# Leading and trailing audio quieter than this (-50 dBFS) is the voice's own silence:
# trimmed, so a segment's time goes to speech; a little is kept so a word's onset stays whole.
_SILENCE = 10 ** (-50 / 20)
_EDGE_S = 0.02
# The pace guess is taken a little short (3 %, within RESPEAK_ABOVE), so that a segment is
# not sped up more than it needs: a rate a little too low is finished by the mix's stretch.
PACE_MARGIN = 0.97
# Speech needing a rate at most this much above the one it was spoken at is left to the
# stretch (a few percent sound the same either way; speaking again costs a synthesis).
RESPEAK_ABOVE = 1.05
PACE_WEIGHT = 0.3  # of each new measure in a voice's pace


class TtsStage:
    def __init__(self, engines: Engines, blobs: RemoteBlobs):
        self.engines = engines
        self.blobs = blobs
        self._translations: OrderedDict[str, transcribe_pb2.Transcript] = OrderedDict()
        self._pace: dict[str, float] = {}  # voice name: seconds per character at the normal rate

    async def __call__(self, ctx: StageContext) -> StageOutput:
        params = ctx.task.tts
        voice = find_voice(params.voice.removeprefix("voices/"))
        if voice is None:
            raise permanent("VOICE_UNAVAILABLE", f"the voice {params.voice!r} is not installed on this worker")
        translation = await self._translation(ctx.input(R.ARTIFACT_ROLE_TRANSLATION))
        index = ctx.task.segment_index
        if not ctx.task.HasField("segment_index") or not 0 <= index < len(translation.segments):
            raise permanent("BAD_TASK", f"segment {index} is not in the translation's {len(translation.segments)}")
        segment = translation.segments[index]
        text = segment.text.strip()
        engine = self.engines.for_voice(voice)
        speech = Speech(np.zeros(0, dtype=np.float32), engine.sample_rate)
        rate = 1.0
        slot = _slot(translation, index)
        if text:
            cap = params.max_speaking_rate or 1.0
            try:
                speech, rate = await asyncio.to_thread(self._speak, text, voice, slot, cap)
            except EngineUnavailable as exc:
                raise permanent("VOICE_UNAVAILABLE", str(exc)) from None
        output = ctx.output(R.ARTIFACT_ROLE_SPEECH_SEGMENT)
        written = R.SynthesizedSpeech(
            segment_index=index,
            wav=speech.wav() if text else b"",
            sample_rate_hertz=speech.sample_rate,
            duration=duration(speech.duration_s),
            speaking_rate=rate,
            voice=params.voice,
            text=text,
        )
        with tempfile.TemporaryDirectory(prefix="octavia-tts-") as tmp:
            path = Path(tmp) / "speech.pb"
            path.write_bytes(written.SerializeToString())
            stored = await self.blobs.store(output, path)
        stored.duration.CopyFrom(written.duration)
        return StageOutput(
            [stored],
            R.TtsResult(
                audio_duration=written.duration,
                speaking_rate=rate,
                fits=speech.duration_s <= slot,
                sample_rate_hertz=speech.sample_rate,
            ),
        )

    def _speak(self, text: str, voice: VoiceSpec, slot: float, cap: float) -> tuple[Speech, float]:
        """The segment's speech and the rate it was spoken at: faster only when it must be, and can."""
        engine = self.engines.for_voice(voice)
        limits = fit.FitLimits(max_factor=max(1.0, cap), hard_cap=max(cap, fit.FitLimits.hard_cap))

        def rate_for(normal_s: float) -> float:
            return fit.engine_speed_for(normal_s, slot, max_engine_speed=engine.max_speed, limits=limits)

        pace = self._pace.get(voice.name)
        rate = rate_for(pace * len(text) * PACE_MARGIN) if pace else 1.0
        speech = _trimmed(engine.synthesize(text, voice, rate))
        normal_s = speech.duration_s * rate  # about what it lasts at the normal rate
        previous = self._pace.get(voice.name)
        measured = normal_s / len(text)
        self._pace[voice.name] = measured if previous is None else previous + PACE_WEIGHT * (measured - previous)
        wanted = rate_for(normal_s)
        if wanted > rate * RESPEAK_ABOVE:
            speech, rate = _trimmed(engine.synthesize(text, voice, wanted)), wanted
        return speech, rate

    async def _translation(self, ref: stages_pb2.ArtifactRef) -> transcribe_pb2.Transcript:
        """The translation `ref` names, from the few this worker read last or from storage."""
        if ref.key in self._translations:
            self._translations.move_to_end(ref.key)
            return self._translations[ref.key]
        with tempfile.TemporaryDirectory(prefix="octavia-tts-") as tmp:
            path = await self.blobs.fetch(ref, Path(tmp) / "translation.pb")
            translation = transcribe_pb2.Transcript.FromString(path.read_bytes())
        self._translations[ref.key] = translation
        while len(self._translations) > TRANSLATIONS_KEPT:
            self._translations.popitem(last=False)
        return translation


def _slot(translation: transcribe_pb2.Transcript, index: int) -> float:
    """Seconds segment `index` may fill at its place (octavia_runtime.fit.slots): up to the next
    segment's start, the last one up to the end of the audio."""
    window = [(_seconds(s.start_offset), _seconds(s.end_offset)) for s in translation.segments[index : index + 2]]
    return fit.slots(window, _seconds(translation.duration))[0]


def _seconds(duration) -> float:
    return duration.ToTimedelta().total_seconds()


def _trimmed(speech: Speech) -> Speech:
    """`speech` without the silence an engine leaves before and after the words."""
    loud = np.flatnonzero(np.abs(speech.samples) > _SILENCE)
    if loud.size == 0:
        return speech
    edge = round(_EDGE_S * speech.sample_rate)
    start, end = max(0, loud[0] - edge), min(len(speech.samples), loud[-1] + 1 + edge)
    return Speech(speech.samples[start:end], speech.sample_rate)
