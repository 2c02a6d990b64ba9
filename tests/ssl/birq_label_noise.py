"""How much of BiRQ's enhanced labels is noise: the measurement behind the ``label_dropout`` and
Gumbel paragraphs of ``rpq_units/ssl/loss.py``'s docstring. Not a test (pytest does not collect
it): a script.

Builds the model of a BiRQ pre-training config through ESPnet's parser (the trainer's path),
optionally loads a checkpoint (an ESPnet ``<N>epoch.pth``), and labels every ``--every``-th
utterance of a ``wav.scp`` (``--num_utts`` of them, one batch) with the model in training mode,
as the trainer's step does: the label pass without dropout, twice with dropout, and Gumbel
samples of the pass without dropout. Prints one line per model: the perplexity of each set of
labels over the valid frames and how often two of them agree (frame by frame). From
egs/mini_librispeech, after ``./ssl.sh ... --ssl_config conf/ssl/birq_demo.yaml``:

    python ../../tests/ssl/birq_label_noise.py --config conf/ssl/birq_demo.yaml \\
        --wav_scp data/train_clean/wav.scp --checkpoint exp/ssl_birq/5epoch.pth
"""

from __future__ import annotations

import argparse
import contextlib

import soundfile as sf
import torch

from rpq_units.ssl.encoder import dropout_off, encoder_hidden_states
from rpq_units.ssl.loss import label_perplexity
from rpq_units.ssl.registry import register


def label_ids(model, wav, lens, dropout: bool, gumbel: bool = False):
    """-> (B, T') enhanced label ids of one label pass, (B, T') valid frames."""
    loss = model.losses[0]
    teacher = model.labeller  # the moving-average copy under label_ema_decay
    with torch.no_grad(), (contextlib.nullcontext() if dropout else dropout_off(teacher)):
        feats, flens = model._extract_feats(wav, lens)
        feats, flens = model.normalize(feats, flens)
        states, out_lens = encoder_hidden_states(teacher, feats, flens, loss.enhanced_layer)
        logits = loss.enhanced_logits(states[loss.enhanced_layer], out_lens)
    valid = torch.arange(logits.shape[1]).unsqueeze(0) < out_lens.unsqueeze(1)
    if gumbel:
        return torch.nn.functional.gumbel_softmax(logits, tau=loss.gumbel_tau,
                                                  hard=True).argmax(-1), valid
    return logits.argmax(-1), valid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="BiRQ pre-training config (yaml)")
    p.add_argument("--wav_scp", required=True)
    p.add_argument("--checkpoint", action="append", default=[],
                   help="ESPnet model file to load (repeatable); the initial model is always measured")
    p.add_argument("--num_utts", type=int, default=24)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    register()
    from espnet2.tasks.ssl import SSLTask

    args = SSLTask.get_parser().parse_args(["--config", a.config])
    torch.manual_seed(a.seed)
    model = SSLTask.build_model(args)
    wavs = []
    with open(a.wav_scp) as f:
        for i, line in enumerate(f):
            if i % a.every == 0:
                wavs.append(torch.tensor(sf.read(line.split(None, 1)[1].strip())[0],
                                         dtype=torch.float32))
            if len(wavs) == a.num_utts:
                break
    lens = torch.tensor([len(w) for w in wavs])
    wav = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    k = model.losses[0].enhanced_codebook_size
    for name in ["init", *a.checkpoint]:
        if name != "init":
            model.load_state_dict(torch.load(name, map_location="cpu"))
        model.train()  # BatchNorm and dropout as in a training step
        torch.manual_seed(a.seed + 1)
        clean, valid = label_ids(model, wav, lens, dropout=False)
        drop1, _ = label_ids(model, wav, lens, dropout=True)
        drop2, _ = label_ids(model, wav, lens, dropout=True)
        gum, _ = label_ids(model, wav, lens, dropout=False, gumbel=True)

        def ppl(x, valid=valid):
            return label_perplexity(x.unsqueeze(-1), valid, k)

        def agree(x, y, valid=valid):
            return float((x == y)[valid].float().mean())

        print(f"{name}: frames {int(valid.sum())}; perplexity: no dropout {ppl(clean):.1f}, "
              f"dropout {ppl(drop1):.1f} / {ppl(drop2):.1f}, Gumbel {ppl(gum):.1f}; agreement: "
              f"dropout vs none {agree(drop1, clean):.3f}, dropout vs dropout "
              f"{agree(drop1, drop2):.3f}, Gumbel vs nearest code {agree(gum, clean):.3f}")


if __name__ == "__main__":
    main()
