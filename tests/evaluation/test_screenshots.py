"""Figures and the demo page as a reader sees them: nothing drawn is cut at a figure's edge, and
the page lays out on a 1280-px screen without sideways scrolling (tools/screenshots.py in headless
Chromium, on a tiny generated page)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "screenshots.py"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shots = _load(SCRIPT, "screenshots")
needs_chromium = pytest.mark.skipif(
    shots.chromium_path() is None, reason="needs Debian's chromium (tools/install.sh installs it)")


def assert_margin_blank(png: Path, px: int = 3) -> None:
    """Nothing is drawn in the outer ``px`` pixels of the figure: a label or tick that reached
    the edge of the canvas would be cut there."""
    from PIL import Image

    with Image.open(png) as im:
        a = np.asarray(im.convert("L"))
    h, w = a.shape
    assert w > 200 and h > 200, a.shape
    for name, edge in (("top", a[:px]), ("bottom", a[-px:]), ("left", a[:, :px]),
                       ("right", a[:, -px:])):
        assert edge.min() >= 250, f"{png.name}: something drawn at the {name} edge (cut off)"


def test_heatmap_keeps_its_labels_inside(tmp_path):
    from rpq_units.evaluation.analyze import dim_correlation, feature_axis, plot_heatmap

    x = np.random.default_rng(0).standard_normal((500, 384)).astype(np.float32)
    axis, source = feature_axis({"upstream": "whisper", "layer": 2, "num_layers": 5, "dim": 384})
    assert (axis, source) == ("dimension", "384 dimensions of whisper layer 2")
    plot_heatmap(dim_correlation(x), tmp_path / "h.png", f"Correlation between the {source}", axis)
    assert_margin_blank(tmp_path / "h.png")


def test_feature_axis_names_mel_bins(tmp_path):
    from rpq_units.evaluation.analyze import feature_axis

    conf = tmp_path / "mel.yaml"
    conf.write_text("input:\n  feat_type: mel\n  log: True\n")
    info = {"upstream": "baseline_local", "upstream_ckpt": str(conf), "layer": 0, "num_layers": 1,
            "dim": 80}
    assert feature_axis(info) == ("log-mel bin", "80 log-mel bins")
    assert feature_axis({"upstream": "fbank", "dim": 240})[0] == "filterbank bin"


def test_paper_claims_plots_keep_labels_and_legend_inside(tmp_path):
    claims = _load(ROOT / "bench" / "paper_claims" / "run.py", "paper_claims_run")
    rows = json.loads((ROOT / "bench" / "paper_claims" / "whisper_real" / "results.json")
                      .read_text())["rows"]
    claims.plots(rows, tmp_path)
    for name in ("error_vs_bits.png", "rho_vs_p.png"):
        assert_margin_blank(tmp_path / name)
    assert claims.panel_title("whisper_tiny_en_l2", 384) == "Whisper tiny.en, layer 2 (D = 384)"
    assert claims.panel_title("mini_librispeech", 80) == "mini LibriSpeech demo, log-mel (D = 80)"


def _tiny_page(root: Path) -> Path:
    """A demo page from a made-up two-system resynthesis of one utterance, with what made the
    page scroll sideways before: a long command block, a wide table, a heatmap."""
    from rpq_units.evaluation.analyze import dim_correlation, plot_heatmap
    from rpq_units.evaluation.demo_page import write_page

    rdir = root / "resynth"
    for s in ("original", "kmeans"):
        (rdir / "wav" / s).mkdir(parents=True)
        sf.write(rdir / "wav" / s / "u1.wav", np.zeros(8000, np.float32), 16000)
    summary = {"original": {"kbps": 256.0}, "kmeans": {"kbps": 0.45, "stoi": 0.5}}
    (rdir / "metrics.json").write_text(json.dumps({
        "data_dir": "data/test", "upstream": "baseline_local", "layer": 0, "num_layers": 1,
        "frame_rate": 25.0, "synthesis": "griffinlim", "systems": ["original", "kmeans"],
        "utterances": ["u1"], "text": {"u1": "A TEST"}, "summary": summary,
        "asr": {"skipped": "no model"}}))
    cmd = "./units_asr.sh " + " ".join(f"--option_{i} value_{i}" for i in range(200))
    cols = [f"lang{i:02d}" for i in range(40)]
    results = root / "RESULTS.md"
    results.write_text("\n".join([
        "# Results", "", "Made by:", "", "```sh", *[cmd] * 6, "```", "",
        "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols),
        "| rpq | " + " | ".join("12.5" for _ in cols) + " |", ""]))
    heat = root / "units_x" / "analysis" / "dim_correlation.png"
    heat.parent.mkdir(parents=True)
    plot_heatmap(dim_correlation(np.random.default_rng(0).standard_normal((200, 80))), heat, "t")
    write_page(resynth_dir=rdir, page_dir=root / "demo", num_utts=1, results_md=results,
               heatmaps=[heat])
    return root / "demo" / "index.html"


def _run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=180)


@needs_chromium
def test_demo_page_fits_a_1280_px_screen(tmp_path):
    page = _tiny_page(tmp_path)
    heat = tmp_path / "units_x" / "analysis" / "dim_correlation.png"
    r = _run_script("--out", tmp_path / "shots", "--names", "page,heatmap", page, heat)
    assert r.returncode == 0, r.stdout + r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    for rep in reports:
        assert rep["clientWidth"] == 1280 and rep["scrollWidth"] == 1280, rep
        assert not rep["scrolls_sideways"] and rep["overflow"] == [] and rep["broken_images"] == []
    from PIL import Image

    with Image.open(tmp_path / "shots" / "page.png") as im:
        assert im.size[0] == 1280 and im.size[1] > 800  # the whole page, not the window


@needs_chromium
def test_screenshot_script_names_what_scrolls_sideways(tmp_path):
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><body><p>ok</p><pre>' + "x" * 600 + "</pre>"
                    '<div id="w" style="width: 2000px">wide</div></body></html>')
    r = _run_script("--out", tmp_path, page)
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["scrolls_sideways"] and rep["scrollWidth"] > 1280
    assert {o["what"] for o in rep["overflow"]} == {"pre", "div"}
    assert (tmp_path / "wide.png").is_file()
