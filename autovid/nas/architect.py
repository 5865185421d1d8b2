"""The DARTS bilevel step: updates the architecture parameters α on the α half of the training split.

Weights w are trained by the caller's loop on the weight half; this class only ever moves α:

    first order   ∇α L_val(w, α)
    second order  ∇α L_val(w', α) - η ∇²α,w L_train(w, α) ∇w' L_val(w', α)
                  with w' = w - η (∇w L_train(w, α) + μ·m + λ·w)       (one virtual SGD step)

The Hessian-vector product is the finite difference of DARTS (Liu et al., 2019, eq. 8):
    (∇α L_train(w⁺, α) - ∇α L_train(w⁻, α)) / 2r,   w± = w ± r ∇w' L_val(w', α),   r = 0.01 / ‖∇w' L_val‖.

Unlike the reference implementation (quark0/darts cnn/architect.py) no copy of the network is built:
the virtual step runs through ``torch.func.functional_call`` on a dict of replacement weights. Every
forward here also runs on copies of the model's buffers, so ``step`` changes neither the weights, their
``.grad``, nor BatchNorm running statistics — only α (and the Adam state).

Data parallel (``parallel``, a ``GradientSync`` such as ``autovid.engine.distributed.DataParallel``): each
rank's loss is its share of the global batch's mean and every gradient is all-reduced right after it is taken —
∇w L_train before the virtual step, (∇α, ∇w') L_val before the finite difference, the difference itself — so all ranks
compute the one-process α gradient of the global batch and α stays identical everywhere.

Model contract: ``model(x) -> logits``, ``model.arch_parameters()`` (α), ``model.weight_parameters()``
(everything the weight optimizer trains; must be registered parameters of ``model``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

if TYPE_CHECKING:
    from autovid.nas.supernet import SuperNet

logger = logging.getLogger(__name__)

__all__ = ["Architect"]

Order = Literal["first", "second"]


class GradientSync(Protocol):
    """What the α step needs of data parallelism (the engine's ``DataParallel`` is one): nas/ knows no engine."""

    def loss(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(this rank's share of the global batch's mean loss, to differentiate; its detached sum)."""
        ...

    def reduce_gradients(self, grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
        """Gradients summed over the ranks (a missing one counts as zeros)."""
        ...


class Architect:
    """Adam on α, driven by the α-half batch (first order) or by the unrolled objective (second order)."""

    def __init__(
        self,
        model: SuperNet,
        *,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-3,
        order: Order = "first",
        w_momentum: float = 0.9,
        w_weight_decay: float = 3e-4,
        parallel: GradientSync | None = None,
    ) -> None:
        if order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second', got {order!r}")
        self.model = model
        self.parallel = parallel
        self.order: Order = order
        self.w_momentum = float(w_momentum)  # of the weight optimizer, mirrored by the virtual step
        self.w_weight_decay = float(w_weight_decay)
        self.alphas: list[nn.Parameter] = list(model.arch_parameters())
        if not self.alphas:
            raise ValueError("model.arch_parameters() is empty: nothing for the architect to optimize")
        self.optimizer = torch.optim.Adam(self.alphas, lr=lr, betas=betas, weight_decay=weight_decay)

    # ------------------------------------------------------------------ public API

    def step(
        self,
        x_w: Tensor,
        y_w: Tensor,
        x_a: Tensor,
        y_a: Tensor,
        *,
        eta: float,
        w_optimizer: torch.optim.Optimizer | None = None,
    ) -> Tensor:
        """One Adam step on α; returns the (detached) α-half loss at the current weights.

        ``x_w, y_w`` (weight half) are used only by the second-order step; ``eta`` is the weight
        optimizer's current learning rate and ``w_optimizer`` supplies its momentum buffers.
        """
        grads, loss = self._alpha_gradients(x_w, y_w, x_a, y_a, eta=eta, w_optimizer=w_optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        for alpha, g in zip(self.alphas, grads):
            alpha.grad = g
        self.optimizer.step()
        # Leave no α gradient behind: the weight step's backward must not see a stale one.
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def alpha_gradients(
        self,
        x_w: Tensor,
        y_w: Tensor,
        x_a: Tensor,
        y_a: Tensor,
        *,
        eta: float,
        w_optimizer: torch.optim.Optimizer | None = None,
    ) -> list[Tensor]:
        """The gradient ``step`` would hand to Adam, one tensor per α (nothing is updated)."""
        return self._alpha_gradients(x_w, y_w, x_a, y_a, eta=eta, w_optimizer=w_optimizer)[0]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the Adam state (α itself lives in the model's state_dict)."""
        return {"order": self.order, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        if state.get("order", self.order) != self.order:
            logger.warning("architect state saved with order=%s, resumed with order=%s", state["order"], self.order)
        # Deep copy: Optimizer.load_state_dict keeps references to the given moment tensors, which would
        # tie two architects restored from one in-memory state together.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    # ------------------------------------------------------------------ internals

    def _alpha_gradients(
        self,
        x_w: Tensor,
        y_w: Tensor,
        x_a: Tensor,
        y_a: Tensor,
        *,
        eta: float,
        w_optimizer: torch.optim.Optimizer | None,
    ) -> tuple[list[Tensor], Tensor]:
        if self.order == "first":
            loss = self._loss(x_a, y_a)
            grads = torch.autograd.grad(loss, self.alphas, allow_unused=True)
            return self._reduce(grads, self.alphas), loss.detach()
        return self._unrolled_gradients(x_w, y_w, x_a, y_a, eta=eta, w_optimizer=w_optimizer)

    def _unrolled_gradients(
        self,
        x_w: Tensor,
        y_w: Tensor,
        x_a: Tensor,
        y_a: Tensor,
        *,
        eta: float,
        w_optimizer: torch.optim.Optimizer | None,
    ) -> tuple[list[Tensor], Tensor]:
        names, weights = self._named_weights()

        # Virtual SGD step w' = w - η (g + μ m + λ w), exactly what the weight optimizer would do next.
        train_loss = self._loss(x_w, y_w)
        g_train = self._reduce(torch.autograd.grad(train_loss, weights, allow_unused=True), weights)
        with torch.no_grad():
            unrolled = []
            for w, g in zip(weights, g_train):
                d = self.w_weight_decay * w + g
                buf = self._momentum_buffer(w_optimizer, w)
                if buf is not None:
                    d = d + self.w_momentum * buf
                unrolled.append((w - eta * d).requires_grad_(True))

        # ∇α and ∇w' of L_val(w', α).
        val_loss = self._loss(x_a, y_a, dict(zip(names, unrolled)))
        grads = self._reduce(torch.autograd.grad(val_loss, [*self.alphas, *unrolled], allow_unused=True),
                             [*self.alphas, *unrolled])
        d_alpha, d_w = grads[: len(self.alphas)], grads[len(self.alphas) :]

        # Finite-difference Hessian-vector product ∇²α,w L_train(w, α) · ∇w' L_val.
        # (No host sync on the norm: when it is 0, w± = w and the product is exactly 0.)
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in d_w]))
        r = 0.01 / norm.clamp_min(1e-12)
        with torch.no_grad():
            w_plus = [w + r * v for w, v in zip(weights, d_w)]
            w_minus = [w - r * v for w, v in zip(weights, d_w)]
        g_plus = self._fill(
            torch.autograd.grad(self._loss(x_w, y_w, dict(zip(names, w_plus))), self.alphas, allow_unused=True)
        )
        g_minus = self._fill(
            torch.autograd.grad(self._loss(x_w, y_w, dict(zip(names, w_minus))), self.alphas, allow_unused=True)
        )
        difference = self._reduce([gp - gm for gp, gm in zip(g_plus, g_minus)], self.alphas)
        out = [da - eta * d / (2 * r) for da, d in zip(d_alpha, difference)]
        return out, val_loss.detach()

    def _loss(self, x: Tensor, y: Tensor, weights: dict[str, Tensor] | None = None) -> Tensor:
        """Cross-entropy of the model at ``weights`` (default: its own), on copies of its buffers."""
        state = {name: b.clone() for name, b in self.model.named_buffers()}
        if weights:
            state.update(weights)
        # functional_call swaps the clones in and back, but a module reachable under several names (a pool-BN
        # shared between edges) is left holding a clone (PyTorch #164759): its running statistics would then
        # absorb α-half batches. Put every module's own buffer objects back, whatever functional_call left.
        owned = [(module, dict(module._buffers)) for module in self.model.modules()]
        try:
            logits = functional_call(self.model, state, (x,))
        finally:
            for module, buffers in owned:
                module._buffers.update(buffers)
        if self.parallel is None:
            return F.cross_entropy(logits, y)
        return self.parallel.loss(logits, y)[0]

    def _named_weights(self) -> tuple[list[str], list[Tensor]]:
        by_id = {id(p): name for name, p in self.model.named_parameters()}
        alpha_ids = {id(a) for a in self.alphas}
        names: list[str] = []
        weights: list[Tensor] = []
        for p in self.model.weight_parameters():
            if id(p) in alpha_ids:
                raise ValueError("model.weight_parameters() contains an architecture parameter")
            if id(p) not in by_id:
                raise ValueError("a tensor from model.weight_parameters() is not a registered parameter of the model")
            names.append(by_id[id(p)])
            weights.append(p)
        return names, weights

    def _fill(self, grads: Sequence[Tensor | None], like: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Detached gradients, zeros for a tensor of ``like`` (default: α) the loss does not touch (None)."""
        return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(like or self.alphas, grads)]

    def _reduce(self, grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
        """``_fill``, then summed over the data-parallel ranks."""
        filled = self._fill(grads, like)
        return filled if self.parallel is None else self.parallel.reduce_gradients(filled, like)

    @staticmethod
    def _momentum_buffer(optimizer: torch.optim.Optimizer | None, p: Tensor) -> Tensor | None:
        if optimizer is None:
            return None
        return optimizer.state.get(p, {}).get("momentum_buffer")
