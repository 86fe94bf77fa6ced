"""MAML (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks") for RL,
with a TRPO outer step (the paper's, garage's ``MAMLTRPO``, ProMP's ``TRPOMAML``) or a PPO one.

One iteration on a meta-batch of ``N`` tasks:

1. *pre-update*: ``trials_per_task`` trials of ``exploration_episodes`` episodes per task with the
   meta-parameters θ (the task repeated in one ``collect`` call: garage/ProMP's rollouts per task);
2. *inner steps*: ``inner_steps`` policy-gradient steps per adaptation, with advantages from a linear
   feature baseline (Duan et al. 2016; rllab/garage/ProMP ``LinearFeatureBaseline``) fitted on that
   adaptation's data: ``θ'_i = θ - inner_lr · ∇ L_inner_i``, kept differentiable in θ
   (``create_graph=True``). ``inner_batch: task`` (ProMP, garage) adapts once per task on all its trials
   pooled, the baseline fitted over all of them; ``inner_batch: trial`` adapts once per trial on that
   trial alone, as the harness's default evaluation adapts on one trial's exploration episodes;
3. *post-update*: ``trials_per_task`` trials per task with the adapted parameters (detached: sampling only);
4. *outer step* on the post-update data as a function of θ through the inner steps: TRPO (conjugate
   gradient on the Hessian of the KL through the inner steps, factored as ``Jᵀ F J`` where the step
   linearises, ``meta_linearisation``; backtracking line search) or PPO's clipped surrogate with Adam,
   recomputing the adaptation at every step.

``adapt`` (evaluation) takes one inner step per row of the exploration batch on all of that row's
episodes, however many there are: ProMP adapts on 20 rollouts per task, which a suite asks for with
``evaluation.exploration_episodes``. **All inner steps reuse the same data**, at training and at
evaluation (garage re-sampled between inner steps at training time and could take only one step at
test time, issue #2309). Steps after the first are then off-policy; the ``likelihood_ratio`` inner
objective weights them by ``π_φ(a)/π_θ(a)`` (ProMP's LVC objective), while ``log_likelihood`` (garage,
ProMP's MAML default) ignores it.

Actions: with ``action_normalization_scale`` (ProMP's ``normalize(env)`` wrapper, scale 10) the policy's
Gaussian lives in ``[-scale, scale]`` per dimension; ``act`` maps each sample affinely onto the family's
``Box`` bounds and clips it there, which is the action the environment gets and the ``TrialBatch``
stores. Log-probabilities are of the policy's own pre-clip samples, which the policy keeps from its last
trial (``MAMLPolicy.in_policy_units``), as ProMP's sampler kept the policy's action and left the rescaling
to the environment.

Batching: per-task parameters are stacked (``[N, ...]`` per tensor) and the policy runs on every task
at once through ``torch.func.vmap`` over ``torch.func.functional_call``. The per-task inner gradients
come from one backward pass w.r.t. θ expanded to ``[N, ...]`` (task ``i``'s loss depends only on row
``i``). Adapted parameters live in explicit dicts; adaptation never overwrites the module's parameters
(garage issue #1269) — only the outer step does. The policy as a function of such dicts, and the policy
object that acts with them, are in ``algorithms.maml_policy``; the TRPO step in ``algorithms.trpo``.

Randomness: a policy draws its action noise from the generator it was built with — the learner's
training generator for training, the evaluation's own for ``exploration_policy(generator)`` — and
``adapt`` (which draws nothing) hands that generator on to the adapted policy, so evaluating never
advances the training generator (``algorithms/base.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.action_maps import ActionNormalization
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check, check_choices
from algorithms.common import build_seeded, learner_state, load_learner_state, tensor_on, torch_seeds
from algorithms.maml_policy import (
    MAMLPolicy,
    Params,
    PolicyNet,
    log_prob_from,
    log_prob_of,
    outputs_and_tangents,
    policy_outputs,
    stack,
)
from algorithms.ppo import (
    clipped_surrogate,
    episode_cuts,
    fit_linear_baseline,
    gae,
    normalise_advantages,
    steps_since_start,
)
from algorithms.trpo import Linearisation, trpo_step

OuterStep = Literal["trpo", "ppo"]
InnerObjective = Literal["log_likelihood", "likelihood_ratio"]
InnerBatch = Literal["task", "trial"]


@dataclass(frozen=True)
class Config:
    """MAML hyperparameters; defaults are ProMP's MuJoCo TRPO-MAML settings except where ``presets`` say."""

    hidden_sizes: tuple[int, ...] = field(default=(64, 64), metadata={"doc": "units of the tanh hidden layers"})
    init_std: float = field(
        default=1.0, metadata={"doc": "initial std of Gaussian actions (learned), in the policy's units: with "
                                      "action_normalization_scale s, init_std/s of the half-range of the bounds"}
    )
    action_normalization_scale: float | None = field(
        default=None,
        metadata={"doc": "ProMP's normalize(env) wrapper: the policy acts in [-s, s] per dimension, mapped "
                         "affinely onto the family's Box bounds and clipped to them (ProMP: 10). None: the "
                         "policy's samples go to the environment as they are, unclipped"},
    )
    exploration_episodes: int = field(
        default=1, metadata={"doc": "episodes of one training trial (pre- and post-update), and the episodes "
                                    "evaluation adapts on unless the suite's evaluation.exploration_episodes says"}
    )
    trials_per_task: int = field(
        default=1, metadata={"doc": "trials of exploration_episodes episodes per meta-batch task at training "
                                    "(the sampler then holds tasks × trials envs)"}
    )
    inner_batch: InnerBatch = field(
        default="task",
        metadata={"doc": "'task': one adaptation per task on all its trials pooled, the baseline fitted and "
                         "advantages normalised over all of them (ProMP, garage); 'trial': one adaptation per "
                         "trial on that trial alone (the harness's default evaluation adapts on one trial)"},
    )
    inner_lr: float = field(default=0.1, metadata={"doc": "step size of the inner policy-gradient steps"})
    inner_steps: int = field(default=1, metadata={"doc": "inner gradient steps, all on the same exploration data"})
    inner_objective: InnerObjective = field(
        default="log_likelihood",
        metadata={"doc": "'log_likelihood' (mean log π·A; garage, ProMP MAML) or 'likelihood_ratio' "
                         "(mean π/π_sampling·A; ProMP's LVC, importance-weights steps after the first)"},
    )
    outer: OuterStep = field(default="trpo", metadata={"doc": "outer step: 'trpo' or 'ppo'"})
    max_kl: float = field(default=0.01, metadata={"doc": "TRPO trust region: mean KL(old ‖ new), post-update"})
    cg_iters: int = field(default=10, metadata={"doc": "conjugate-gradient iterations"})
    cg_damping: float = field(default=1e-5, metadata={"doc": "added to the KL Hessian's diagonal (garage reg_coeff)"})
    backtrack_ratio: float = field(default=0.8, metadata={"doc": "line-search step shrink factor"})
    max_backtracks: int = field(default=15, metadata={"doc": "step sizes tried by the line search before reverting"})
    # PPO outer step: ProMP's run_scripts/pro-mp_run_mujoco.py (learning_rate, num_promp_steps, clip_eps).
    ppo_lr: float = field(default=1e-3, metadata={"doc": "Adam learning rate of the PPO outer step"})
    ppo_epochs: int = field(default=5, metadata={"doc": "PPO outer steps per batch, each re-adapting"})
    ppo_clip: float = field(default=0.3, metadata={"doc": "PPO ratio clip"})
    discount: float = field(default=0.99, metadata={"doc": "γ within an episode"})
    gae_lambda: float = field(default=1.0, metadata={"doc": "GAE λ over the linear baseline"})
    normalise_advantages: bool = field(default=True, metadata={"doc": "standardise advantages per task (ProMP)"})
    baseline_reg: float = field(default=1e-5, metadata={"doc": "ridge coefficient of the linear baseline fit"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # YAML gives lists
        check(all(h >= 1 for h in self.hidden_sizes), "hidden_sizes", "every layer needs >= 1 unit")
        for name in ("exploration_episodes", "trials_per_task", "inner_steps", "cg_iters", "max_backtracks",
                     "ppo_epochs"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("init_std", "inner_lr", "max_kl", "ppo_lr", "ppo_clip"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("cg_damping", "baseline_reg"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("discount", "gae_lambda"):
            check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        check(0 < self.backtrack_ratio < 1, "backtrack_ratio", "must be in (0, 1)")
        check_choices(self)
        scale = self.action_normalization_scale
        check(scale is None or (math.isfinite(scale) and scale > 0), "action_normalization_scale",
              "must be a finite number > 0, or null for raw actions")


# ProMP (Rothfuss et al. 2019), run_scripts/maml_run_mujoco.py: TRPO-MAML with MLP(64, 64) tanh, learned
# std (init 1), LinearFeatureBaseline, 20 rollouts per task pooled into one inner step (the baseline fitted
# per task over all 20, advantages normalised per task), γ 0.99, λ 1, inner lr 0.1, one inner step, step
# size (max KL) 0.01, and the env wrapped in normalize(env) (actions in ±10, rescaled to the bounds and
# clipped: the initial std is 0.1 in env units). Its meta-batch (40) is the suite's tasks_per_iteration;
# its paths are 100 steps (the suite's episode_steps). The 20 rollouts are 20 one-episode trials pooled
# per task (faster to sample than one 20-episode trial: 20× more environments per policy call). ProMP
# adapted on its 20 rollouts at test time too: evaluation.exploration_episodes 20 in a suite.
_PROMP_MUJOCO: dict[str, Any] = {
    "hidden_sizes": (64, 64), "init_std": 1.0, "action_normalization_scale": 10.0, "exploration_episodes": 1,
    "trials_per_task": 20, "inner_batch": "task", "inner_lr": 0.1, "inner_steps": 1,
    "inner_objective": "log_likelihood", "outer": "trpo", "max_kl": 0.01, "discount": 0.99, "gae_lambda": 1.0,
    "normalise_advantages": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # DESIGN.md §9, garage's MAML-TRPO on Meta-World: MLP(128, 128) tanh, inner lr 1e-4, γ 0.99, λ 1.0,
    # max KL 0.01, 10 rollouts per task pooled into one inner step (10 one-episode trials here), and its
    # MetaEvaluator adapted on 10 episodes (evaluation.exploration_episodes 10 in a suite). garage's
    # example scripts (examples/torch/maml_trpo_metaworld_ml10.py) differ: MLP(100, 100), inner lr 0.1.
    "metaworld": {"hidden_sizes": (128, 128), "inner_lr": 1e-4, "exploration_episodes": 1, "trials_per_task": 10,
                  "inner_batch": "task", "discount": 0.99, "gae_lambda": 1.0, "max_kl": 0.01, "outer": "trpo"},
    "halfcheetah_vel": _PROMP_MUJOCO,
    "halfcheetah_dir": _PROMP_MUJOCO,
    "ant_dir": _PROMP_MUJOCO,
    # Tuned here for point_nav (2 episodes per trial: adapt on 1) and bandits (tests/test_maml.py), adapting
    # on one trial as the harness's default evaluation does. On point_nav (100 tasks per iteration, 50
    # iterations) inner lr 0.05-0.1 and init std 0.5-1 adapt equally well (post-update -9.2 to -9.4 vs
    # pre-update -15); inner lr >= 0.3 or init std 0.25 fail. At equal env steps, 100 tasks × 1 trial,
    # 50 × 2 and 20 × 5 adapt about equally (-9.4 to -10.6).
    "cheap": {"hidden_sizes": (32, 32), "init_std": 0.5, "exploration_episodes": 1, "trials_per_task": 1,
              "inner_batch": "trial", "inner_lr": 0.1, "discount": 0.99, "gae_lambda": 1.0, "max_kl": 0.01},
}


# --- advantages: the linear feature baseline ------------------------------------------------------


def baseline_features(obs: Tensor, step: Tensor) -> Tensor:
    """rllab/garage ``LinearFeatureBaseline`` features ``[obs, obs², t, t², t³, 1]`` with ``t = step / 100``
    and observations clipped to ±10.

    Args:
        obs: ``[N, T, obs_dim]``.
        step: ``[N, T]``, step index within the episode.

    Returns:
        ``[N, T, 2 * obs_dim + 4]``.
    """
    obs = obs.clamp(-10.0, 10.0)
    t = (step.to(obs.dtype) / 100.0).unsqueeze(-1)
    return torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def compute_advantages(batch: TrialBatch, discount: float, gae_lambda: float, reg: float,
                       normalise: bool, device: torch.device | str = "cpu") -> Tensor:
    """``[N, T]`` GAE advantages over a linear feature baseline fit on each row's returns, on ``device``.

    A row is one adaptation's data: a trial, or all of a task's trials (``pool_trials``), over which the
    baseline is then fitted and the advantages standardised, as ProMP's ``MetaSampleProcessor`` does per
    task over its 20 rollouts.

    Episodes are independent for MAML (no memory): returns and GAE stop at every episode end, and the
    baseline's time feature restarts at every episode start. Padding is zero.
    """
    tensor = tensor_on(device)
    rewards = tensor(batch.rewards)
    mask = tensor(batch.valid).to(rewards.dtype)
    cut = tensor(episode_cuts(batch.valid, batch.episode_end))
    returns, _ = gae(rewards, torch.zeros_like(rewards), cut, discount, 1.0)  # discounted reward-to-go
    features = baseline_features(tensor(batch.obs).flatten(2), tensor(steps_since_start(batch.episode_start)))
    weights = fit_linear_baseline(features, returns, mask, reg)
    values = (features @ weights.unsqueeze(-1)).squeeze(-1) * mask
    advantages, _ = gae(rewards, values, cut, discount, gae_lambda)
    if normalise:  # per task, as ProMP's MetaSampleProcessor
        advantages = normalise_advantages(advantages, mask, per_row=True)
    return advantages * mask


def pool_trials(batch: TrialBatch, trials: int) -> TrialBatch:
    """Each run of ``trials`` consecutive rows (trials of one task) as one row: ``[N·k, T]`` → ``[N, k·T]``.

    MAML has no memory, so a task's trials side by side are one longer row of episodes: the baseline
    fit, the advantage normalisation and the inner step of ``compute_advantages``/``inner_loss`` then
    run over all of the task's episodes (ProMP's and garage's per-task batch). Episode indices are
    renumbered along the pooled row; padding stays padding where it was.

    Raises:
        ValueError: the rows do not divide into runs of ``trials`` rows of one task each.
    """
    if trials == 1:
        return batch
    rows = batch.valid.shape[0]
    if rows % trials:
        raise ValueError(f"{rows} trials do not divide into tasks of {trials} trials")
    tasks, episodes = rows // trials, batch.episode_returns.shape[1]
    ids = np.array(batch.task_ids, dtype=object).reshape(tasks, trials)
    if (ids != ids[:, :1]).any():
        raise ValueError("pooled trials must be consecutive rows of one task each")

    def pooled(array: np.ndarray) -> np.ndarray:  # row g·k + j, step t → row g, step j·T + t
        return array.reshape(tasks, trials * array.shape[1], *array.shape[2:])

    offset = (np.arange(rows) % trials * episodes)[:, None]
    return TrialBatch(
        obs=pooled(batch.obs), actions=pooled(batch.actions), rewards=pooled(batch.rewards),
        episode_start=pooled(batch.episode_start), episode_end=pooled(batch.episode_end),
        terminated=pooled(batch.terminated), episode_index=pooled(batch.episode_index + offset),
        valid=pooled(batch.valid), success=pooled(batch.success), episode_returns=pooled(batch.episode_returns),
        episode_lengths=pooled(batch.episode_lengths), episode_success=pooled(batch.episode_success),
        task_ids=[str(i) for i in ids[:, 0]],
    )


@dataclass
class Rollouts:
    """One adaptation's data per row (a trial, or a task's trials pooled), as the losses read it. Tensors
    are ``[N, T, ...]``.

    Attributes:
        obs: ``[N, T, obs_dim]``.
        actions: ``[N, T]`` int64 or ``[N, T, A]``.
        mask: ``[N, T]``, 1 on valid steps.
        advantages: ``[N, T]``.
        log_prob: ``[N, T]``, log-probabilities under the parameters that sampled the actions.
        out: ``[N, T, A]``, the sampling distribution's mean or logits (for the KL).
        log_std: ``[N, 1, A]``, its log-std (``None`` if discrete).
    """

    obs: Tensor
    actions: Tensor
    mask: Tensor
    advantages: Tensor
    log_prob: Tensor
    out: Tensor
    log_std: Tensor | None


def to_rollouts(net: PolicyNet, batch: TrialBatch, params: Params, config: Config) -> Rollouts:
    """``batch`` as the losses read it: tensors, advantages, and the outputs of the stacked per-row
    parameters ``params`` that sampled it; on the device of ``params``.

    A row is one adaptation's data: a trial, or a task's trials pooled (``pool_trials``). The batch's
    actions are in the policy's units (``MAMLPolicy.in_policy_units``): the log-probabilities are of them.
    """
    device = next(iter(params.values())).device
    obs = torch.from_numpy(batch.obs).flatten(2).to(device)
    actions = torch.from_numpy(batch.actions).to(device)
    with torch.no_grad():
        out, log_std = policy_outputs(net, params, obs)
        log_prob = log_prob_from(out, log_std, actions)
    advantages = compute_advantages(batch, config.discount, config.gae_lambda, config.baseline_reg,
                                    config.normalise_advantages, device)
    valid = torch.from_numpy(batch.valid).to(device).float()
    return Rollouts(obs, actions, valid, advantages, log_prob, out, log_std)


# --- losses --------------------------------------------------------------------------------------


def inner_loss(log_prob: Tensor, sampling_log_prob: Tensor, advantages: Tensor, mask: Tensor,
               objective: InnerObjective) -> dict[str, Tensor]:
    """The inner policy-gradient loss, summed over tasks of each task's mean over its valid steps.

    The sum (not the mean) over tasks makes its gradient w.r.t. stacked per-task parameters each
    task's own gradient. Both objectives have the vanilla policy gradient at the sampling parameters;
    ``likelihood_ratio`` also has ProMP's low-variance curvature and importance-weights later steps.

    Args:
        log_prob: ``[N, T]``, under the parameters being adapted (differentiable).
        sampling_log_prob: ``[N, T]``, under the parameters that sampled the data (constant).
        advantages, mask: ``[N, T]``.
        objective: an ``InnerObjective``.
    """
    if objective == "log_likelihood":
        weight = log_prob
    else:  # padding is masked before exp: an overflow there would turn the zero gradient into NaN
        weight = torch.where(mask > 0, log_prob - sampling_log_prob, 0.0).exp()
    per_task = (weight * advantages * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return {"loss_inner": -per_task.sum()}


def row_mean(x: Tensor, mask: Tensor) -> Tensor:
    """The mean over rows of each row's mean over its valid steps (``x``, ``mask`` ``[N, T]``): every task
    weighs the same however long its episodes ran (ProMP's and garage's outer objective and KL)."""
    return ((x * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()


def surrogate_loss(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """TRPO's surrogate ``-mean(π/π_old · A)`` (Schulman et al. 2015), per row over its valid steps, then
    over rows; inputs ``[N, T]``."""
    return {"loss_surrogate": -row_mean((log_prob - old_log_prob).exp() * advantages, mask)}


def mean_kl(old_out: Tensor, old_log_std: Tensor | None, out: Tensor, log_std: Tensor | None,
            mask: Tensor) -> Tensor:
    """Mean (per row over its valid steps, ``mask`` ``[N, T]``, then over rows) of ``KL(old ‖ new)``
    between categorical (``log_std`` ``None``) or diagonal Gaussian action distributions, summed over
    action dimensions."""
    if log_std is None or old_log_std is None:
        old_log_p = old_out.log_softmax(-1)
        kl = (old_log_p.exp() * (old_log_p - out.log_softmax(-1))).sum(-1)
    else:
        kl = (log_std - old_log_std + ((2 * old_log_std).exp() + (old_out - out) ** 2) / (2 * (2 * log_std).exp())
              - 0.5).sum(-1)
    return row_mean(kl, mask)


def adapt_parameters(net: PolicyNet, params: Params, data: Rollouts, config: Config,
                     create_graph: bool) -> list[Params]:
    """``config.inner_steps`` inner policy-gradient steps per task, all on ``data``.

    Args:
        net: the architecture.
        params: stacked per-task starting parameters, ``[N, ...]`` per tensor.
        data: the exploration trials, one row per task.
        config: ``inner_lr``, ``inner_steps`` and ``inner_objective``.
        create_graph: keep the steps differentiable w.r.t. ``params`` (for the meta-gradient); else
            every step's result is a fresh leaf.

    Returns:
        The parameters after each step (``inner_steps`` dicts; the last is the adapted one).
    """
    trajectory = []
    with torch.enable_grad():
        for _ in range(config.inner_steps):
            if not create_graph:
                params = {k: v.detach().requires_grad_() for k, v in params.items()}
            grads = inner_gradient(net, params, data, config, create_graph)
            params = {k: v - config.inner_lr * g for (k, v), g in zip(params.items(), grads, strict=True)}
            trajectory.append(params if create_graph else {k: v.detach() for k, v in params.items()})
    return trajectory


def inner_gradient(net: PolicyNet, params: Params, data: Rollouts, config: Config,
                   create_graph: bool) -> tuple[Tensor, ...]:
    """Each task's gradient of its inner loss at stacked ``params`` (in their order), ``[N, ...]`` each
    (``params`` must require gradients)."""
    with torch.enable_grad():
        log_prob = log_prob_of(net, params, data.obs, data.actions)
        loss = inner_loss(log_prob, data.log_prob, data.advantages, data.mask, config.inner_objective)
        return torch.autograd.grad(loss["loss_inner"], list(params.values()), create_graph=create_graph)


def meta_objective(net: PolicyNet, theta: Params, pre: Rollouts, post: Rollouts, config: Config,
                   create_graph: bool) -> dict[str, Tensor]:
    """The TRPO outer objective as a function of θ through the inner steps.

    Args:
        theta: the meta-parameters (unstacked).
        pre: pre-update trials (the inner steps' data), one row per task.
        post: post-update trials, sampled by the adapted parameters; ``post.log_prob``, ``post.out``
            and ``post.log_std`` are the old post-update policy's.
        create_graph: differentiable w.r.t. θ (for gradients and Hessian-vector products).

    Returns:
        ``loss_surrogate`` and ``kl`` (mean KL(old post-update policy ‖ post-update policy from θ)).
    """
    adapted = adapt_parameters(net, stack(theta, pre.obs.shape[0]), pre, config, create_graph)[-1]
    with torch.set_grad_enabled(create_graph):
        out, log_std = policy_outputs(net, adapted, post.obs)
        log_prob = log_prob_from(out, log_std, post.actions)
        terms = surrogate_loss(log_prob, post.log_prob, post.advantages, post.mask)
        terms["kl"] = mean_kl(post.out, post.log_std, out, log_std, post.mask)
    return terms


# --- the TRPO outer step's linearisation ---------------------------------------------------------


@torch.enable_grad()
def meta_linearisation(net: PolicyNet, theta: Params, pre: Rollouts, post: Rollouts,
                       config: Config) -> Linearisation:
    """``meta_objective``'s linearisation at θ (the parameters that sampled ``post``), its KL Hessian factored.

    At that θ the post-update policies are the old ones: the KL is at its minimum (zero, with zero
    gradient), so its Hessian through the inner steps is ``(1/N) Σ_i J_iᵀ F_i J_i``, with ``J_i = ∂θ'_i/∂θ``
    (a product of ``I − α ∇²L_inner``, symmetric factors) and ``F_i`` the Fisher matrix of task ``i``'s
    post-update policy. Autograd's Hessian adds ``∇_θ' KL · ∂²θ'/∂θ²``, which vanishes with the KL's
    gradient, but computes it by a third-order backward through the inner steps. Here a product costs two
    inner-Hessian products (backward through the inner gradients' graph, built once) and a Fisher product
    on the post-update data (``outputs_and_tangents``, then one backward): ~0.6× the time at the
    ProMP preset (issue 19; tests/test_maml_speed.py checks it against ``autograd_linearisation``).
    """
    rows = pre.obs.shape[0]
    params = {k: v.detach().unsqueeze(0).expand(rows, *v.shape).clone().requires_grad_() for k, v in theta.items()}
    points: list[list[Tensor]] = []  # θ_{k-1} and the inner gradient there, per inner step k
    gradients: list[tuple[Tensor, ...]] = []
    for _ in range(config.inner_steps):
        grads = inner_gradient(net, params, pre, config, create_graph=True)
        points.append(list(params.values()))
        gradients.append(grads)
        params = {k: v - config.inner_lr * g for (k, v), g in zip(params.items(), grads, strict=True)}

    def jacobian(w: list[Tensor], transpose: bool) -> list[Tensor]:
        """``J w`` (``Jᵀ w`` with ``transpose``) per task: the inner steps' factors in order (reversed)."""
        steps = list(zip(points, gradients, strict=True))
        for point, grads in reversed(steps) if transpose else steps:
            hw = torch.autograd.grad(grads, point, grad_outputs=w, retain_graph=True, allow_unused=True)
            w = [x - config.inner_lr * h if h is not None else x for x, h in zip(w, hw, strict=True)]
        return w

    adapted = {k: v.detach().requires_grad_() for k, v in params.items()}
    out, output_tangent = outputs_and_tangents(net, adapted, post.obs)
    log_std = None if net.discrete else adapted["log_std"].unsqueeze(1)
    loss = surrogate_loss(log_prob_from(out, log_std, post.actions), post.log_prob, post.advantages, post.mask)
    loss_grads = torch.autograd.grad(loss["loss_surrogate"], list(adapted.values()), retain_graph=True)
    names = list(theta)

    def flat(per_task: list[Tensor]) -> Tensor:  # summed over tasks: θ is every task's starting point
        return torch.cat([t.sum(0).reshape(-1) for t in per_task])

    # The KL's second derivatives at the old outputs: 1/σ² on the mean and 2 on each log σ (Gaussian), or
    # diag(p) − ppᵀ on the logits (categorical), weighted as mean_kl weighs each step.
    weight = (post.mask / post.mask.sum(1, keepdim=True).clamp_min(1.0) / rows).unsqueeze(-1)  # [N, T, 1]
    if log_std is None:
        p = out.detach().softmax(-1)

        def curvature(r: Tensor) -> Tensor:
            return weight * p * (r - (p * r).sum(-1, keepdim=True))
    else:
        inverse_variance = (-2.0 * log_std.detach()).exp()  # [N, 1, A]

        def curvature(r: Tensor) -> Tensor:
            return weight * inverse_variance * r

    def fisher(u: list[Tensor]) -> list[Tensor]:
        tangents = dict(zip(names, u, strict=True))
        fu = torch.autograd.grad(out, list(adapted.values()), grad_outputs=curvature(output_tangent(tangents)),
                                 retain_graph=True, allow_unused=True)
        result = [torch.zeros_like(x) if g is None else g for x, g in zip(u, fu, strict=True)]
        if log_std is not None:
            i = names.index("log_std")
            result[i] = result[i] + 2.0 * weight.sum(1) * tangents["log_std"]
        return result

    sizes = [v.numel() for v in theta.values()]

    def hessian_vector(v: Tensor) -> Tensor:
        w = [part.view_as(t).expand(rows, *t.shape) for part, t in zip(v.split(sizes), theta.values(), strict=True)]
        return flat(jacobian(fisher(jacobian(w, transpose=False)), transpose=True))

    return Linearisation(float(loss["loss_surrogate"].detach()), flat(jacobian(list(loss_grads), transpose=True)),
                         hessian_vector)


# --- the learner ---------------------------------------------------------------------------------


class MAML:
    """MAML with a TRPO or PPO outer step; see the module docstring.

    The network, the inner steps and the outer step run on ``device``; acting stays on the CPU
    (``acts_on``: an MLP over a batch of ~20 observations per env step is launch-latency bound on a GPU),
    with CPU copies of the meta-parameters or of the adapted ones (on a CPU device: the parameters
    themselves).
    """

    name = "maml"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    @staticmethod
    def acts_on(config: Config) -> devices.Acting:
        """Where acting runs (``algorithms.device``): one small MLP forward per env step, faster on the CPU
        (README, "Throughput and GPUs")."""
        return "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        # No check of exploration_episodes against env.episodes_per_trial: training trials are
        # exploration_episodes long whatever the family's trials, and the evaluation protocol (which may
        # set its own trial length and exploration episodes) is validated with the suite (harness.spec).
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        self.exploration_episodes: int | None = config.exploration_episodes
        self.samples_own_tasks = False
        scale = config.action_normalization_scale
        self.action_map = None if scale is None else ActionNormalization.of(env.action_space, scale)
        obs_dim = int(np.prod(env.observation_space.shape))
        seeds = torch_seeds(seed)
        self.net = build_seeded(next(seeds), lambda: PolicyNet(obs_dim, env.action_space, config.hidden_sizes,
                                                               config.init_std)).to(self.device)
        self.acting_device = devices.acting_device(self.device, self.acts_on(config))  # where its policies act
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.ppo_lr)  # the PPO outer step's
        self.generator = torch.Generator().manual_seed(next(seeds))
        self.iterations = 0

    def _theta(self) -> Params:
        return dict(self.net.named_parameters())

    def _policy(self, params: Params, stacked: bool, generator: torch.Generator, explores: bool = False
                ) -> MAMLPolicy:  # fmt: skip
        """A policy acting with ``params`` where the learner acts: themselves if they live there, else copies."""
        acting = devices.acting_tensors(params, self.device, self.acting_device)
        return MAMLPolicy(self.net, acting, stacked, generator, explores, self.action_map)

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        """θ's policy, drawing from ``generator`` (``None``: the learner's training generator)."""
        return self._policy(self._theta(), False, self.generator if generator is None else generator, explores=True)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        """Run the inner steps from ``policy``'s parameters on each row of ``exploration`` (one row per task,
        all its episodes: any number), all steps on that same data; returns a policy for those tasks, in
        that order, drawing from ``policy``'s generator. Touches neither the learner nor ``policy`` and
        draws nothing itself."""
        if not isinstance(policy, MAMLPolicy):
            raise TypeError(f"MAML adapts its own policies, not {type(policy).__name__}")
        start = {k: v.detach().to(self.device) for k, v in policy.params.items()}
        if not policy.stacked:
            start = stack(start, exploration.num_tasks)
        data = to_rollouts(self.net, policy.in_policy_units(exploration), start, self.config)
        adapted = adapt_parameters(self.net, start, data, self.config, create_graph=False)[-1]
        return self._policy(adapted, True, policy.generator)

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        pre, post, returns = self.collect_meta_batch(sampler, tasks)
        logs = self.outer_step(pre, post)
        self.iterations += 1
        logs.update(returns)
        if not self.net.discrete:  # in env units where the actions are rescaled
            std = self.net.log_std.detach().exp().cpu().numpy()
            logs["action_std"] = float((std if self.action_map is None else std * self.action_map.gain).mean())
        return logs

    def collect_meta_batch(self, sampler: Sampler,
                           tasks: Sequence[Task]) -> tuple[Rollouts, Rollouts, dict[str, float]]:
        """One iteration's data: pre-update trials with θ, the inner steps on them, post-update trials with
        the adapted parameters. Returns ``(pre, post)`` as the outer step reads them (one row per
        adaptation) and their mean episode returns (``pre_update_return``, ``post_update_return``)."""
        cfg = self.config
        rows = [task for task in tasks for _ in range(cfg.trials_per_task)]  # a task's trials are consecutive
        pooled = cfg.trials_per_task if cfg.inner_batch == "task" else 1  # trials per adaptation
        adaptations = len(rows) // pooled
        theta = stack({name: v.detach() for name, v in self._theta().items()}, adaptations)
        explore = self.exploration_policy()
        pre_batch = sampler.collect(explore, rows, cfg.exploration_episodes)
        pre = to_rollouts(self.net, pool_trials(explore.in_policy_units(pre_batch), pooled), theta, cfg)
        adapted = adapt_parameters(self.net, theta, pre, cfg, create_graph=False)[-1]
        # Each adaptation's parameters act on each of its trials.
        per_row = {k: v.repeat_interleave(pooled, dim=0) for k, v in adapted.items()} if pooled > 1 else adapted
        post_policy = self._policy(per_row, True, self.generator)
        post_batch = sampler.collect(post_policy, rows, cfg.exploration_episodes)
        post = to_rollouts(self.net, pool_trials(post_policy.in_policy_units(post_batch), pooled), adapted, cfg)
        return pre, post, {"pre_update_return": float(pre_batch.episode_returns.mean()),
                           "post_update_return": float(post_batch.episode_returns.mean())}

    def outer_step(self, pre: Rollouts, post: Rollouts) -> dict[str, float]:
        """The outer step on θ, in place, from ``collect_meta_batch``'s data sampled with the current θ:
        TRPO through the inner steps (the KL's Hessian factored, ``meta_linearisation``) or PPO."""
        cfg = self.config

        def objective(create_graph: bool) -> dict[str, Tensor]:
            return meta_objective(self.net, self._theta(), pre, post, cfg, create_graph)

        parameters = list(self.net.parameters())
        if cfg.outer == "trpo":
            return trpo_step(parameters, objective, cfg.max_kl, cfg.cg_iters, cfg.cg_damping, cfg.backtrack_ratio,
                             cfg.max_backtracks, lambda: meta_linearisation(self.net, self._theta(), pre, post, cfg))
        logs = self._ppo_outer_step(pre, post, parameters)
        after = objective(False)
        logs.update(loss_surrogate_after=float(after["loss_surrogate"]), kl=float(after["kl"]))
        return logs

    def _ppo_outer_step(self, pre: Rollouts, post: Rollouts, parameters: list[nn.Parameter]) -> dict[str, float]:
        """``ppo_epochs`` Adam steps on the clipped surrogate (ProMP's, without its inner-step KL
        penalty), each re-adapting from the current θ."""
        cfg = self.config
        logs: dict[str, float] = {}
        for _ in range(cfg.ppo_epochs):
            adapted = adapt_parameters(self.net, stack(self._theta(), pre.obs.shape[0]), pre, cfg,
                                       create_graph=True)[-1]
            log_prob = log_prob_of(self.net, adapted, post.obs, post.actions)
            terms = clipped_surrogate(log_prob, post.log_prob, post.advantages, post.mask, cfg.ppo_clip)
            loss = terms["loss_policy"]
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            logs.setdefault("loss_surrogate_before", float(loss.detach()))  # the clip is inactive at the first step
            logs.update(approx_kl=float(terms["approx_kl"]), clip_fraction=float(terms["clip_fraction"]))
        return logs

    def state_dict(self) -> dict[str, Any]:
        return learner_state(self.config, self.net, self.generator, self.iterations, optimiser=self.optimiser)

    def load_state_dict(self, state: dict[str, Any]) -> None:  # no acting copy: policies copy θ when built
        self.iterations = load_learner_state(state, self.net, None, self.generator, optimiser=self.optimiser)
