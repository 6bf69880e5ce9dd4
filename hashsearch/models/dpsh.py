"""DPSH: Deep Pairwise-Supervised Hashing (Li, Wang & Kang, IJCAI 2016), the single-modal
supervised deep baseline that SCHN is measured against (same encoder, same data, same optimiser).

Loss (the paper's, normalised as the authors' PyTorch code does, by batch size x training size):
J = [Σ_ij softplus(Θ_ij) − S_ij Θ_ij + η Σ_i ‖u_i − b_i‖²] / (|batch| · N),  Θ_ij = ½ u_iᵀ u_j,
b_i = sign(u_i); u_j for the whole training set is kept as a buffer refreshed batch by batch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from hashsearch.errors import InvalidInputError
from hashsearch.models.single_modal import DeepImageHasher, label_similarity, sign_plus


def dpsh_loss(u: torch.Tensor, U: torch.Tensor, S: torch.Tensor, eta: float) -> torch.Tensor:
    """Pairwise negative log-likelihood (stable softplus) of batch outputs `u` against buffer `U`
    given 0/1 similarities `S` (|batch| x N), plus η times the quantisation error of `u`."""
    theta = 0.5 * (u @ U.T)
    likelihood = (F.softplus(theta) - S * theta).sum()
    quantization = ((u - sign_plus(u.detach())) ** 2).sum()
    return (likelihood + eta * quantization) / (u.shape[0] * U.shape[0])


class DPSH(DeepImageHasher):
    """`DPSH(nbits, seed=0).fit(x, labels).encode(x)` -> packed uint8 codes.

    Outputs are linear (no tanh), as in the paper. Defaults: η = 10 (paper), Adam lr 1e-3 for the
    from-scratch encoder (the paper fine-tunes pretrained CNN-F), batch 64 and 30 epochs.
    """

    encoder_tanh = False

    def __init__(self, nbits: int, seed: int = 0, eta: float = 10.0, epochs: int = 30, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 64, feature_dim: int = 256,
                 device: str | None = None, verbose: bool = True, image_net: str | None = None,
                 image_net_options: dict | None = None):
        super().__init__(nbits, seed=seed, feature_dim=feature_dim, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, device=device, verbose=verbose, image_net=image_net,
                         image_net_options=image_net_options)
        if eta < 0 or epochs < 1:
            raise InvalidInputError(f"need eta >= 0 and epochs >= 1, got eta={eta}, epochs={epochs}")
        self.eta, self.epochs = float(eta), int(epochs)
        self.loss_history: list[float] = []

    def fit(self, x: np.ndarray, labels: np.ndarray) -> "DPSH":
        """Train the encoder on images/features `x` with class ids or multi-hot `labels`."""
        xt, lt, dev = self._start_fit(x, labels)
        xt, lt = xt.to(dev), lt.to(dev)
        gen = torch.Generator().manual_seed(self.seed)
        U = torch.zeros(len(xt), self.nbits, device=dev)
        opt = torch.optim.Adam(self.encoder.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.encoder.train()
        self.loss_history = []
        for _ in tqdm(range(self.epochs), desc=f"DPSH {self.nbits} bits", disable=not self.verbose):
            total = 0.0
            for idx in self._batches(len(xt), gen):
                idx = idx.to(dev)
                u = self.encoder(xt[idx])[1]
                U[idx] = u.detach()
                loss = dpsh_loss(u, U, label_similarity(lt[idx], lt), self.eta)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.loss_history.append(total / len(xt))
        return self
