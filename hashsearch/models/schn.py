"""SCHN: Semantically Cycle-consistent Hashing Networks (Wang et al., ACM TOMM), single-modal search.

Three spaces, as in the authors' code (JalinWang/SCHN, main_tomm.py): the visual space (image
encoder -> tanh codes U_image), a semantic space inferred from labels (label MLP c -> 1024 -> 512
-> tanh codes U_label), and a transitive latent space: attention across the batch (queries/keys the
label features, values the image features), a one-layer GCN over the batch similarity graph and a
sigmoid hash layer (U_latent). Cycle mappings go back from the latent space to image codes (values:
label features) and to label codes (values: image features); discriminators tell real codes from
reconstructed ones (the cyclic adversarial module). Database codes B are learned asymmetrically by
discrete cyclic coordinate descent (DCC) with the extra α·U_label + β·U_latent terms.

Differences from the authors' setting, forced by this machine: no pretrained AlexNet (a small CNN on
pixels or an MLP on features, trained from scratch, hence Adam lr 1e-3 rather than 4e-5); the
authors' step-wise lr decay of the adversarial optimisers is left out. Changes for numerical
stability (their code diverged here, see `CycleNet`): the discriminator loss is computed from logits
(same function, see `Discriminator`); the GCN uses the symmetrically normalised batch graph, as a
GCN layer expects; attention queries and keys are layer-normalised; the database codes B start from
a DCC step on the untrained networks' outputs rather than from 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from hashsearch.codes import encode_sign
from hashsearch.errors import InvalidInputError
from hashsearch.models.base import check_real, label_similarity, signs
from hashsearch.models.single_modal import AUTO, DeepImageHasher, NonFiniteError, Rollback, check_finite, check_size

class CodeMLP(nn.Module):
    """in -> hidden -> ReLU -> feature_dim -> ReLU (features) -> linear -> tanh (codes): the authors'
    MLP_feature_output (hidden 1024, features 512), used for the label net, the reconstruction nets
    and the discriminators."""

    def __init__(self, input_dim: int, output_dim: int, hidden: int = 1024, feature_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, feature_dim), nn.ReLU(inplace=True))
        self.hash_layer = nn.Sequential(nn.Linear(feature_dim, output_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net(x)
        return feats, self.hash_layer(feats)


def normalized_adjacency(S: torch.Tensor) -> torch.Tensor:
    """D^-½ (S ∨ I) D^-½: the batch similarity graph with self-loops, symmetrically normalised (Kipf &
    Welling). The authors feed the raw 0/1 matrix, so a node's features grow with its number of
    neighbours in the batch (up to the batch size with multi-labels) and nothing bounds them."""
    A = torch.maximum(S, torch.eye(len(S), dtype=S.dtype, device=S.device))
    d = A.sum(1).rsqrt()
    return d[:, None] * A * d[None, :]


class LatentGCN(nn.Module):
    """One graph convolution over the normalised batch graph (ReLU(Â·X·W + b)), dropout, then a sigmoid hash layer."""

    def __init__(self, input_dim: int, hidden_dim: int, nbits: int, dropout: float = 0.5):
        super().__init__()
        self.weight = nn.Linear(input_dim, hidden_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden_dim))
        self.dropout = nn.Dropout(dropout)
        self.hash_layer = nn.Linear(hidden_dim, nbits)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = F.relu(normalized_adjacency(adj) @ self.weight(x) + self.bias)
        return feats, torch.sigmoid(self.hash_layer(self.dropout(feats)))


def batch_attention(att: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Single-head attention whose sequence is the batch itself (each item attends to the others)."""
    out, _ = att(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), need_weights=False)
    return out.squeeze(1)


class CycleNet(nn.Module):
    """Latent space and the two cycle mappings back to image and label codes (authors' lat-as-key net;
    their widths: label features 512, latent 1024, MLP hidden 1024).

    Queries and keys are layer-normalised (`norm_label`, `norm_latent`). The authors attend on raw
    ReLU features; trained against codes it can never reach, the latent layer's features grew without
    bound (x80 in 60 steps on digits at lr 1e-2), the attention logits grow with their square, and
    the attention backward returned NaN: "SCHN training diverged: non-finite sim_latent, ..."."""

    def __init__(self, image_dim: int, nbits: int, label_dim: int = 512, latent_dim: int = 1024,
                 mlp_hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.norm_label, self.norm_latent = nn.LayerNorm(label_dim), nn.LayerNorm(latent_dim)
        self.att_latent = nn.MultiheadAttention(label_dim, 1, kdim=label_dim, vdim=image_dim)
        self.gcn = LatentGCN(label_dim, latent_dim, nbits, dropout)
        self.att_image_rec = nn.MultiheadAttention(latent_dim, 1, kdim=latent_dim, vdim=label_dim)
        self.att_label_rec = nn.MultiheadAttention(latent_dim, 1, kdim=latent_dim, vdim=image_dim)
        self.image_rec = CodeMLP(latent_dim, nbits, mlp_hidden, label_dim)
        self.label_rec = CodeMLP(latent_dim, nbits, mlp_hidden, label_dim)

    def forward(self, f_image: torch.Tensor, f_label: torch.Tensor, adj: torch.Tensor) -> dict[str, torch.Tensor]:
        q_label = self.norm_label(f_label)
        latent, u_latent = self.gcn(batch_attention(self.att_latent, q_label, q_label, f_image), adj)
        q_latent = self.norm_latent(latent)
        u_image_rec = self.image_rec(batch_attention(self.att_image_rec, q_latent, q_latent, f_label))[1]
        u_label_rec = self.label_rec(batch_attention(self.att_label_rec, q_latent, q_latent, f_image))[1]
        return {"latent": u_latent, "image_rec": u_image_rec, "label_rec": u_label_rec}


class Discriminator(nn.Module):
    """Logits that image / label codes are real rather than reconstructed, from two MLPs.

    The authors turn the MLP's tanh(z) into a probability (tanh(z) + 1) / 2, which equals sigmoid(2z);
    we return the logit 2z so the loss can use the stable log-sigmoid: with the probability form, a
    saturated discriminator sends ~1e12 gradients through the attention layers and they turn NaN
    (seen on MNIST-5k at 32 bits, step 438, in the generator step)."""

    def __init__(self, nbits: int, mlp_hidden: int = 1024, feature_dim: int = 512):
        super().__init__()
        self.image = CodeMLP(nbits, 1, mlp_hidden, feature_dim)
        self.label = CodeMLP(nbits, 1, mlp_hidden, feature_dim)

    def forward(self, u_image: torch.Tensor, u_label: torch.Tensor) -> torch.Tensor:
        logits = [2 * mlp.hash_layer[0](mlp.net(u)) for mlp, u in ((self.image, u_image), (self.label, u_label))]
        return torch.cat(logits).view(-1)


def similarity_loss(U: torch.Tensor, B: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Pairwise similarity preservation, (12 / bits) · mean((bits · S − U Bᵀ)²), as in the authors' code."""
    nbits = U.shape[1]
    return ((nbits * S - U @ B.T) ** 2).mean() * 12 / nbits


def quantization_loss(U: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """mean((U − B)²): outputs pulled towards their binary codes."""
    return ((U - B) ** 2).mean()


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cycle consistency: mean squared error between reconstructed and real codes."""
    return ((rec - target) ** 2).mean()


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of discriminator logits against all-real or all-fake targets (stable form)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def soft_similarity(S: torch.Tensor) -> torch.Tensor:
    """The authors' soft ±1 similarity for DCC ("benefits convergence"): with S± = 2S − 1 and
    r = ΣS± / Σ(1 − S±), returns S± (1 + r) − r: similar pairs stay 1, dissimilar ones move towards 0."""
    s = 2 * S - 1
    denom = (1 - s).sum()
    r = s.sum() / denom if denom > 0 else torch.zeros((), dtype=s.dtype)
    return s * (1 + r) - r


def dcc_update(B: torch.Tensor, U: torch.Tensor, S: torch.Tensor, gamma: float, u_label: torch.Tensor,
               u_latent: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Discrete cyclic coordinate descent for the sampled database codes B (m x bits), one bit at a time:
    B_k = sign(Q_k − B'(U'ᵀ U_k) + α U_label,k + β U_latent,k) with Q = bits · Sᵀ U + γ U (ADSH's step + SCHN's terms)."""
    nbits = U.shape[1]
    B = B.clone()
    Q = nbits * S.T @ U + gamma * U
    for k in range(nbits):
        rest = torch.arange(nbits, device=U.device) != k
        B[:, k] = signs(Q[:, k] - B[:, rest] @ (U[:, rest].T @ U[:, k]) + alpha * u_label[:, k] + beta * u_latent[:, k])
    return B


class SCHN(DeepImageHasher):
    """`SCHN(nbits, seed=0).fit(x, labels).encode(x)` -> packed uint8 codes from the visual space.

    Training follows the authors' loop: `max_iter` rounds, each sampling `num_samples` database items,
    training `max_epoch` epochs on them in batches (cycle loss step, discriminator step, generator
    step), then updating their codes B by DCC. Weights: `gamma` (quantisation, 10), `alpha` (label
    codes in DCC, 2), `beta` (latent codes in DCC, 0.1) from the authors; `semantic_weight`,
    `latent_weight`, `rec_weight`, `adv_weight` (1 each: the authors sum the terms unweighted).

    Settings left "auto" are chosen from the input in `fit` (`params_` records them): widths
    `label_dim` / `latent_dim` / `mlp_hidden` 128 / 256 / 256 on feature rows, 256 / 512 / 512 on
    pixels (the authors': 512 / 1024 / 1024); `num_samples` = min(n, 2000) (authors: 2000);
    `max_epoch` 1; `max_iter` rounds for about 8 passes over the set, 10 to 50 rounds (authors: 50
    rounds of 3 epochs). A fine-tuned pretrained `image_net` trains at `backbone_lr_scale` x lr (0.1).
    `augment=True` mirrors and shifts each training batch of images or maps (`augment_batch`).
    A non-finite step restores the state at the start of its round with half the step size (recorded
    in `history_`). `train_codes_` holds the learned database codes of the
    training items (the asymmetric protocol).
    """

    def __init__(self, nbits: int, seed: int = 0, gamma: float = 10.0, alpha: float = 2.0, beta: float = 0.1,
                 semantic_weight: float = 1.0, latent_weight: float = 1.0, rec_weight: float = 1.0,
                 adv_weight: float = 1.0, max_iter: int | str = AUTO, max_epoch: int | str = AUTO,
                 num_samples: int | str = AUTO, gcn_dropout: float = 0.5, label_dim: int | str = AUTO,
                 latent_dim: int | str = AUTO, mlp_hidden: int | str = AUTO, lr: float = 1e-3,
                 weight_decay: float = 1e-5, batch_size: int = 64, feature_dim: int | str = AUTO,
                 device: str | None = None, verbose: bool = True, image_net: str | None = None,
                 image_net_options: dict | None = None, backbone_lr_scale: float = 0.1, augment: bool = False):
        self.gamma, self.alpha, self.beta = gamma, alpha, beta
        self.semantic_weight, self.latent_weight, self.rec_weight, self.adv_weight = (
            semantic_weight, latent_weight, rec_weight, adv_weight)
        self.max_iter, self.max_epoch, self.num_samples, self.gcn_dropout = max_iter, max_epoch, num_samples, gcn_dropout
        self.label_dim, self.latent_dim, self.mlp_hidden = label_dim, latent_dim, mlp_hidden
        super().__init__(nbits, seed=seed, feature_dim=feature_dim, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, device=device, verbose=verbose, image_net=image_net,
                         image_net_options=image_net_options, backbone_lr_scale=backbone_lr_scale, augment=augment)

    def _check_params(self) -> None:
        super()._check_params()
        for name in ("gamma", "alpha", "beta", "semantic_weight", "latent_weight", "rec_weight", "adv_weight"):
            check_real(getattr(self, name), name, strictly_positive=False)
        for name in ("max_iter", "max_epoch", "num_samples", "label_dim", "latent_dim", "mlp_hidden"):
            check_size(getattr(self, name), name)
        if check_real(self.gcn_dropout, "gcn_dropout", strictly_positive=False) >= 1:
            raise InvalidInputError(f"gcn_dropout must be below 1, got {self.gcn_dropout!r}")

    def _resolve_params(self, input_shape: tuple[int, ...], n: int, n_classes: int) -> dict[str, Any]:
        params = super()._resolve_params(input_shape, n, n_classes)
        widths = (128, 256, 256) if params["input_kind"] == "features" else (256, 512, 512)
        auto = dict(zip(("label_dim", "latent_dim", "mlp_hidden"), widths), num_samples=min(n, 2000), max_epoch=1)
        params.update({k: v for k, v in auto.items() if params[k] == AUTO})
        if params["max_iter"] == AUTO:
            passes = 8 * n / (params["num_samples"] * params["max_epoch"])
            params["max_iter"] = min(50, max(10, math.ceil(passes)))
        return params

    def build_networks(self, n_classes: int, dev: torch.device) -> tuple[nn.Module, CycleNet, Discriminator]:
        """Label net, cycle net and discriminator (the image encoder is `self.encoder_`)."""
        p = self.params_
        label_net = CodeMLP(n_classes, self.nbits, p["mlp_hidden"], p["label_dim"]).to(dev)
        cycle = CycleNet(p["feature_dim"], self.nbits, p["label_dim"], p["latent_dim"], p["mlp_hidden"],
                         self.gcn_dropout).to(dev)
        return label_net, cycle, Discriminator(self.nbits, p["mlp_hidden"], p["label_dim"]).to(dev)

    def cycle_losses(self, out: dict[str, torch.Tensor], B: torch.Tensor, S: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of the main (non-adversarial) objective for one batch, and their weighted total."""
        terms = {}
        for space, weight in (("image", 1.0), ("label", self.semantic_weight), ("latent", self.latent_weight)):
            terms[f"sim_{space}"] = weight * similarity_loss(out[space], B, S)
            terms[f"quant_{space}"] = weight * self.gamma * quantization_loss(out[space], B)
        terms["rec_image"] = self.rec_weight * reconstruction_loss(out["image_rec"], out["image"])
        terms["rec_label"] = self.rec_weight * reconstruction_loss(out["label_rec"], out["label"])
        terms["total"] = sum(terms.values())
        return terms

    def forward_all(self, label_net: nn.Module, cycle: CycleNet, x: torch.Tensor, lab: torch.Tensor,
                    adj: torch.Tensor) -> dict[str, torch.Tensor]:
        """Codes of the three spaces and the two reconstructions for one batch (the cycle net sees
        detached image/label features, as in the authors' code)."""
        f_image, u_image = self.encoder_(x)
        f_label, u_label = label_net(lab)
        out = cycle(f_image.detach(), f_label.detach(), adj)
        return {"image": u_image, "label": u_label, **out}

    def fit(self, x: np.ndarray, labels: np.ndarray) -> "SCHN":
        """Train on images/features `x` (the database / training items) with class ids or multi-hot labels."""
        xt, lt, dev = self._start_fit(x, labels)
        xt, lt = xt.to(dev), lt.to(dev)
        p = self.params_
        n, m = len(xt), min(p["num_samples"], len(xt))
        gen = torch.Generator().manual_seed(self.seed)
        label_net, cycle, disc = self.build_networks(lt.shape[1], dev)
        nets = (self.encoder_, label_net, cycle, disc)
        params = [*self.encoder_.parameters(), *label_net.parameters(), *cycle.parameters()]
        opts = [torch.optim.Adam(self._param_groups(ps), lr=self.lr, weight_decay=self.weight_decay, fused=True)
                for ps in (params, disc.parameters(), cycle.parameters())]  # main, discriminator, generator
        rollback = Rollback(dict(zip(("encoder", "label", "cycle", "disc"), nets)), opts)
        B_all = torch.zeros(n, self.nbits, device=dev)
        sampled = torch.zeros(n, dtype=torch.bool, device=dev)
        for module in nets:
            module.train()
        bar = tqdm(total=p["max_iter"], desc=f"SCHN {self.nbits} bits", disable=not self.verbose)
        it = 0
        while it < p["max_iter"]:
            sample = torch.randperm(n, generator=gen)[:m].to(dev)
            S_soft = soft_similarity(label_similarity(lt[sample], lt))[:, sample]
            try:
                rollback.save(B_all=B_all)
                if it == 0:  # B = 0 would teach every output to be 0 (the sigmoid latent layer saturates)
                    B_all[sample] = self._initial_codes(label_net, cycle, xt[sample], lt[sample], S_soft)
                U, losses = self._round(label_net, cycle, disc, opts, xt[sample], lt[sample], B_all[sample], gen)
                B_new = dcc_update(B_all[sample], U["image"], S_soft, self.gamma, U["label"], U["latent"],
                                   self.alpha, self.beta)
            except NonFiniteError as exc:
                buffers, event = rollback.recover(exc, {"round": it})
                B_all = buffers["B_all"]
                self._log(event)
                continue
            B_all[sample] = B_new
            sampled[sample] = True
            self._log({"round": it, **losses, "lr": opts[0].param_groups[0]["lr"]})
            it += 1
            bar.update()
        bar.close()
        self._store_train_codes(B_all, sampled, xt)
        return self

    def _initial_codes(self, label_net: nn.Module, cycle: CycleNet, x: torch.Tensor, lab: torch.Tensor,
                       S_soft: torch.Tensor) -> torch.Tensor:
        """Codes of the first sample by one DCC step on the untrained networks' outputs: they already
        agree with the labels through the similarity term, so the first round has targets to learn."""
        U = {k: [] for k in ("image", "label", "latent")}
        nets = (self.encoder_, label_net, cycle)
        for net in nets:
            net.eval()
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                xb, lb = x[i:i + self.batch_size], lab[i:i + self.batch_size]
                out = self.forward_all(label_net, cycle, xb, lb, label_similarity(lb, lb))
                for k in U:
                    U[k].append(out[k])
        for net in nets:
            net.train()
        U = {k: torch.cat(v) for k, v in U.items()}
        check_finite(U, "SCHN initial codes")
        B0 = torch.zeros_like(U["image"])
        return dcc_update(B0, U["image"], S_soft, self.gamma, U["label"], U["latent"], self.alpha, self.beta)

    def _round(self, label_net: nn.Module, cycle: CycleNet, disc: Discriminator, opts: list[torch.optim.Optimizer],
               xs: torch.Tensor, ls: torch.Tensor, B: torch.Tensor, gen: torch.Generator
               ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """`max_epoch` epochs over one sample: the codes U of its three spaces and the mean loss terms."""
        m, epochs = len(xs), self.params_["max_epoch"]
        U = {k: torch.zeros(m, self.nbits, device=xs.device) for k in ("image", "label", "latent")}
        sums: dict[str, float] = {}
        for _epoch in range(epochs):
            for idx in self._batches(m, gen):
                idx = idx.to(xs.device)
                x = self._train_input(xs[idx], gen)
                terms = self._train_step(label_net, cycle, disc, opts, x, ls[idx], B[idx], U, idx)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v * len(idx)
        check_finite(U, "SCHN codes")
        return U, {k: v / (m * epochs) for k, v in sums.items()}

    def _train_step(self, label_net: nn.Module, cycle: CycleNet, disc: Discriminator,
                    opts: list[torch.optim.Optimizer], x: torch.Tensor, lab: torch.Tensor, B: torch.Tensor,
                    U: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, float]:
        """One batch: main objective step, then discriminator and generator (cycle net) steps; records U."""
        opt_main, opt_d, opt_g = opts
        adj = label_similarity(lab, lab)
        terms = self.cycle_losses(self.forward_all(label_net, cycle, x, lab, adj), B, adj)
        check_finite(terms, "SCHN training")
        opt_main.zero_grad()
        terms["total"].backward()
        opt_main.step()
        with torch.no_grad():  # fresh codes after the step; the encoders get no adversarial gradient
            (f_image, u_image), (f_label, u_label) = self.encoder_(x), label_net(lab)
        out = cycle(f_image, f_label, adj)
        loss_d = adversarial_loss(disc(u_image, u_label), True) + adversarial_loss(
            disc(out["image_rec"].detach(), out["label_rec"].detach()), False)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = self.adv_weight * adversarial_loss(disc(out["image_rec"], out["label_rec"]), True)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        check_finite({"discriminator loss": loss_d, "generator loss": loss_g}, "SCHN training")
        U["image"][idx], U["label"][idx], U["latent"][idx] = u_image, u_label, out["latent"].detach()
        return {**{k: v.item() for k, v in terms.items()}, "disc": loss_d.item(), "gen": loss_g.item()}

    def _store_train_codes(self, B_all: torch.Tensor, sampled: torch.Tensor, xt: torch.Tensor) -> None:
        """Packed learned codes of the training items; items never sampled get their encoder codes."""
        B = B_all.cpu().numpy()
        missing = ~sampled.cpu().numpy()
        if missing.any():
            B[missing] = self._hash_outputs(xt[torch.from_numpy(missing).to(xt.device)])
        self.train_codes_ = encode_sign(B)
