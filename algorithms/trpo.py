"""TRPO's step (Schulman et al. 2015), for any objective that gives a surrogate loss and a KL: the natural
direction by conjugate gradient on the KL's Hessian, scaled to the trust region, then a backtracking line
search (garage's ``ConjugateGradientOptimizer``). MAML's outer step supplies a faster linearisation of its
own (``algorithms.maml.meta_linearisation``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int,
                       residual_tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given ``x ↦ A x``.

    Returns:
        ``(x, A x)``: ``A x = Σ_k α_k A p_k`` accumulates the products the iterations computed (``A`` is
        linear), which spares TRPO one more product for the step's curvature ``xᵀAx`` (issue 19).
    """
    x, ax = torch.zeros_like(b), torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap + 1e-12)
        x += alpha * p
        ax += alpha * ap
        r -= alpha * ap
        rr_next = r @ r
        p = r + (rr_next / rr) * p
        rr = rr_next
    return x, ax


@dataclass
class Linearisation:
    """What TRPO's direction needs at the current parameters (flat, in ``parameters`` order).

    Attributes:
        loss: the surrogate's value.
        grad: its gradient ``[P]``.
        hessian_vector: ``v ↦ H v``, ``H`` the KL's Hessian (without damping).
    """

    loss: float
    grad: Tensor
    hessian_vector: Callable[[Tensor], Tensor]


def autograd_linearisation(parameters: list[nn.Parameter], terms: dict[str, Tensor]) -> Linearisation:
    """Any objective's: gradients by backward, ``H v`` by a second backward through the KL's gradient."""
    grads = parameters_to_vector(torch.autograd.grad(terms["loss_surrogate"], parameters, retain_graph=True))
    kl_grads = parameters_to_vector(torch.autograd.grad(terms["kl"], parameters, create_graph=True))

    def hessian_vector(v: Tensor) -> Tensor:
        return parameters_to_vector(torch.autograd.grad(kl_grads @ v, parameters, retain_graph=True)).detach()

    return Linearisation(float(terms["loss_surrogate"].detach()), grads.detach(), hessian_vector)


def _natural_step(linear: Linearisation, max_kl: float, cg_iters: int, cg_damping: float) -> Tensor:
    """The trust-region step at the KL bound: ``s ∝ (H + damping·I)⁻¹(−g)`` with ``½ sᵀ(H + damping·I)s = max_kl``."""

    def hessian_vector(v: Tensor) -> Tensor:
        return linear.hessian_vector(v) + cg_damping * v

    direction, h_direction = conjugate_gradient(hessian_vector, -linear.grad, cg_iters)
    return math.sqrt(2.0 * max_kl / (float(direction @ h_direction) + 1e-8)) * direction


def trpo_step(parameters: list[nn.Parameter], objective: Callable[[bool], dict[str, Tensor]], max_kl: float,
              cg_iters: int, cg_damping: float, backtrack_ratio: float, max_backtracks: int,
              linearise: Callable[[], Linearisation] | None = None) -> dict[str, float]:
    """One TRPO step (Schulman et al. 2015) on ``parameters``, in place.

    The direction solves ``(H + damping·I) s = -g`` by conjugate gradient, ``H`` the Hessian of the KL,
    scaled to the trust region ``½ sᵀHs = max_kl``. The line search shrinks it by ``backtrack_ratio``
    (``max_backtracks`` sizes in all) until the loss improves and the KL is within ``max_kl``; otherwise
    the parameters are restored (garage's ``ConjugateGradientOptimizer``).

    Args:
        parameters: updated in place.
        objective: ``create_graph ↦ {"loss_surrogate", "kl"}`` at the current parameters.
        linearise: the loss, its gradient and ``H v`` at the current parameters (``None``:
            ``autograd_linearisation`` of ``objective(True)``, Hessian-vector products by double backward).

    Returns:
        ``loss_surrogate_before/after``, ``kl`` (after), ``line_search_backtracks``, ``step_accepted``.
    """
    linear = autograd_linearisation(parameters, objective(True)) if linearise is None else linearise()
    loss_before, step = linear.loss, _natural_step(linear, max_kl, cg_iters, cg_damping)
    del linear  # the graphs behind its Hessian-vector products die here, before the line search
    old = parameters_to_vector(parameters).detach().clone()
    for backtracks in range(max_backtracks):
        vector_to_parameters(old + backtrack_ratio**backtracks * step, parameters)
        with torch.no_grad():  # the inner steps enable gradients for themselves
            after = objective(False)
        loss_after, kl = float(after["loss_surrogate"]), float(after["kl"])
        if math.isfinite(loss_after) and loss_after < loss_before and kl <= max_kl:
            return {"loss_surrogate_before": loss_before, "loss_surrogate_after": loss_after, "kl": kl,
                    "line_search_backtracks": float(backtracks), "step_accepted": 1.0}
    vector_to_parameters(old, parameters)
    return {"loss_surrogate_before": loss_before, "loss_surrogate_after": loss_before, "kl": 0.0,
            "line_search_backtracks": float(max_backtracks), "step_accepted": 0.0}
