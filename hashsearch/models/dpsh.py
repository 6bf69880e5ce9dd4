"""DPSH: Deep Pairwise-Supervised Hashing (Li, Wang & Kang, IJCAI 2016), the single-modal
supervised deep baseline that SCHN is measured against (same encoder, same data, same optimiser).

Loss (the paper's, normalised as the authors' PyTorch code does, by batch size x training size):
J = [Σ_ij softplus(Θ_ij) − S_ij Θ_ij + η Σ_i ‖u_i − b_i‖²] / (|batch| · N),  Θ_ij = ½ u_iᵀ u_j,
b_i = sign(u_i); u_j for the whole training set is kept as a buffer refreshed batch by batch.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from hashsearch.models.base import check_real, label_similarity, signs
from hashsearch.models.single_modal import AUTO, DeepImageHasher, NonFiniteError, Rollback, check_finite, check_size

MIN_STEPS = 600  # "auto" epochs: at least this many batches in all, so that small sets are not under-trained


def dpsh_loss(u: torch.Tensor, U: torch.Tensor, S: torch.Tensor, eta: float) -> torch.Tensor:
    """Pairwise negative log-likelihood (stable softplus) of batch outputs `u` against buffer `U`
    given 0/1 similarities `S` (|batch| x N), plus η times the quantisation error of `u`."""
    theta = 0.5 * (u @ U.T)
    likelihood = (F.softplus(theta) - S * theta).sum()
    quantization = ((u - signs(u.detach())) ** 2).sum()
    return (likelihood + eta * quantization) / (u.shape[0] * U.shape[0])


class DPSH(DeepImageHasher):
    """`DPSH(nbits, seed=0).fit(x, labels).encode(x)` -> packed uint8 codes.

    Outputs are linear (no tanh), as in the paper. Defaults: η = 10 (paper), Adam lr 1e-3 for the
    from-scratch encoder (the paper fine-tunes pretrained CNN-F), batch 64; `epochs="auto"` is 30
    (an MLP on feature rows, a small CNN on pixels), more on small sets so that training takes at
    least 600 steps. With a pretrained `image_net` fine-tuned, its blocks train at `backbone_lr_scale` x lr
    (0.1). `augment=True` mirrors and shifts each training batch of images or maps (`augment_batch`).
    A non-finite step restores the last finite epoch with half the step size
    (recorded in `history_`).
    """

    encoder_tanh = False

    def __init__(self, nbits: int, seed: int = 0, eta: float = 10.0, epochs: int | str = AUTO, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 64, feature_dim: int | str = AUTO,
                 device: str | None = None, verbose: bool = True, image_net: str | None = None,
                 image_net_options: dict | None = None, backbone_lr_scale: float = 0.1, augment: bool = False):
        self.eta, self.epochs = eta, epochs
        super().__init__(nbits, seed=seed, feature_dim=feature_dim, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, device=device, verbose=verbose, image_net=image_net,
                         image_net_options=image_net_options, backbone_lr_scale=backbone_lr_scale, augment=augment)

    def _check_params(self) -> None:
        super()._check_params()
        check_real(self.eta, "eta", strictly_positive=False)
        check_size(self.epochs, "epochs")

    def _resolve_params(self, input_shape: tuple[int, ...], n: int, n_classes: int) -> dict[str, Any]:
        params = super()._resolve_params(input_shape, n, n_classes)
        if params["epochs"] == AUTO:
            params["epochs"] = max(30, math.ceil(MIN_STEPS / math.ceil(n / self.batch_size)))
        return params

    def fit(self, x: np.ndarray, labels: np.ndarray) -> "DPSH":
        """Train the encoder on images/features `x` with class ids or multi-hot `labels`."""
        xt, lt, dev = self._start_fit(x, labels)
        xt, lt = xt.to(dev), lt.to(dev)
        gen = torch.Generator().manual_seed(self.seed)
        U = torch.zeros(len(xt), self.nbits, device=dev)
        opt = torch.optim.Adam(self._param_groups(self.encoder_.parameters()), lr=self.lr,
                               weight_decay=self.weight_decay, fused=True)
        rollback = Rollback({"encoder": self.encoder_}, [opt])
        self.encoder_.train()
        epochs = self.params_["epochs"]
        bar = tqdm(total=epochs, desc=f"DPSH {self.nbits} bits", disable=not self.verbose)
        epoch = 0
        while epoch < epochs:
            try:
                rollback.save(U=U)
                loss = self._epoch(xt, lt, U, opt, gen)
            except NonFiniteError as exc:
                buffers, event = rollback.recover(exc, {"epoch": epoch})
                U = buffers["U"]
                self._log(event)
                continue
            self._log({"epoch": epoch, "loss": loss, "lr": opt.param_groups[0]["lr"]})
            epoch += 1
            bar.update()
        bar.close()
        return self

    def _epoch(self, xt: torch.Tensor, lt: torch.Tensor, U: torch.Tensor, opt: torch.optim.Optimizer,
               gen: torch.Generator) -> float:
        """One shuffled pass in batches; the mean loss per item (NonFiniteError on a non-finite loss)."""
        total = 0.0
        for idx in self._batches(len(xt), gen):
            idx = idx.to(xt.device)
            u = self.encoder_(self._train_input(xt[idx], gen))[1]
            U[idx] = u.detach()
            loss = dpsh_loss(u, U, label_similarity(lt[idx], lt), self.eta)
            check_finite({"loss": loss}, "DPSH training")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        return total / len(xt)
