"""The synthetic talking-face corpus: eSpeak NG speech with ground-truth speakers, ages and emotions,
rendered faces whose mouths follow it, and the checks that decoding and preprocessing keep its truth.

    from imagineid.synth import SynthConfig, synthesize_corpus
    synthesize_corpus("work/s", SynthConfig(speakers=6, clips_per_speaker=4))

`speech` (voices, the eSpeak NG binding), `visemes` (phonemes → mouth), `face` (rendering), `sentences`,
`corpus` (plans and writes clips + metadata.parquet), `check` (ground truth vs decoded / preprocessed).
"""

from imagineid.synth.corpus import SynthConfig, synthesize_corpus

__all__ = ["SynthConfig", "synthesize_corpus"]
