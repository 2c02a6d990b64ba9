#!/usr/bin/env python3
"""Generate a small synthetic speech corpus in the exact LibriSpeech on-disk layout.

Sentences come from a seeded, limited-vocabulary grammar (about 150 words) and are spoken by
several synthetic "speakers": an espeak-ng voice (optionally festival) with its own variant,
speaking rate and pitch. The output mirrors openslr 12::

    <out_dir>/<set>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac    (16 kHz mono FLAC)
    <out_dir>/<set>/<spk>/<chapter>/<spk>-<chapter>.trans.txt     ("<uttid> UPPER CASE TEXT")

so that ``local/data_prep_librispeech.sh`` runs on it unchanged. Sets: ``train-clean``,
``dev-clean`` and ``test-clean`` share the training voices (new sentences), ``test-heldout`` is
spoken by voices that never occur in training.

Each set is written under ``<set>.tmp`` and renamed when complete, so an interrupted run never
leaves a half-written set behind, and a rerun skips the sets that exist.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__" and not os.environ.get("VIRTUAL_ENV"):
    # called from a plain shell: run again under the repository's virtual environment, the one
    # the recipes' path.sh activates (its packages are not in the system Python)
    _venv = Path(__file__).resolve().parents[1] / ".venv"
    if (_venv / "bin" / "python").is_file() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])

from tqdm import tqdm  # noqa: E402

logger = logging.getLogger("generate_librispeech_like")

# --- the grammar: about 150 words ---------------------------------------------------------
DETERMINERS = ["the", "a", "every", "some", "this", "that", "no", "one"]
ADJECTIVES = [
    "red", "green", "blue", "yellow", "black", "white", "small", "large", "old", "young",
    "quiet", "happy", "sad", "bright", "dark", "warm", "cold", "tall", "short", "clever",
    "gentle", "brave", "lazy", "quick", "heavy", "soft",
]
NOUNS = [
    "dog", "cat", "horse", "bird", "fish", "king", "queen", "child", "farmer", "doctor",
    "teacher", "sailor", "soldier", "river", "mountain", "forest", "garden", "house", "window",
    "table", "letter", "book", "ship", "road", "city", "village", "apple", "bread", "stone",
    "flower", "candle", "lamp", "door", "bridge", "castle", "wagon",
]
VERBS = [
    "sees", "finds", "takes", "holds", "likes", "paints", "carries", "follows", "watches",
    "remembers", "visits", "builds", "opens", "closes", "pushes", "pulls", "buys", "sells",
    "cleans", "brings",
]
INTRANSITIVE = ["sleeps", "sings", "waits", "runs", "falls", "smiles", "laughs", "listens", "walks", "stops"]
PREPOSITIONS = ["near", "behind", "under", "over", "beside", "inside", "across", "through"]
ADVERBS = ["today", "slowly", "again", "often", "never", "always", "quickly", "tonight", "there", "here"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
PLURALS = ["dogs", "cats", "birds", "ships", "letters", "apples", "stones", "flowers", "candles", "horses"]
CONJ = ["and", "but", "while", "because"]
NAMES = ["john", "mary", "peter", "anna", "thomas", "helen", "james", "alice"]
MISC = ["with", "from", "to", "of", "in", "on", "is", "was", "very", "not", "has", "had"]


def vocabulary() -> list[str]:
    """All words the grammar can produce (sorted, upper case)."""
    words = set(DETERMINERS + ADJECTIVES + NOUNS + VERBS + INTRANSITIVE + PREPOSITIONS + ADVERBS)
    words |= set(NUMBERS + PLURALS + CONJ + NAMES + MISC)
    return sorted(w.upper() for w in words)


def _noun_phrase(rng: random.Random) -> list[str]:
    r = rng.random()
    if r < 0.15:
        return [rng.choice(NAMES)]
    if r < 0.3:
        return [rng.choice(NUMBERS), rng.choice(ADJECTIVES), rng.choice(PLURALS)]
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return words


def _clause(rng: random.Random) -> list[str]:
    subject = _noun_phrase(rng)
    r = rng.random()
    if r < 0.45:
        words = subject + [rng.choice(VERBS)] + _noun_phrase(rng)
    elif r < 0.7:
        words = subject + [rng.choice(INTRANSITIVE), rng.choice(PREPOSITIONS)] + _noun_phrase(rng)
    elif r < 0.85:
        words = subject + [rng.choice(["is", "was"]), rng.choice(["very", "not"]), rng.choice(ADJECTIVES)]
    else:
        words = subject + [rng.choice(["has", "had"])] + _noun_phrase(rng) + [
            rng.choice(["with", "from", "of", "in", "on", "to"])] + _noun_phrase(rng)
    if rng.random() < 0.3:
        words.append(rng.choice(ADVERBS))
    return words


def sentence(rng: random.Random) -> str:
    """One sentence of the grammar, upper case (LibriSpeech transcript style)."""
    words = _clause(rng)
    if rng.random() < 0.2:
        words += [rng.choice(CONJ)] + _clause(rng)
    return " ".join(words).upper()


# --- speakers -------------------------------------------------------------------------------
ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]


@dataclass(frozen=True)
class Speaker:
    spk_id: int
    engine: str  # "espeak-ng" or "festival"
    voice: str
    variant: str
    rate: int  # espeak words per minute; festival: percent of normal duration
    pitch: int  # espeak 0-99; unused by festival

    def describe(self) -> str:
        v = f"{self.voice}+{self.variant}" if self.variant else self.voice
        return f"{self.spk_id} {self.engine} {v} rate={self.rate} pitch={self.pitch}"


def make_speakers(rng: random.Random, n_train: int, n_heldout: int, engines: list[str]) -> tuple[list[Speaker], list[Speaker]]:
    """Training speakers and held-out speakers; held-out (voice, variant) pairs are never trained on.

    Held-out speakers take voices (accents) and variants reserved for them, so both the accent and
    the voice quality are new at test time.
    """
    heldout_voices, train_voices = ESPEAK_VOICES[-2:], ESPEAK_VOICES[:-2]
    heldout_variants, train_variants = ESPEAK_VARIANTS[5:7] + ESPEAK_VARIANTS[10:], (
        ESPEAK_VARIANTS[:5] + ESPEAK_VARIANTS[7:10])
    pool = [(v, var) for v in train_voices for var in train_variants]
    rng.shuffle(pool)
    train: list[Speaker] = []
    fest = [f for f in FESTIVAL_VOICES] if "festival" in engines else []
    for i in range(n_train):
        spk_id = 100 + 11 * i
        if fest and i % 4 == 3:
            train.append(Speaker(spk_id, "festival", fest.pop(0), "", rng.randint(85, 115), 0))
            continue
        voice, variant = pool[i % len(pool)]
        train.append(Speaker(spk_id, "espeak-ng", voice, variant, rng.randint(135, 185), rng.randint(25, 75)))
    heldout_pool = [(v, var) for v in heldout_voices for var in heldout_variants]
    rng.shuffle(heldout_pool)
    heldout = []
    for i in range(n_heldout):
        voice, variant = heldout_pool[i % len(heldout_pool)]
        heldout.append(Speaker(900 + 7 * i, "espeak-ng", voice, variant, rng.randint(140, 180), rng.randint(30, 70)))
    return train, heldout


def synthesize(spk: Speaker, text: str, out: Path) -> None:
    """Speak ``text`` with ``spk`` into a 16 kHz mono 16-bit FLAC ``out`` (written via a temp name)."""
    tmp = out.with_name(out.name + ".tmp.flac")
    spoken = text.lower()
    if spk.engine == "espeak-ng":
        synth = subprocess.run(
            ["espeak-ng", "-v", f"{spk.voice}+{spk.variant}", "-s", str(spk.rate), "-p", str(spk.pitch),
             "--stdout", spoken], check=True, capture_output=True)
        wav = synth.stdout
    else:
        scheme = (f"(begin (voice_{spk.voice}) (Parameter.set 'Duration_Stretch {spk.rate / 100:.2f}) "
                  f"(utt.save.wave (utt.synth (Utterance Text \"{spoken}\")) \"-\" 'riff))")
        synth = subprocess.run(["festival", "--batch", scheme], check=True, capture_output=True)
        wav = synth.stdout
    # -R: sox seeds its dither with a fixed number (without it every run's audio differs in the
    # last bits, and so do the features, the codebooks and every figure made from them)
    subprocess.run(["sox", "-R", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16", str(tmp)],
                   input=wav, check=True, capture_output=True)
    os.replace(tmp, out)


def write_set(out_dir: Path, name: str, speakers: list[Speaker], num_utts: int, rng: random.Random, nj: int,
              set_index: int = 0) -> None:
    """Write one LibriSpeech-layout set with ``num_utts`` utterances spread over ``speakers``.

    Each speaker reads two chapters per set; chapter ids differ between sets, as in LibriSpeech.
    """
    final = out_dir / name
    if final.is_dir():
        logger.info("%s exists, skipping", final)
        return
    tmp = out_dir / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    jobs: list[tuple[Speaker, str, Path]] = []
    trans: dict[Path, list[str]] = {}
    chapters_per_speaker = 2
    for u in range(num_utts):
        spk = speakers[u % len(speakers)]
        chapter = spk.spk_id * 100 + set_index * 10 + (u // len(speakers)) % chapters_per_speaker
        chap_dir = tmp / str(spk.spk_id) / str(chapter)
        utt_id = f"{spk.spk_id}-{chapter}-{u // (len(speakers) * chapters_per_speaker):04d}"
        text = sentence(rng)
        jobs.append((spk, text, chap_dir / f"{utt_id}.flac"))
        trans.setdefault(chap_dir / f"{spk.spk_id}-{chapter}.trans.txt", []).append(f"{utt_id} {text}")
    for path, lines in trans.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in sorted(lines)))
    with ThreadPoolExecutor(max_workers=nj) as pool:
        futures = [pool.submit(synthesize, spk, text, path) for spk, text, path in jobs]
        for f in tqdm(futures, desc=name, unit="utt", mininterval=5):
            f.result()
    (tmp / "SPEAKERS.TXT").write_text("".join(s.describe() + "\n" for s in speakers))
    os.replace(tmp, final)
    logger.info("wrote %s: %d utterances, %d speakers", final, num_utts, len(speakers))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", "--out-dir", required=True, type=Path, help="the LibriSpeech root to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_train", "--num-train", type=int, default=1500, help="training utterances")
    p.add_argument("--num_dev", "--num-dev", type=int, default=100)
    p.add_argument("--num_test", "--num-test", type=int, default=150, help="test utterances, training voices")
    p.add_argument("--num_heldout", "--num-heldout", type=int, default=150, help="test utterances, held-out voices")
    p.add_argument("--num_train_speakers", "--num-train-speakers", type=int, default=12)
    p.add_argument("--num_heldout_speakers", "--num-heldout-speakers", type=int, default=3)
    p.add_argument("--engines", default="espeak-ng", help="comma list: espeak-ng[,festival]")
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")

    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in ("espeak-ng", "festival"):
            p.error(f"unknown engine {e!r} (espeak-ng, festival)")
        if shutil.which(e) is None:
            logger.error("%s is not installed (Debian: apt-get install %s)", e, e)
            return 1
    if shutil.which("sox") is None:
        logger.error("sox is not installed (Debian: apt-get install sox)")
        return 1
    rng = random.Random(args.seed)
    train_spk, heldout_spk = make_speakers(rng, args.num_train_speakers, args.num_heldout_speakers, engines)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # One text generator per set, so that changing one set's size leaves the others unchanged.
    for name, spks, n, offset in [("train-clean", train_spk, args.num_train, 1),
                                  ("dev-clean", train_spk, args.num_dev, 2),
                                  ("test-clean", train_spk, args.num_test, 3),
                                  ("test-heldout", heldout_spk, args.num_heldout, 4)]:
        if n > 0:
            write_set(args.out_dir, name, spks, n, random.Random(args.seed * 1000 + offset), args.nj, offset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
