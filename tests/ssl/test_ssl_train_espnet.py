"""BEST-RQ/BiRQ pre-training through ESPnet's SSL trainer: stats, 1 epoch, resume, export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from asset_helpers import make_data_dir

from rpq_units.ssl.encoder import load_encoder
from rpq_units.ssl.export import main as export_main

ROOT = Path(__file__).resolve().parents[2]


def tiny_birq_config(path: Path) -> Path:
    """The shipped demo config, shrunk through its own fields (same code path, tiny sizes)."""
    conf = yaml.safe_load((ROOT / "egs/mini_librispeech/conf/ssl/birq_demo.yaml").read_text())
    conf["encoder_conf"].update(output_size=32, attention_heads=2, linear_units=64, num_blocks=2,
                                cnn_module_kernel=5)
    conf["loss"][0]["conf"].update(codebook_size=64, enhanced_layer=1)
    conf["util"][0]["conf"].update(mask_prob=0.05, mask_length=8)
    conf.update(batch_bins=16000 * 4, num_workers=0, log_interval=1, num_att_plot=0,
                use_tensorboard=False, scheduler_conf={"warmup_steps": 5})
    path.write_text(yaml.safe_dump(conf))
    return path


def train(args: list[str], log: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "rpq_units.ssl.train", *args], cwd=ROOT,
                              stdout=f, stderr=subprocess.STDOUT, env=env, timeout=900)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


@pytest.mark.espnet
@pytest.mark.slow
def test_pretraining_on_espnet_ssl_trainer_resumes_and_exports(tmp_path):
    make_data_dir(tmp_path / "train", [1.2, 1.6, 1.0, 1.4, 1.8, 1.1], seed=0)
    make_data_dir(tmp_path / "valid", [1.3, 1.0], prefix="dev", seed=10)
    config = tiny_birq_config(tmp_path / "birq_tiny.yaml")
    data = ["--train_data_path_and_name_and_type", f"{tmp_path}/train/wav.scp,speech,sound",
            "--valid_data_path_and_name_and_type", f"{tmp_path}/valid/wav.scp,speech,sound",
            "--ngpu", "0"]
    stats, exp = tmp_path / "stats", tmp_path / "exp"
    # 1. shape files, as ESPnet's recipes make them (key files as shape files)
    train(["--config", str(config), "--collect_stats", "true", *data,
           "--train_shape_file", f"{tmp_path}/train/wav.scp",
           "--valid_shape_file", f"{tmp_path}/valid/wav.scp",
           "--output_dir", str(stats)], tmp_path / "stats.log")
    assert (stats / "train/speech_shape").is_file()
    shapes = ["--train_shape_file", f"{stats}/train/speech_shape",
              "--valid_shape_file", f"{stats}/valid/speech_shape", "--output_dir", str(exp)]
    # 2. one epoch
    log1 = train(["--config", str(config), *data, *shapes, "--max_epoch", "1"],
                 tmp_path / "train1.log")
    assert (exp / "1epoch.pth").is_file() and (exp / "checkpoint.pth").is_file()
    summary = [ln for ln in log1.splitlines() if "1epoch results" in ln]
    assert summary, log1[-2000:]
    for key in ("acc_anchor", "ppl_anchor", "acc_enhanced", "ppl_enhanced", "loss_enhanced"):
        assert f"{key}=" in summary[0], (key, summary[0])
        assert (exp / "images" / f"{key}.png").is_file(), key
    w1 = torch.load(exp / "1epoch.pth", map_location="cpu")
    # 3. resume for a second epoch
    log2 = train(["--config", str(config), *data, *shapes, "--max_epoch", "2",
                  "--resume", "true"], tmp_path / "train2.log")
    assert "resumed" in log2.lower(), log2[-2000:]
    assert "1epoch results" not in log2 and "2epoch results" in log2
    w2 = torch.load(exp / "2epoch.pth", map_location="cpu")
    key = "encoder.encoders.0.feed_forward.w_1.weight"
    assert not torch.equal(w1[key], w2[key]), "second epoch did not train"
    # 4. export the trained encoder and extract features with it
    out = exp / "encoder.pt"
    assert export_main(["--config", str(exp / "config.yaml"), "--model", str(exp / "2epoch.pth"),
                        "--out", str(out)]) == 0
    enc = load_encoder(out)
    assert enc.method == "birq" and enc.num_layers == 2 and enc.output_dim == 32
    with torch.no_grad():
        hidden, lens = enc(torch.randn(1, 16000), torch.tensor([16000]))
    assert len(hidden) == 3 and hidden[2].shape == (1, int(lens[0]), 32)
    assert torch.equal(enc.state_dict()[key], w2[key])
