"""BEST-RQ anchor labels: per-utterance normalised, stacked input frames through the frozen
random-projection quantizer (Chiu et al., ICML 2022, section 3.1).

For utterance b with L_b valid frames x_1..x_{L_b} (F-dim log-mel):

    z_t = (x_t - mean_b) / std_b                   statistics over that utterance's valid frames
    label_{b,u} = RPQ(z_{uS+1} .. z_{uS+S})        u = 0 .. ceil(L_b / S) - 1, one per codebook

:class:`rpq_units.quant.random_projection.RandomProjectionQuantizer` (drawn with identity
normalisation) does the stacking, projection and nearest-codeword search. Each utterance's frames
are padded to a multiple of S by repeating its last frame (the quantizer's own past-the-end rule)
and utterances are laid end to end, so a window never crosses an utterance boundary or padding.
With S equal to the encoder's subsampling, label u lines up with encoder output frame u.
"""

from __future__ import annotations

import torch

from rpq_units.quant.random_projection import RandomProjectionQuantizer

# windows per quantizer call: bounds the (rows, codebook_size) distance matrix in memory
CHUNK_WINDOWS = 4096


def normalise_per_utterance(feats: torch.Tensor, lengths: torch.Tensor,
                            eps: float = 1e-5) -> torch.Tensor:
    """feats: (B, T, F), lengths: (B,) -> (B, T, F) mean 0 / std 1 per utterance and dim over the
    valid frames; padding frames become 0."""
    valid = (torch.arange(feats.shape[1], device=feats.device).unsqueeze(0)
             < lengths.unsqueeze(1)).unsqueeze(-1).to(feats.dtype)
    n = valid.sum(1).clamp_min(1.0)
    mean = (feats * valid).sum(1, keepdim=True) / n.unsqueeze(1)
    var = (((feats - mean) * valid) ** 2).sum(1, keepdim=True) / n.unsqueeze(1)
    return (feats - mean) / var.sqrt().clamp_min(eps) * valid


class AnchorLabeller(torch.nn.Module):
    """Frozen BEST-RQ labeller: ``forward(feats (B, T, F), lengths (B,))`` ->
    ``(labels (B, U, M) long with -1 past each utterance's end, label_lengths (B,))``,
    U = ceil(T / S).

    Args (keyword): ``input_dim`` F, ``num_codebooks`` M, ``codebook_size`` K,
    ``proj_dim`` p, ``stack_frames`` S, ``seed``. The projection (M, p, S*F) and codebook (M, K, p)
    are buffers (no gradient, saved in checkpoints).
    """

    def __init__(self, *, input_dim: int, num_codebooks: int = 1, codebook_size: int = 8192,
                 proj_dim: int = 16, stack_frames: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.quantizer = RandomProjectionQuantizer(
            num_codebooks=num_codebooks, codebook_size=codebook_size, seed=seed,
            proj_dim=proj_dim, stack_frames=stack_frames,
        ).draw(input_dim)
        self.register_buffer("projection", self.quantizer.projection.clone())
        self.register_buffer("codebook", self.quantizer.codebook.clone())
        self.input_dim = int(input_dim)
        self.num_codebooks = int(num_codebooks)
        self.codebook_size = int(codebook_size)
        self.stack_frames = int(stack_frames)

    def _sync_quantizer(self, device: torch.device) -> RandomProjectionQuantizer:
        """Point the quantizer at this module's buffers (they follow ``.to()`` and checkpoints)."""
        q = self.quantizer
        q.device = device
        q.projection, q.codebook = self.projection, self.codebook
        q.mean = torch.zeros(self.input_dim, device=device)
        q.std = torch.ones(self.input_dim, device=device)
        return q

    @torch.no_grad()
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
        # labels in float32 whatever the caller's autocast: bf16 products would move codes
        with torch.autocast(feats.device.type, enabled=False):
            return self._labels(feats, lengths)

    def _labels(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        b, t, _ = feats.shape
        s = self.stack_frames
        q = self._sync_quantizer(feats.device)
        z = normalise_per_utterance(feats.float(), lengths)
        label_lens = (lengths + s - 1) // s
        # frame indices of every window of every utterance, laid end to end
        rows, owner = [], []
        for i in range(b):
            n = int(label_lens[i]) * s
            idx = torch.arange(n, device=feats.device).clamp_max(int(lengths[i]) - 1)
            rows.append(z[i, idx])
            owner.append(torch.full((int(label_lens[i]),), i, device=feats.device))
        flat = torch.cat(rows)  # (sum U_b * S, F), each utterance's block a multiple of S
        codes = []
        step = CHUNK_WINDOWS * s  # a multiple of S: windows starting at k*S stay inside a block
        for start in range(0, flat.shape[0], step):
            codes.append(q.encode(flat[start:start + step])[::s])
        codes = torch.cat(codes)  # (sum U_b, M)
        u = (t + s - 1) // s
        labels = torch.full((b, u, self.num_codebooks), -1, dtype=torch.long, device=feats.device)
        pos = torch.cat([torch.arange(int(n), device=feats.device) for n in label_lens])
        labels[torch.cat(owner), pos] = codes
        return labels, label_lens
