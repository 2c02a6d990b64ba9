"""local/data_prep_asterisk.py and egs/asterisk/local/data.sh: text normalisation, the split,
the accounting of everything left out, on a synthetic tree (G.722 written here) and, where the
Debian packages are installed (tools/install.sh), on the real recordings."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import G722  # the g722 wheel, pinned in tools/requirements.txt
import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
PREP = REPO / "local" / "data_prep_asterisk.py"
VALIDATE = REPO / "egs" / "TEMPLATE" / "utils" / "validate_data_dir.sh"
RECIPE = REPO / "egs" / "asterisk"
SOUNDS = Path("/usr/share/asterisk/sounds")
DOCS = Path("/usr/share/doc")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
TABLES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang")

_spec = importlib.util.spec_from_file_location("data_prep_asterisk", PREP)
prep = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = prep
_spec.loader.exec_module(prep)

needs_debian = pytest.mark.skipif(
    not (SOUNDS / "en_US_f_Allison").is_dir()
    or not (DOCS / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz").is_file()
    or not (POCKETSPHINX / "librivox" / "transcription").is_file(),
    reason="Debian packages asterisk-core-sounds-en-g722, asterisk-core-sounds-en and "
    "pocketsphinx-testdata not installed (bash tools/install.sh as root installs them)",
)


def table(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) if " " in line else (line, "") for line in lines)


def validate(d: Path) -> None:
    r = subprocess.run(["bash", str(VALIDATE), str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def encode(samples: np.ndarray) -> bytes:
    return G722.G722(16000, 64000).encode(samples.astype(np.int16))


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("press 1", "PRESS ONE"),
        ("Press 5 to leave a message.", "PRESS FIVE TO LEAVE A MESSAGE"),
        ("press * to toggle pause, press # to enter", "PRESS STAR TO TOGGLE PAUSE PRESS POUND TO ENTER"),
        ("at [@]", "AT"),
        ("IAX (note: does not say \"2\")", "IAX"),
        ("Please leave your message after the tone. (simple tone sound plays)",
         "PLEASE LEAVE YOUR MESSAGE AFTER THE TONE"),
        ("A.M.", "A M"),
        ("Call-Forward on No Answer.", "CALL FORWARD ON NO ANSWER"),
        ("I'm sorry, that's not a 'valid' extension", "I'M SORRY THAT'S NOT A VALID EXTENSION"),
        ("3D audio enabled", "THREE D AUDIO ENABLED"),
        ("the 3rd and 21st time", "THE THIRD AND TWENTY FIRST TIME"),
        ("a 28.8 kilobit modem", "A TWENTY EIGHT POINT EIGHT KILOBIT MODEM"),
        ("folder 45", "FOLDER FORTY FIVE"),
        ("Dial 4 to send this caller to a polite \"don't call\" menu.",
         "DIAL FOUR TO SEND THIS CALLER TO A POLITE DON'T CALL MENU"),
    ],
)  # fmt: skip
def test_normalize_en(raw, expected):
    assert prep.normalize_en(raw) == (expected, None)


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("[this is a simple beep tone]", "non_speech"),
        ("(1 second of silence)", "non_speech"),
        ("<beep ascending>", "non_speech"),
        ("...", "non_speech"),
        ("", "empty_text"),
        ("H.323", "ambiguous_number"),  # "H three two three"? "H three twenty-three"?
        ("extension 1234 and password 4242", "ambiguous_number"),
        ("press $5", "unspellable_symbol"),
        ("and/or", "unspellable_symbol"),
    ],
)  # fmt: skip
def test_normalize_en_left_out(raw, reason):
    assert prep.normalize_en(raw) == ("", reason)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Voce disattivata. (You are now muted.)", ("VOCE DISATTIVATA", None)),
        ("« Привет, мир! »", ("ПРИВЕТ МИР", None)),
        ("¿Está [ tono ] bien?", ("ESTÁ BIEN", None)),
        ("pour l'aide, appuyez sur 0.", ("", "digits")),
        ("отключить / включить", ("", "unspellable_symbol")),
        ("(beep)", ("", "non_speech")),
    ],
)  # fmt: skip
def test_normalize_other(raw, expected):
    assert prep.normalize_other(raw) == expected


def test_split_depends_on_the_text_alone():
    texts = [f"PROMPT NUMBER {i}" for i in range(4000)]
    first = [prep.split_of(t, 0.8, 0.08) for t in texts]
    assert first == [prep.split_of(t, 0.8, 0.08) for t in texts]  # no state between calls
    assert first[::-1] == [prep.split_of(t, 0.8, 0.08) for t in reversed(texts)]
    share = {s: first.count(s) / len(texts) for s in prep.SPLITS}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["dev"] - 0.08) < 0.02
    assert [
        prep.split_of(t, 0.8, 0.08, "x") for t in texts
    ] != first  # the salt gives another split


# --- a synthetic tree ----------------------------------------------------------------------

PROMPTS = [f"Please press {n}." for n in range(10)] + [
    "Thank you for calling.", "Goodbye!", "Your call is important to us.", "Press * for more.",
    "Enter your PIN followed by #.", "The party you are calling is not available.",
    "Please hold.", "Welcome to the directory.", "That is not a valid extension.",
    "Call waiting.", "Call forwarding.", "Transfer.", "Hello world.", "Time.",
]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> SimpleNamespace:
    """Asterisk-layout English and French voices and a pocketsphinx-layout held-out folder, with
    one of every kind of problem the preparation must count."""
    root = tmp_path_factory.mktemp("asterisk")
    rng = np.random.default_rng(0)
    en = root / "sounds" / "en_US_f_Allison"
    lines = ["; Core Asterisk Sounds in English", ""]
    clips: dict[str, int] = {}

    def clip(voice: Path, name: str, seconds: float = 0.3, level: float = 0.2) -> None:
        n = int(16000 * seconds)
        t = np.arange(n) / 16000
        x = level * 32767 * (0.6 * np.sin(2 * np.pi * 220 * t) + 0.4 * rng.standard_normal(n) / 3)
        data = encode(np.clip(x, -32768, 32767)) if n else b""
        (voice / name).parent.mkdir(parents=True, exist_ok=True)
        (voice / f"{name}.g722").write_bytes(data)
        clips[f"{voice.name}/{name}"] = len(data)

    for i, text in enumerate(PROMPTS):
        clip(en, f"p{i:02d}", 0.2 + 0.01 * i)
        lines.append(f"p{i:02d}: {text}")
    clip(en, "thanks-again")  # the same text as p10: must land in the same set
    lines.append("thanks-again: Thank you for calling!")
    clip(en, "digits/7")
    lines.append("digits/7: seven")
    clip(en, "beep")
    lines.append("beep: [this is a simple beep tone]")
    clip(en, "silence/1", level=0.0)
    lines.append("silence/1: (1 second of silence)")
    clip(en, "quiet", level=0.001)
    lines.append("quiet: This clip holds no speech.")
    clip(en, "empty", seconds=0)
    lines.append("empty: This clip is an empty file.")
    clip(en, "orphan")  # no transcript line
    lines.append("ghost: A line without audio.")
    clip(en, "spy-h323")
    lines.append("spy-h323: H.323")
    clip(en, "dollar")
    lines.append("dollar: It costs $5.")
    clip(en, "twice")
    lines += ["twice: One text.", "twice: Another text."]
    clip(en, "Mixed")
    lines.append("mixed: A name in another case.")
    malformed_at = len(lines) + 1
    lines.append("a line without a colon")
    clip(en, "nothing")
    lines.append("nothing:")
    docs = root / "docs"
    (docs / "asterisk-core-sounds-en").mkdir(parents=True)
    with gzip.open(
        docs / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz", "wt", encoding="utf-8"
    ) as f:
        f.write("\n".join(lines) + "\n")

    fr = root / "sounds" / "fr_CA_f_June"
    fr_lines = ["\ufeff; Sons en français"]
    for i, text in enumerate(["Merci.", "Au revoir!", "Bonjour, le monde.", "Un moment, s'il vous plaît.",
                              "Veuillez patienter.", "Entrez votre code.", "Transfert.", "L'heure.",
                              "Appuyez sur étoile.", "Bienvenue."]):  # fmt: skip
        clip(fr, f"f{i}")
        fr_lines.append(f"f{i}: {text}")
    clip(fr, "f-digit")
    fr_lines.append("f-digit: appuyez sur 1")
    clip(fr, "conf-menu")
    fr_lines.append("conf-menu: conf-menu: Menu de la conférence.")
    (docs / "asterisk-core-sounds-fr").mkdir()
    with gzip.open(
        docs / "asterisk-core-sounds-fr" / "core-sounds-fr.txt.gz", "wt", encoding="utf-8"
    ) as f:
        f.write("\n".join(fr_lines) + "\n")

    held = root / "pocketsphinx"
    (held / "books").mkdir(parents=True)
    trans = []
    for i, text in enumerate(
        ["and mister john had leisure", "he was not an ill disposed man", "card 7"]
    ):
        sf.write(
            held / "books" / f"b{i}.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 8000
        )
        trans.append(f"<s> {text} </s> (b{i})")
    trans.append("<s> a line whose wav is missing </s> (b9)")
    (held / "books" / "transcription").write_text("\n".join(trans) + "\n")
    (held / "noise").mkdir()  # a folder without transcription: not a source
    return SimpleNamespace(root=root, sounds=root / "sounds", docs=docs, heldout=held, clips=clips,
                           malformed=f"core-sounds-en.txt.gz:{malformed_at}")  # fmt: skip


@pytest.fixture
def run_prep(tree, caplog, capsys):
    """The script's ``main`` in this process; returns code and everything logged or printed."""

    def run(out: Path, *args: str, corpus: Path | None = None) -> SimpleNamespace:
        caplog.clear()
        argv = ["--sounds_dir", str(tree.sounds), "--docs_dir", str(tree.docs),
                "--heldout_dir", str(tree.heldout), "--corpus_dir", str(corpus or out / "corpus"),
                "--datadir", str(out / "data"), "--train_ratio", "0.6", "--dev_ratio", "0.2", *args]  # fmt: skip
        with caplog.at_level(logging.INFO):
            rc = prep.main(argv)
        return SimpleNamespace(returncode=rc, stderr=caplog.text + capsys.readouterr().err)

    return run


def test_synthetic_tree_everything_counted(tree, tmp_path, run_prep):
    res = run_prep(tmp_path)
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    sets = (data / "local" / "asterisk_sets").read_text().split()
    assert sets == ["train_en", "dev_en", "test_en", "test_heldout_en"]
    for s in sets:
        validate(data / s)
        for name in TABLES:
            keys = list(table(data / s / name))
            assert keys == sorted(keys, key=str.encode), (s, name)
        assert all(u.startswith(f"{spk}-") for u, spk in table(data / s / "utt2spk").items())
        assert all(
            Path(p).is_absolute() and Path(p).is_file()
            for p in table(data / s / "wav.scp").values()
        )
    report = json.loads((data / "local" / "asterisk_en_report.json").read_text())
    assert report["excluded"] == {
        "no_audio": ["ghost"],
        "no_transcript": ["orphan"],
        "duplicate_name": ["twice"],
        "malformed_line": [tree.malformed],
        "empty_text": ["nothing"],
        "non_speech": ["beep", "silence/1"],
        "ambiguous_number": ["spy-h323"],
        "unspellable_symbol": ["dollar"],
        "unreadable_audio": ["empty"],
        "silent_audio": ["quiet"],
    }
    assert report["repaired"] == {"case_only_name_match": ["mixed -> Mixed"]}
    kept = {u for s in ("train_en", "dev_en", "test_en") for u in table(data / s / "text")}
    assert (
        len(kept) == len(PROMPTS) + 3 == sum(report["sets"][f"{s}_en"]["utts"] for s in prep.SPLITS)
    )
    # every audio clip is kept or named under exactly one reason (the others name lines)
    named = [prep.utt_id("en_allison", n) for r, names in report["excluded"].items()
             if r not in ("no_audio", "malformed_line") for n in names]  # fmt: skip
    audio = [
        prep.utt_id("en_allison", k.split("/", 1)[1])
        for k in tree.clips
        if k.startswith("en_US_f_Allison/")
    ]
    assert sorted([*kept, *named]) == sorted(audio)
    assert "no_audio 1" in res.stderr and "silent_audio 1" in res.stderr  # the logged summary
    # no prompt text in two sets; the same text twice stays in one set
    texts = {s: set(table(data / f"{s}_en" / "text").values()) for s in prep.SPLITS}
    assert (
        not texts["train"] & texts["dev"]
        and not texts["train"] & texts["test"]
        and not texts["dev"] & texts["test"]
    )
    where = {s for s in prep.SPLITS if "THANK YOU FOR CALLING" in texts[s]}
    assert len(where) == 1
    assert (
        sum(
            v == "THANK YOU FOR CALLING"
            for v in table(data / f"{where.pop()}_en" / "text").values()
        )
        == 2
    )
    alltext = {k: v for s in prep.SPLITS for k, v in table(data / f"{s}_en" / "text").items()}
    assert alltext["en_allison-p03"] == "PLEASE PRESS THREE"
    assert alltext["en_allison-p13"] == "PRESS STAR FOR MORE"
    assert alltext["en_allison-p14"] == "ENTER YOUR PIN FOLLOWED BY POUND"
    # decoded once, 16 kHz 16-bit, two samples per G.722 byte
    wavs = {k: v for s in prep.SPLITS for k, v in table(data / f"{s}_en" / "wav.scp").items()}
    wav = Path(wavs["en_allison-digits-7"])
    info = sf.info(wav)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == 2 * tree.clips["en_US_f_Allison/digits/7"]
    # held-out: 8 kHz clips resampled to 16 kHz under the corpus dir; markers and ids removed
    held = table(data / "test_heldout_en" / "text")
    assert held == {"en_books-b0": "AND MISTER JOHN HAD LEISURE", "en_books-b1": "HE WAS NOT AN ILL DISPOSED MAN",
                    "en_books-b2": "CARD SEVEN"}  # fmt: skip
    hwav = Path(table(data / "test_heldout_en" / "wav.scp")["en_books-b0"])
    assert hwav.is_relative_to(tmp_path / "corpus") and sf.info(hwav).samplerate == 16000
    assert sf.info(hwav).frames == 16000
    assert report["heldout"]["excluded"] == {"no_audio": ["books/b9"]}
    assert not list(tmp_path.rglob("*.tmp"))


def test_deterministic_and_decoded_once(tree, tmp_path, run_prep):
    corpus = tmp_path / "corpus"
    assert run_prep(tmp_path / "a", corpus=corpus).returncode == 0
    wavs = sorted(corpus.rglob("*.wav"))
    stamps = {p: p.stat().st_mtime_ns for p in wavs}
    assert run_prep(tmp_path / "b", corpus=corpus).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in sorted(corpus.rglob("*.wav"))} == stamps  # reused
    for s in ("train_en", "dev_en", "test_en", "test_heldout_en"):
        for name in TABLES:
            assert (tmp_path / "a" / "data" / s / name).read_bytes() == (
                tmp_path / "b" / "data" / s / name
            ).read_bytes()
    # a truncated earlier wav is decoded again
    victim = corpus / "en_US_f_Allison" / "p00.wav"
    victim.write_bytes(victim.read_bytes()[:100])
    assert run_prep(tmp_path / "c", corpus=corpus).returncode == 0
    assert sf.info(victim).frames == 2 * tree.clips["en_US_f_Allison/p00"]


def test_max_utts_and_multilingual(tree, tmp_path, run_prep):
    res = run_prep(
        tmp_path, "--langs", "en fr", "--max_utts", "2", "--multilingual", "true", "--lid", "true"
    )
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    sets = (data / "local" / "asterisk_sets").read_text().split()
    assert sets[-3:] == ["train_multi", "dev_multi", "test_multi"] and "train_fr" in sets
    for s in sets:
        validate(data / s)
        assert len(table(data / s / "text")) <= (2 if "multi" not in s else 4)
    en = json.loads((data / "local" / "asterisk_en_report.json").read_text())
    left = len(PROMPTS) + 3 - sum(en["sets"][f"{s}_en"]["utts"] for s in prep.SPLITS)
    assert len(en["excluded"]["over_max_utts"]) == left > 0
    assert en["heldout"]["excluded"]["over_max_utts"] == ["en_books-b2"]
    fr = json.loads((data / "local" / "asterisk_fr_report.json").read_text())
    assert fr["excluded"]["digits"] == ["f-digit"]
    assert fr["repaired"] == {"repeated_name_in_text": ["conf-menu"]}
    multi = table(data / "train_multi" / "text")
    assert {v.split()[0] for v in multi.values()} == {"[en]", "[fr]"}
    assert set(table(data / "train_multi" / "utt2lang").values()) == {"en", "fr"}
    assert (data / "nlsyms.txt").read_text().split() == ["[en]", "[fr]"]


def test_errors_are_one_line(tree, tmp_path, run_prep):
    res = run_prep(tmp_path, "--langs", "es")  # no Spanish voice in the tree
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {tree.sounds / 'es_MX_f_Allison'}: audio folder not found")
    )
    res = run_prep(tmp_path, "--langs", "de")
    assert res.returncode == 1 and "error: --langs: de" in res.stderr
    res = run_prep(tmp_path, "--train_ratio", "0.9", "--dev_ratio", "0.2")
    assert res.returncode == 1 and "need both above 0 and a sum below 1" in res.stderr


@pytest.mark.skipif(not (RECIPE / "utils").is_dir(), reason="egs/asterisk/utils link not made yet")
def test_recipe_data_sh(tree, tmp_path):
    cmd = ["bash", "local/data.sh", "--sounds_dir", str(tree.sounds), "--docs_dir", str(tree.docs),
           "--heldout_dir", "", "--corpus_dir", str(tmp_path / "corpus"), "--datadir", str(tmp_path / "data"),
           "--train_ratio", "0.6", "--dev_ratio", "0.2", "--max_utts", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("is valid") == 3  # train_en, dev_en, test_en validated; no held-out set
    assert not (tmp_path / "data" / "test_heldout_en").exists()
    r = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "already prepared" in r.stderr
    r = subprocess.run(
        ["bash", "local/data.sh", "--no_such_option", "1"],
        cwd=RECIPE,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2


# --- the installed Debian packages ---------------------------------------------------------


@needs_debian
def test_real_g722_clip_decodes():
    src = (
        SOUNDS / "en_US_f_Allison" / "agent-alreadyon.g722"
    )  # "That agent is already logged on..."
    data = src.read_bytes()
    x = prep.decode_g722(data).astype(np.float64)
    assert len(x) == 2 * len(data)  # 64 kbit/s G.722 at 16 kHz: 5.52 s
    assert abs(len(x) / 16000 - 5.516) < 0.01
    rms, peak = np.sqrt(np.mean(x**2)), np.abs(x).max()
    assert 1000 < rms < 12000 and peak < 32767  # speech level, no clipping
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    share = lambda lo, hi: power[(f >= lo) & (f < hi)].sum() / power.sum()  # noqa: E731
    assert share(80, 1000) > 0.5  # voiced speech carries most of the energy
    assert 1e-4 < share(4000, 7000) < 0.1  # real wideband content (fricatives), not noise


@needs_debian
def test_real_english_sets(tmp_path, caplog):
    out = tmp_path / "data"
    with caplog.at_level(logging.INFO):
        rc = prep.main(["--corpus_dir", str(tmp_path / "corpus"), "--datadir", str(out)])
    assert rc == 0, caplog.text
    report = json.loads((out / "local" / "asterisk_en_report.json").read_text())
    texts = {}
    for s in ("train_en", "dev_en", "test_en", "test_heldout_en"):
        validate(out / s)
        texts[s] = set(table(out / s / "text").values())
    for a in ("train_en", "dev_en", "test_en"):
        for b in ("train_en", "dev_en", "test_en"):
            assert a == b or not texts[a] & texts[b]
    # every clip of the voice is kept or named under one reason
    clip_reasons = {
        r: v for r, v in report["excluded"].items() if r not in ("no_audio", "malformed_line")
    }
    kept = sum(report["sets"][f"{s}_en"]["utts"] for s in prep.SPLITS)
    assert kept + sum(map(len, clip_reasons.values())) == report["audio_clips"]
    assert {"beep", "silence/1", "tt-monkeys"} <= set(report["excluded"]["non_speech"])
    assert (
        report["sets"]["train_en"]["utts"] > 0.7 * kept
        and report["sets"]["dev_en"]["utts"] > 0.04 * kept
    )
    assert report["sets"]["test_heldout_en"]["utts"] == 10
    held = table(out / "test_heldout_en" / "utt2spk")
    assert set(held.values()) == {"en_cards", "en_librivox"}
    assert table(out / "test_heldout_en" / "text")[
        "en_librivox-sense_and_sensibility_01_austen_64kb-0880"
    ] == ("HE WAS NOT AN ILL DISPOSED YOUNG MAN")
