"""BEST-RQ / BiRQ pre-training: labels, masking, losses, gradients, export, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from ssl_helpers import build_tiny_encoder_file

from rpq_units.quant.random_projection import RandomProjectionQuantizer
from rpq_units.ssl.encoder import KIND, SSLCheckpointError, load_encoder
from rpq_units.ssl.export import export_encoder
from rpq_units.ssl.export import main as export_main
from rpq_units.ssl.labels import AnchorLabeller, normalise_per_utterance
from rpq_units.ssl.masking import SpanMasking, span_mask
from rpq_units.ssl.registry import register

TINY_ENCODER = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 3,
                "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
                "attention_dropout_rate": 0.0, "input_layer": "conv2d",
                "normalize_before": True, "pos_enc_layer_type": "rel_pos",
                "selfattention_layer_type": "rel_selfattn", "rel_pos_type": "latest",
                "macaron_style": True, "use_cnn_module": True, "cnn_module_kernel": 5}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two contend badly on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(method: str = "bestrq", **loss_conf) -> dict:
    """A pre-training config as ESPnet's SSL task reads it (tiny Conformer, 64 codes)."""
    conf = {"codebook_size": 64, "num_codebooks": 2, **loss_conf}
    return {
        "frontend": "default",
        "frontend_conf": {"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 80},
        "normalize": "utterance_mvn",
        "normalize_conf": {"norm_means": True, "norm_vars": True},
        "preencoder": None, "specaug": None,
        "encoder": "conformer", "encoder_conf": dict(TINY_ENCODER),
        "model": "bestrq",
        "loss": [{"name": method, "conf": conf}],
        "util": [{"name": "span_mask", "conf": {"mask_prob": 0.05, "mask_length": 8}}],
        "token_list": ["<unused>"], "use_preprocessor": False,
    }


def build(conf: dict, tmp_path, seed: int = 0):
    """Build through ESPnet's own parser and ``SSLTask.build_model`` (the trainer's path)."""
    register()
    from espnet2.tasks.ssl import SSLTask

    path = tmp_path / f"config_{seed}.yaml"
    path.write_text(yaml.safe_dump(conf))
    args = SSLTask.get_parser().parse_args(["--config", str(path)])
    torch.manual_seed(seed)
    return SSLTask.build_model(args), args


def batch(seed: int = 0, n: int = 3):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([32000, 26000, 20000, 30000][:n])
    wav = torch.randn(n, int(lens.max()), generator=g) * 0.1
    t = torch.arange(wav.shape[1]) / 16000
    wav += torch.sin(2 * math.pi * 220 * t) * torch.linspace(0.2, 1.0, n).unsqueeze(1)
    for i, n_i in enumerate(lens):
        wav[i, n_i:] = 0
    return wav, lens


# ---- anchor labels ---------------------------------------------------------------------------
def test_anchor_labels_match_a_hand_computed_case():
    lab = AnchorLabeller(input_dim=1, codebook_size=4, proj_dim=2, stack_frames=2, seed=0)
    lab.projection.copy_(torch.eye(2).unsqueeze(0))  # (M=1, p=2, S*F=2)
    lab.codebook.copy_(torch.tensor([[[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0], [0.6, -0.8]]]))
    # utterance 0: 0 2 4 6 8 -> z = (x - 4) / sqrt(8) = -1.41 -0.71 0 0.71 1.41
    #   windows (-1.41, -0.71) -> c2; (0, 0.71) -> c1; (1.41, 1.41 repeated last) -> c0
    # utterance 1: 5 -5 -> z = 1 -1 -> (0.71, -0.71) -> c3; padding (100) is never read
    feats = torch.tensor([[0.0, 2, 4, 6, 8], [5, -5, 100, 100, 100]]).unsqueeze(-1)
    labels, lens = lab(feats, torch.tensor([5, 2]))
    assert labels.shape == (2, 3, 1)
    assert labels[..., 0].tolist() == [[2, 1, 0], [3, -1, -1]]
    assert lens.tolist() == [3, 1]


def test_anchor_labels_are_the_quantizers_per_utterance_codes():
    torch.manual_seed(0)
    lab = AnchorLabeller(input_dim=6, num_codebooks=3, codebook_size=32, proj_dim=4,
                         stack_frames=4, seed=7)
    lens = torch.tensor([37, 16, 9, 40])
    feats = torch.randn(4, 40, 6) * 3 + 1
    labels, label_lens = lab(feats, lens)
    q = RandomProjectionQuantizer(num_codebooks=3, codebook_size=32, proj_dim=4,
                                  stack_frames=4, seed=7).draw(6)
    for i, n in enumerate(lens.tolist()):
        z = normalise_per_utterance(feats[i:i + 1, :n], torch.tensor([n]))[0]
        want = q.encode(z)[::4]  # the quantizer on the utterance alone
        assert torch.equal(labels[i, : label_lens[i]], want)
        assert (labels[i, label_lens[i]:] == -1).all()
    # a batch neighbour's content never changes an utterance's labels
    feats2 = feats.clone()
    feats2[0] = torch.randn(40, 6)
    assert torch.equal(lab(feats2, lens)[0][1:], labels[1:])


def test_anchor_labels_ignore_autocast():
    torch.manual_seed(0)
    lab = AnchorLabeller(input_dim=80, codebook_size=512, seed=1)
    feats, lens = torch.randn(2, 200, 80), torch.tensor([200, 150])
    want = lab(feats, lens)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lab(feats, lens)[0]
    assert torch.equal(got, want)


# ---- masking ---------------------------------------------------------------------------------
@pytest.mark.parametrize("prob, length", [(0.01, 40), (0.15, 4)])
def test_span_mask_fraction_spans_and_padding(prob, length):
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(600, 2000, (128,), generator=g)
    mask = span_mask(lens, 2000, prob, length, generator=g)
    valid = torch.arange(2000).unsqueeze(0) < lens.unsqueeze(1)
    assert not mask[~valid].any(), "padding masked"
    # away from the first span length the fraction is 1 - (1 - p)^L
    interior = valid & (torch.arange(2000) >= length).unsqueeze(0)
    frac = float(mask[interior].float().mean())
    assert abs(frac - (1 - (1 - prob) ** length)) < 0.02
    # every run of masked frames is at least one span long unless cut by the utterance end
    m = mask.numpy()
    for b in range(0, 128, 8):
        row, n = m[b], int(lens[b])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row[:n].astype(int), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            assert stop - start >= length or stop == n


def test_span_masking_puts_noise_on_masked_frames_only():
    torch.manual_seed(0)
    util = SpanMasking(mask_prob=0.02, mask_length=10, noise_std=0.1)
    lens = torch.tensor([500, 300])
    x = torch.full((2, 500, 80), 5.0)
    pad = torch.arange(500).unsqueeze(0) >= lens.unsqueeze(1)
    y, info = util(x, pad)
    mask = info["mask"]
    assert mask.any() and not mask[pad].any()
    assert (y[~mask] == 5.0).all(), "unmasked or padding frames changed"
    noise = y[mask]
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.1) < 0.01


def test_short_utterance_gets_a_span():
    torch.manual_seed(0)
    mask = span_mask(torch.tensor([12, 12, 12]), 12, 0.0, 4, min_spans=1)
    assert (mask.sum(1) >= 1).all()


# ---- model, loss, gradients ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["bestrq", "birq"])
def test_loss_falls_over_a_few_steps(tmp_path, method):
    model, _ = build(tiny_config(method), tmp_path)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    wav, lens = batch()
    torch.manual_seed(1)
    losses = []
    for _ in range(25):
        loss, stats, _ = model(wav, lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(stats["loss_anchor"]))
    assert 0 < stats["acc_anchor"] <= 1 and 1 <= stats["ppl_anchor"] <= 64
    assert 0 < stats["masked_fraction"] < 1
    if method == "birq":
        assert "loss_enhanced" in stats and "acc_enhanced" in stats and "ppl_enhanced" in stats
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses


def test_birq_gumbel_gradients_reach_layers_below_k_and_spare_frozen_parts(tmp_path):
    model, _ = build(tiny_config("birq", enhanced_layer=2, anchor_weight=0.0), tmp_path)
    loss_fn = model.losses[0]
    assert model.enhanced_layer == 2 and loss_fn.enhanced_layer == 2
    frozen = {"losses.0.enhanced_projection", "losses.0.enhanced_codebook",
              "losses.0.labeller.projection", "losses.0.labeller.codebook"}
    assert frozen <= set(dict(model.named_buffers()))
    assert not frozen & set(dict(model.named_parameters()))
    model.train()
    wav, lens = batch()
    torch.manual_seed(0)
    data = model.encode(wav, lens)
    # the masked pass detached: any gradient in the encoder comes through the Gumbel labels
    detached = [h.detach() for h in data["encoder_output"]]
    loss, _ = loss_fn(detached, data["encoder_output_lengths"], data["feats"],
                      data["feats_lengths"], data["mask_info"], data["unmasked_hidden"])
    loss.backward()
    layers = model.encoder.encoders
    for i in range(2):
        g = [p.grad for p in layers[i].parameters() if p.grad is not None]
        assert g and sum(float(x.abs().sum()) for x in g) > 0, f"no gradient in layer {i + 1}"
    assert float(model.encoder.embed.conv[0].weight.grad.abs().sum()) > 0
    for i in range(2, len(layers)):  # above k the unmasked pass never ran
        assert all(p.grad is None or not p.grad.any() for p in layers[i].parameters())
    for name, buf in model.named_buffers():
        assert not buf.requires_grad, name


def test_birq_utterance_norm_makes_label_collapse_no_minimum(tmp_path):
    """A layer k that is (nearly) constant over time, the collapse seen with per-frame LayerNorm,
    gives one code for every frame under ``frame`` normalisation; under ``utterance`` an exactly
    constant layer gives nearly equal logits (random Gumbel labels) and a nearly constant one
    gives labels spread by its residual noise: either way the labels cannot be predicted."""
    frame, _ = build(tiny_config("birq", enhanced_norm="frame"), tmp_path, seed=1)
    utt, _ = build(tiny_config("birq"), tmp_path, seed=2)
    assert utt.losses[0].enhanced_norm == "utterance"  # the default
    torch.manual_seed(0)
    per_dim = torch.randn(2, 1, 32) * 3 + 1
    nearly = per_dim.expand(2, 20, 32) + 1e-3 * torch.randn(2, 20, 32)
    lengths = torch.tensor([20, 20])
    codes = frame.losses[0].enhanced_logits(nearly, lengths).argmax(-1)
    assert (codes == codes[:, :1]).all()  # one code for each utterance's frames
    exact = utt.losses[0].enhanced_logits(per_dim.expand(2, 20, 32).contiguous(), lengths)
    assert float(exact.abs().max()) < 0.05 * utt.losses[0].logit_scale  # nearly uniform
    spread = utt.losses[0].enhanced_logits(nearly, lengths).argmax(-1)
    assert len(set(spread.flatten().tolist())) > 10


def test_birq_utterance_norm_ignores_padding(tmp_path):
    model, _ = build(tiny_config("birq"), tmp_path)
    loss_fn = model.losses[0]
    torch.manual_seed(0)
    short = torch.randn(1, 12, 32)
    padded = torch.cat([torch.cat([short, 50 * torch.randn(1, 8, 32)], 1), torch.randn(1, 20, 32)])
    alone = loss_fn.enhanced_logits(short, torch.tensor([12]))
    batched = loss_fn.enhanced_logits(padded, torch.tensor([12, 20]))
    assert torch.allclose(alone[0], batched[0, :12], atol=1e-5)
    with pytest.raises(ValueError, match="enhanced_norm must be 'utterance' or 'frame'"):
        build(tiny_config("birq", enhanced_norm="batch"), tmp_path, seed=5)


def test_enhanced_layer_beyond_depth_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="enhanced_layer 9 is beyond the encoder's 3 layers"):
        build(tiny_config("birq", enhanced_layer=9), tmp_path)


def test_birq_default_layer_is_seven_tenths_of_the_depth(tmp_path):
    conf = tiny_config("birq")
    conf["encoder_conf"]["num_blocks"] = 10
    conf["encoder_conf"]["output_size"] = 16
    model, _ = build(conf, tmp_path)
    assert model.enhanced_layer == 7


def test_same_seed_same_training(tmp_path):
    runs = []
    for _ in range(2):
        model, _ = build(tiny_config("birq"), tmp_path, seed=3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        wav, lens = batch()
        torch.manual_seed(5)
        losses = []
        for _ in range(4):
            loss, _, _ = model(wav, lens)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        runs.append((losses, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k


# ---- export and load -------------------------------------------------------------------------
def test_export_and_reload_give_identical_features(tmp_path):
    model, args = build(tiny_config("birq"), tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(vars(args)))
    ckpt = tmp_path / "1epoch.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "encoder.pt"
    header = export_encoder(str(config), str(ckpt), str(out))
    assert header["kind"] == KIND and header["method"] == "birq"
    enc = load_encoder(out)
    assert (enc.num_layers, enc.output_dim, enc.hop_samples, enc.sample_rate) == (3, 32, 640,
                                                                                 16000)
    model.eval()
    wav, lens = batch()
    with torch.no_grad():
        hidden, out_lens = enc(wav, lens)
        feats, flens = model._extract_feats(wav, lens)
        feats, flens = model.normalize(feats, flens)
        ref, ref_lens, _ = model.encoder(feats, flens, return_all_hs=True)
    assert len(hidden) == 4 and torch.equal(out_lens, ref_lens)
    for i, h in enumerate(ref[1][:-1], start=1):  # ESPnet's own layer outputs
        assert torch.equal(hidden[i], h), i
    assert torch.equal(hidden[3], ref[0])
    with torch.no_grad():
        part, _ = enc(wav, lens, max_layer=1)
    assert len(part) == 2 and torch.equal(part[1], hidden[1])


def test_tiny_encoder_file_and_checkpoint_errors(tmp_path, caplog):
    path = build_tiny_encoder_file(tmp_path / "tiny.pt", seed=1)
    enc = load_encoder(path)
    with pytest.raises(SSLCheckpointError, match=r"tiny\.pt: layer 5 is beyond"):
        enc(torch.zeros(1, 16000), torch.tensor([16000]), max_layer=5)
    with pytest.raises(SSLCheckpointError, match=r"tiny\.pt: layer -1 is beyond"):
        enc.check_layer(-1)
    other = tmp_path / "units.pt"
    torch.save({"kind": "rpq_units.quantizer", "format_version": 1}, other)
    with pytest.raises(SSLCheckpointError, match=r"units\.pt: file of kind"):
        load_encoder(other)
    plain = tmp_path / "valid.loss.best.pth"
    torch.save({"encoder.w": torch.zeros(2)}, plain)
    with pytest.raises(SSLCheckpointError, match=r"valid\.loss\.best\.pth: not an SSL encoder"):
        load_encoder(plain)
    newer = tmp_path / "newer.pt"
    torch.save({"kind": KIND, "format_version": 99}, newer)
    with pytest.raises(SSLCheckpointError, match=r"newer\.pt: format_version 99"):
        load_encoder(newer)
    with pytest.raises(SSLCheckpointError, match=r"missing\.pt: no such"):
        load_encoder(tmp_path / "missing.pt")
    assert issubclass(SSLCheckpointError, ValueError)
    # the export CLI: a checkpoint of another kind is one error line and exit 1, no output file
    model, args = build(tiny_config("bestrq"), tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(vars(args)))
    out = tmp_path / "enc.pt"
    assert export_main(["--config", str(config), "--model", str(path), "--out", str(out)]) == 1
    assert "tiny.pt: a file of kind 'rpq_units.ssl_encoder'" in caplog.text
    assert export_main(["--config", str(config), "--model", str(plain), "--out", str(out)]) == 1
    assert "valid.loss.best.pth: weights do not match" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("name", ["bestrq_demo", "birq_demo", "bestrq_librispeech960",
                                  "birq_librispeech960"])
def test_shipped_configs_build(name):
    """Every shipped config builds through ESPnet's parser; report its size."""
    from pathlib import Path

    register()
    from espnet2.tasks.ssl import SSLTask

    root = Path(__file__).resolve().parents[2]  # the demo's configs live with the demo recipe
    path = (root / "egs" / "mini_librispeech" if name.endswith("_demo") else root) / "conf" / "ssl" / f"{name}.yaml"
    args = SSLTask.get_parser().parse_args(["--config", str(path)])
    model = SSLTask.build_model(args)
    enc = sum(p.numel() for p in model.encoder.parameters())
    want = {"bestrq_demo": (1e6, 5e6), "birq_demo": (1e6, 5e6),
            "bestrq_librispeech960": (80e6, 130e6), "birq_librispeech960": (120e6, 170e6)}[name]
    assert want[0] < enc < want[1], enc
    if name.startswith("birq"):
        assert model.enhanced_layer == round(0.7 * len(model.encoder.encoders))
