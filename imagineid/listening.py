"""What the trained disentangler hears in an audio file (`imagineid listen`, docs/architecture.md §6).

Per audio: gender, age-group and emotion probabilities, what the voice front end measured (F0, voiced
fraction, formants, the seconds used); with a dataset, the K clips whose identity embedding is nearest.
Unusable audio gives an entry with an `error`, never a crash.

    listener = Listener.load(RUN)
    heard = listener.hear(listener.prepare(samples))   # 16 kHz mono float samples
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imagineid.audio.features import check_audio, log_mel, mel_envelope
from imagineid.data.clips import MelStats, iter_clips
from imagineid.data.labels import AGE_GROUPS, EMOTIONS, GENDERS
from imagineid.errors import ImagineIDError
from imagineid.media import load_audio
from imagineid.precision import pick_device
from imagineid.runs.folder import RunDir

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma", ".mp4", ".mov", ".mkv", ".webm")


def discover_audio(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given (any suffix, so bad ones are reported) plus audio/video files found in folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            found.append(path)
    return found


@dataclass
class Utterance:
    """One audio as every stage reads it: raw log-mel, and the voice front end's vector where the run
    was trained with one (the measurements are kept to report them)."""

    mel: np.ndarray  # (4T, 80) raw log-mel, cut to whole video frames
    voice: np.ndarray | None  # (VOICE_DIM,) or None for runs trained without the voice front end
    measured: dict | None  # VoiceStats.to_dict() of the audio


@dataclass
class Listener:
    """The three trained stages plus the mel statistics they were trained with."""

    identity: torch.nn.Module
    content: torch.nn.Module | None
    emotion: torch.nn.Module | None
    stats: MelStats
    device: torch.device

    @classmethod
    def load(cls, run: str | Path) -> Listener:
        from imagineid.models import (
            ContentEncoderDecoder,
            EmotionEncoderDecoder,
            IdentityEncoder,
        )

        rd = RunDir(Path(run))
        if not rd.is_done("identity"):
            raise ImagineIDError(f"{run} has no trained identity stage; run `imagineid train DATA --out {run}` first")
        device = pick_device()
        content = (
            ContentEncoderDecoder.from_pretrained(rd.stage("content"), use_safetensors=True).to(device).eval()
            if rd.is_done("content")
            else None
        )
        emotion = (
            EmotionEncoderDecoder.from_pretrained(rd.stage("emotion"), use_safetensors=True).to(device).eval()
            if rd.is_done("emotion")
            else None
        )
        return cls(
            identity=IdentityEncoder.from_pretrained(rd.stage("identity"), use_safetensors=True).to(device).eval(),
            content=content,
            emotion=emotion if content is not None else None,
            stats=MelStats.load(rd.mel_stats_file),
            device=device,
        )

    def mel(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.stats.normalize(raw)).float()[None].to(self.device)  # (1, 4T, 80)

    def envelope(self, raw: np.ndarray) -> torch.Tensor:
        """The content stage's amplitude envelope of a raw log-mel: (1, 4T, 2)."""
        return torch.from_numpy(mel_envelope(raw))[None].to(self.device)

    def emotion_mel(self, raw: np.ndarray) -> torch.Tensor:
        """The emotion stage's input: the normalised mel with the utterance's level added back."""
        return self.mel(raw) + torch.from_numpy(self.stats.level(raw))[None, None].to(self.device)  # (1, 4T, 80)

    @property
    def uses_voice(self) -> bool:
        """True when the identity stage was trained with the voice front end."""
        return bool(getattr(self.identity.config, "n_voice", 0))

    def prepare(self, samples: np.ndarray, mel: np.ndarray | None = None) -> Utterance:
        """16 kHz mono samples (and their raw log-mel, if already computed) → an `Utterance`."""
        from imagineid.audio.voice_features import voice_features
        from imagineid.audio.voice_stats import voice_stats

        mel = log_mel(samples) if mel is None else mel
        mel = mel[: 4 * max(1, len(mel) // 4)]
        voice, stats = voice_features(samples) if self.uses_voice else (None, voice_stats(samples))
        return Utterance(mel=mel, voice=voice, measured=stats.to_dict())

    def voice(self, utterance: Utterance) -> torch.Tensor | None:
        return None if utterance.voice is None else torch.from_numpy(utterance.voice)[None].to(self.device)

    def identify(self, utterance: Utterance):
        """The identity stage's output (IdentityOutput, batch of one) for an utterance."""
        return self.identity(self.mel(utterance.mel), voice=self.voice(utterance))

    @torch.no_grad()
    def heard_features(self, utterance: Utterance) -> tuple[np.ndarray, np.ndarray]:
        """What the frame generator is told about a voice: (identity (n_shape + 5,) = predicted shape,
        gender and age probabilities; emotion (4,) = emotion probabilities). The adapters are trained
        on these vectors of each training clip's own audio, so training and generation see one kind."""
        if self.emotion is None:
            raise ImagineIDError("heard features need the identity, content and emotion stages trained")
        mel = self.mel(utterance.mel)
        ident = self.identity(mel, voice=self.voice(utterance))
        content = self.content(mel, ident.shape, self.envelope(utterance.mel)).features
        out = self.emotion(
            self.emotion_mel(utterance.mel), ident.for_emotion(self.emotion.config.identity_dim), content
        )
        return identity_features(ident)[0].float().cpu().numpy(), out.emotion_logits.softmax(-1)[
            0
        ].float().cpu().numpy()

    @torch.no_grad()
    def hear(self, utterance: Utterance) -> dict:
        """Probabilities, the identity embedding and the heard features for one utterance."""
        mel = self.mel(utterance.mel)
        ident = self.identity(mel, voice=self.voice(utterance))
        result = {
            "gender": dict(zip(GENDERS, ident.gender_logits.softmax(-1)[0].tolist())),
            "age": dict(zip(AGE_GROUPS, ident.age_logits.softmax(-1)[0].tolist())),
            "emotion": None,
            "measured": utterance.measured,
            "embedding": ident.embedding[0].cpu().numpy(),
            "emotion_embedding": None,
        }
        if self.emotion is not None:
            content = self.content(mel, ident.shape, self.envelope(utterance.mel)).features
            out = self.emotion(
                self.emotion_mel(utterance.mel), ident.for_emotion(self.emotion.config.identity_dim), content
            )
            result["emotion"] = dict(zip(EMOTIONS, out.emotion_logits.softmax(-1)[0].tolist()))
            result["emotion_embedding"] = out.embedding[0].cpu().numpy()
        return result


def identity_features(ident) -> torch.Tensor:
    """The generator's identity input from an IdentityOutput: (B, n_shape + 5) shape, gender, age probabilities."""
    return torch.cat([ident.shape, ident.gender_logits.softmax(-1), ident.age_logits.softmax(-1)], dim=-1)


def heard_identity_dim(n_shape: int) -> int:
    """Width of `Listener.heard_features`' identity vector: shape, gender and age probabilities."""
    return n_shape + len(GENDERS) + len(AGE_GROUPS)


def dataset_embeddings(listener: Listener, data: Path) -> tuple[list[dict], np.ndarray, np.ndarray | None]:
    """Per dataset clip, streamed clip by clip: (rows with clip_id / speaker / labels, identity embeddings
    (N, E), emotion embeddings (N, E') or None without an emotion stage)."""
    from imagineid.data.clips import clip_audio
    from imagineid.data.store import Store

    ids = Store(data).read_table("clips", ["clip_id"])["clip_id"].to_pylist()
    rows, identity, emotion = [], [], []
    for sample in iter_clips(data, ids):
        rows.append(
            {
                "clip_id": sample.clip_id,
                "speaker_id": sample.speaker_id,
                "gender": GENDERS[sample.gender] if sample.gender >= 0 else None,
                "emotion": EMOTIONS[sample.emotion] if sample.emotion >= 0 else None,
            }
        )
        samples = clip_audio(Store(data), sample.clip_id)[0] if listener.uses_voice else None
        heard = listener.hear(
            listener.prepare(samples, sample.mel) if samples is not None else Utterance(sample.mel, None, None)
        )
        identity.append(heard["embedding"])
        emotion.append(heard["emotion_embedding"])
    has_emotion = bool(emotion) and emotion[0] is not None
    return (rows, np.stack(identity) if identity else np.zeros((0, 1)), np.stack(emotion) if has_emotion else None)


def listen(
    run: str | Path, audio: Sequence[str | Path], retrieve: str | Path | None = None, top_k: int = 5
) -> Iterator[dict]:
    """One result dict per audio file (keys: audio, gender, age, emotion, measured, retrieved, error)."""
    listener = Listener.load(run)
    index = dataset_embeddings(listener, Path(retrieve))[:2] if retrieve else None
    for path in discover_audio(audio):
        entry = {
            "audio": str(path),
            "gender": None,
            "age": None,
            "emotion": None,
            "measured": None,
            "retrieved": None,
            "error": None,
        }
        try:
            samples = load_audio(path)
            check_audio(samples, 16000)
            heard = listener.hear(listener.prepare(samples))
        except ImagineIDError as err:
            entry["error"] = str(err)
            yield entry
            continue
        entry.update({k: heard[k] for k in ("gender", "age", "emotion", "measured")})
        if index is not None:
            rows, embeddings = index
            sims = embeddings @ heard["embedding"]
            entry["retrieved"] = [{**rows[i], "similarity": float(sims[i])} for i in np.argsort(-sims)[:top_k]]
        yield entry
