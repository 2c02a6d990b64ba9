#!/usr/bin/env python3
"""Write a small synthetic multilingual corpus in the exact ML-SUPERB on-disk layout.

Speech comes from espeak-ng voices (several variants, speeds and pitches per source as
speakers), 16 kHz mono 16-bit WAV; transcripts are in each language's own script (Latin,
Cyrillic, Greek, Devanagari, Japanese kana, Vietnamese diacritics), drawn from a small
per-language vocabulary so a small model can learn them. Raw transcripts carry what real ones
carry and data preparation must remove: sentence case, punctuation of each script and bracketed
event tags (``[noise]``, not spoken). Vietnamese (``vie``) is one of ML-SUPERB's reserved
few-shot languages, so the real few-shot rule applies to it::

    <out>/<source>/<lang>/wav/<source>_<lang>_000001.wav
    <out>/<source>/<lang>/transcript_1h_train.txt      uttid <seconds> raw text
    <out>/<source>/<lang>/transcript_10min_train.txt   (the first --n_10min of the 1h list)
    <out>/<source>/<lang>/transcript_10min_{dev,test}.txt

Everything comes from ``--seed``; a finished tree (``<out>/.done`` with the same settings) is
left as it is. Sizes are per source and language.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __name__ == "__main__" and not os.environ.get("VIRTUAL_ENV"):
    # called from a plain shell: run again under the repository's virtual environment, the one
    # the recipes' path.sh activates (its packages are not in the system Python)
    _venv = Path(__file__).resolve().parents[1] / ".venv"
    if (_venv / "bin" / "python").is_file() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])

import soundfile as sf  # noqa: E402
from tqdm import tqdm  # noqa: E402

logger = logging.getLogger("generate_ml_superb_like")

# lang (ISO 639-3, as ML-SUPERB names folders) -> espeak-ng voice, word separator, vocabulary,
# sentence-final marks (question mark opening/closing pairs where the script has them).
LANGS: dict[str, dict] = {
    "eng": {"voice": "en-us", "sep": " ", "end": [".", "?", "!"],
            "words": "cat dog house tree water red blue big small sees eats book"},
    "deu": {"voice": "de", "sep": " ", "end": [".", "?", "!"],
            "words": "hund katze haus baum wasser rot blau groß klein sieht grün straße"},
    "fra": {"voice": "fr-fr", "sep": " ", "end": [".", "?", "!"],
            "words": "chat chien maison arbre eau rouge bleu grand petit voit mange été"},
    "spa": {"voice": "es", "sep": " ", "end": [".", "¿?", "¡!"],
            "words": "gato perro casa árbol agua rojo azul grande pequeño come niño mañana"},
    "rus": {"voice": "ru", "sep": " ", "end": [".", "?", "!"],
            "words": "кот собака дом дерево вода красный синий большой маленький видит ест книга"},
    "ell": {"voice": "el", "sep": " ", "end": [".", ";", "!"],
            "words": "γάτα σκύλος σπίτι δέντρο νερό κόκκινο μπλε μεγάλο μικρό βλέπει τρώει ήλιος"},
    "hin": {"voice": "hi", "sep": " ", "end": ["।", "?", "!"],
            "words": "बिल्ली कुत्ता घर पेड़ पानी लाल नीला बड़ा छोटा देखता खाता किताब"},
    "jpn": {"voice": "ja", "sep": "", "end": ["。", "？", "！"],
            "words": "ねこ いぬ いえ やま みず あかい あおい おおきい ちいさい みる たべる ほん"},
    "vie": {"voice": "vi", "sep": " ", "end": [".", "?", "!"],
            "words": "mèo chó nhà cây nước đỏ xanh lớn nhỏ thấy ăn sách"},
}
COMMA = {"jpn": "、", "ell": ",", "hin": ","}
TAGS = ["[noise]", "[laughter]", "[breath]", "[unk]"]
# Each source has its own pool of speakers: espeak-ng variant, speed (words/min), pitch (0-99).
SOURCES: dict[str, list[tuple[str, int, int]]] = {
    "espeak_read": [("m1", 150, 40), ("f2", 160, 60), ("m3", 140, 35)],
    "espeak_news": [("f1", 170, 55), ("m2", 175, 45), ("f4", 165, 70)],
    "espeak_talk": [("m4", 130, 30), ("f3", 145, 65), ("m7", 155, 50)],
}


def languages_of(source_index: int, n: int, langs: list[str], per_lang: int) -> list[str]:
    """Languages of source ``source_index`` of ``n``: language i is in ``per_lang`` sources,
    i, i+1, ... (mod n)."""
    return [lang for i, lang in enumerate(langs) if (source_index - i) % n < per_lang]


def make_sentence(lang: str, rng: random.Random, tags: bool) -> tuple[str, str]:
    """(spoken text, raw transcript) of 3-5 vocabulary words."""
    spec = LANGS[lang]
    words = rng.choices(spec["words"].split(), k=rng.randint(3, 5))
    spoken = spec["sep"].join(words)
    shown = list(words)
    if len(shown) > 3 and rng.random() < 0.4:
        shown[1] += COMMA.get(lang, ",")
    end = rng.choice(spec["end"])
    raw = spec["sep"].join(shown)
    raw = raw[:1].upper() + raw[1:]
    raw = end[0] + raw + end[1] if len(end) == 2 else raw + end
    if tags and rng.random() < 0.25:
        tag = rng.choice(TAGS)
        raw = f"{tag} {raw}" if rng.random() < 0.5 else f"{raw} {tag}"
    return spoken, raw


def synthesize(job: tuple[str, str, str, int, int]) -> float:
    """espeak-ng -> 16 kHz mono 16-bit WAV at ``path``; returns its duration in seconds."""
    text, voice, path, speed, pitch = job
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                        "-w", raw, text], check=True, capture_output=True)  # fmt: skip
        # -R: a fixed seed for sox's dither, so a corpus comes out the same on every run
        subprocess.run(["sox", "-q", "-R", raw, "-r", "16000", "-c", "1", "-b", "16", path + ".tmp.wav"],
                       check=True, capture_output=True)  # fmt: skip
    os.replace(path + ".tmp.wav", path)
    return sf.info(path).duration


def generate(args: argparse.Namespace) -> None:
    out = Path(args.out_dir)
    langs = args.langs.split()
    unknown = [lang for lang in langs if lang not in LANGS]
    if unknown:
        raise SystemExit(f"error: unknown language(s) {unknown}; known: {' '.join(LANGS)}")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"error: {tool} not found; install it (bash tools/install.sh as root, "
                             f"or apt-get install espeak-ng sox)")  # fmt: skip
    settings = {k: v for k, v in vars(args).items() if k not in ("out_dir", "nj")}
    done = out / ".done"
    if done.is_file() and json.loads(done.read_text()) == settings:
        logger.info("%s already generated with these settings", out)
        return
    if done.is_file():
        shutil.rmtree(out)  # made by an earlier run with other settings
    elif out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} exists and was not made by this generator; "
                         "choose another --out_dir")  # fmt: skip
    rng = random.Random(args.seed)
    jobs: list[tuple[str, str, str, int, int]] = []
    transcripts: dict[Path, list[tuple[str, str]]] = {}
    sizes = {"train": args.n_1h, "dev": args.n_dev, "test": args.n_test}
    for s_index, (source, speakers) in enumerate(SOURCES.items()):
        if s_index >= args.sources:
            break
        for lang in languages_of(s_index, args.sources, langs, args.sources_per_lang):
            lang_dir = out / source / lang
            (lang_dir / "wav").mkdir(parents=True, exist_ok=True)
            n = 0
            for split, size in sizes.items():
                rows = []
                for _ in range(size):
                    n += 1
                    uttid = f"{source}_{lang}_{n:06d}"
                    spoken, raw = make_sentence(lang, rng, tags=True)
                    variant, speed, pitch = rng.choice(speakers)
                    speed += rng.randint(-10, 10)
                    wav = str(lang_dir / "wav" / f"{uttid}.wav")
                    jobs.append((spoken, f"{LANGS[lang]['voice']}+{variant}", wav, speed, pitch))
                    rows.append((uttid, raw))
                transcripts[lang_dir / f"transcript_{split}"] = rows
    logger.info("synthesizing %d utterances with %d jobs", len(jobs), args.nj)
    with ThreadPoolExecutor(args.nj) as pool:
        seconds = list(tqdm(pool.map(synthesize, jobs), total=len(jobs), desc="espeak-ng"))
    duration = {job[2]: sec for job, sec in zip(jobs, seconds, strict=True)}
    for stem, rows in transcripts.items():
        lang_dir, split = stem.parent, stem.name.rsplit("_", 1)[1]

        def lines(rows: list[tuple[str, str]], lang_dir: Path = lang_dir) -> str:
            return "".join(f"{u} {duration[str(lang_dir / 'wav' / (u + '.wav'))]:.2f} {t}\n"
                           for u, t in rows)  # fmt: skip

        if split == "train":
            (lang_dir / "transcript_1h_train.txt").write_text(lines(rows), encoding="utf-8")
            (lang_dir / "transcript_10min_train.txt").write_text(
                lines(rows[: args.n_10min]), encoding="utf-8"
            )
        else:
            (lang_dir / f"transcript_10min_{split}.txt").write_text(lines(rows), encoding="utf-8")
    done.write_text(json.dumps(settings))
    logger.info("wrote %s: %.1f minutes of speech", out, sum(seconds) / 60)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--out_dir", "--out-dir", required=True)
    p.add_argument("--langs", default=" ".join(LANGS), help="space-separated ISO 639-3 codes")
    p.add_argument("--sources", type=int, default=3, help=f"number of sources (at most {len(SOURCES)})")
    p.add_argument("--sources_per_lang", "--sources-per-lang", type=int, default=2)
    p.add_argument("--n_1h", "--n-1h", type=int, default=60, help="1h training utterances per source and language")
    p.add_argument("--n_10min", "--n-10min", type=int, default=20, help="10min training utterances (a prefix of the 1h list)")
    p.add_argument("--n_dev", "--n-dev", type=int, default=6)
    p.add_argument("--n_test", "--n-test", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=2, help="parallel espeak-ng processes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if not 1 <= args.sources <= len(SOURCES) or not 1 <= args.sources_per_lang <= args.sources:
        print(f"error: need 1 <= --sources_per_lang <= --sources <= {len(SOURCES)}", file=sys.stderr)
        return 2
    if args.n_10min > args.n_1h:
        print("error: --n_10min must not exceed --n_1h", file=sys.stderr)
        return 2
    generate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
