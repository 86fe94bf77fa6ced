"""TrMRL (Melo, ICML 2022, "Transformers are Meta-Reinforcement Learners") with PPO.

The released implementation (a garage fork, DESIGN.md §9), layer by layer:

* each step's *working memory* is the augmented observation ``[o_t, a_{t-1}, r_{t-1}, done_{t-1}]``,
  embedded by one bias-free linear layer into ``d_model``, plus fixed sinusoidal positions;
* a causal window of the last ``working_memory`` steps, reset at every episode start;
* encoder blocks **without LayerNorm**: ``x + MHA(x)``, then ``x + FF(x)``, ReLU, dropout 0, with
  T-Fixup-style initialisation (``tfixup_scales``);
* a Gaussian policy head MLP(64, 64, tanh) on the last block's output at the current position, with a
  learnable state-independent log-std; a value MLP(64, 64, tanh) on the current augmented observation
  (separate) or on the transformer output (shared);
* PPO with the clipped objective only (no entropy bonus) and un-centred GAE advantages across the
  episodes of a trial; the policy's minibatch epochs, then the value's, each with its own AdamW on its
  own loss (with a shared value the value optimiser holds the transformer too); the value fitted to
  the trial's discounted Monte-Carlo return with a Gaussian likelihood (learned std); the released
  step-wise learning-rate decay (``lr_factor``);
* the first token of every episode is ``[o, 0, 0, 0]`` (the release's ``RL2Env.reset``).

Each of these is the paper presets' setting; ``Config`` keeps the alternatives (joint update,
standardised advantages, λ-returns with MSE, trial-spanning memory) as options, which the ``cheap``
preset uses.

Two attention modes:

``window`` (the paper's): at every step the model re-reads the last ``working_memory`` tokens with
positions ``0 .. n-1`` *relative to the window*, so a token's keys and values change as the window
slides: nothing past the first layer can be cached. Training gathers each step's window and runs all
windows of a minibatch as one batch (no backpropagation through time).

``sliding``: each token attends to itself and the ``working_memory - 1`` tokens before it, at
positions counted from the start of its memory span (the episode, or the trial with trial-spanning
memory). A token's per-layer keys and values then never change once computed, so sampling caches
them (``SlidingCache``) and runs one token per step; training runs whole trials with a banded causal
mask. Deeper layers see further back (receptive field ``layers * (working_memory - 1) + 1``), as in
sliding-window attention elsewhere (Transformer-XL, Mistral). While a memory span is no longer than
the window, the two modes compute the same function.
"""

from __future__ import annotations

import itertools
import math
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check
from algorithms.heads import StepInputs, action_distribution, augmented_observation, per_action, sample_action
from algorithms.ppo import gae, masked_mean, normalise_advantages, ppo_loss, ppo_update, trial_cuts

ATTENTION_MODES = ("window", "sliding")
MEMORY_SPANS = ("episode", "trial")
POLICY_INPUTS = ("latest_memory", "mixed_memory", "full_memory")


@dataclass(frozen=True)
class Config:
    """TrMRL hyperparameters; defaults are the paper's HalfCheetahVel settings (DESIGN.md §9)."""

    layers: int = field(default=4, metadata={"doc": "encoder blocks N"})
    heads: int = field(default=16, metadata={"doc": "attention heads"})
    d_model: int = field(default=128, metadata={"doc": "token width"})
    ff_size: int = field(default=512, metadata={"doc": "feed-forward hidden units"})
    working_memory: int = field(default=5, metadata={"doc": "attention window, in steps"})
    memory_span: str = field(
        default="episode",
        metadata={"doc": "where the window restarts: 'episode' (paper) or 'trial' (memory spans the trial's episodes)"},
    )
    attention: str = field(
        default="window",
        metadata={"doc": "'window' (paper: window re-read each step) or 'sliding' (KV-cached sliding window)"},
    )
    pre_ln: bool = field(default=False, metadata={"doc": "add pre-LayerNorm blocks (the paper has no LayerNorm)"})
    policy_input: str = field(
        default="latest_memory",
        metadata={"doc": "policy head input: 'latest_memory' (paper), 'mixed_memory' (+ current embedding), "
                         "'full_memory' (all window outputs; window attention only)"},
    )
    shared_value: bool = field(
        default=False, metadata={"doc": "value MLP on the transformer output (True) or on the current token (False)"}
    )
    init_std: float = field(default=0.2, metadata={"doc": "initial std of Gaussian actions"})
    output_gain: float = field(default=1.0, metadata={"doc": "Xavier gain of the policy head's output layer"})
    policy_lr: float = field(default=3e-5, metadata={"doc": "AdamW learning rate of the policy"})
    value_lr: float = field(default=2.5e-4, metadata={"doc": "AdamW learning rate of the value function"})
    lr_decay_start: int | None = field(
        default=None, metadata={"doc": "epoch (iteration) of the released step decay's first lr step (None: "
                                       "constant lr); epochs are counted in optimiser steps as released (lr_factor)"}
    )
    lr_decay_end: int | None = field(
        default=None, metadata={"doc": "epoch from which the lr stays at min_lr_factor (its last step is at end - 1)"}
    )
    min_lr_factor: float = field(default=0.1, metadata={"doc": "final lr as a fraction of the initial lr"})
    lr_decay_optimisers: Literal["policy", "policy_and_value"] = field(
        default="policy_and_value",
        metadata={"doc": "which optimisers the decay applies to (README launch commands: HalfCheetahVel 'policy', "
                         "HalfCheetahDir and AntDir 'policy_and_value')"},
    )
    discount: float = field(default=0.9, metadata={"doc": "γ over the whole trial"})
    gae_lambda: float = field(default=0.8, metadata={"doc": "GAE λ (across the episodes of a trial)"})
    clip: float = field(default=0.1, metadata={"doc": "PPO ratio clip"})
    epochs: int = field(default=10, metadata={"doc": "passes over each batch per iteration (policy's, value's)"})
    minibatch_size: int = field(
        default=256, metadata={"doc": "samples (env steps) per minibatch; sliding attention rounds to whole trials"}
    )
    entropy_coef: float = field(default=0.0, metadata={"doc": "entropy bonus (the paper: none)"})
    max_grad_norm: float | None = field(default=None, metadata={"doc": "global gradient clipping (None: none)"})
    normalise_advantages: bool = field(
        default=False, metadata={"doc": "standardise advantages per minibatch (the release: no, --center_adv unset)"}
    )
    value_update: Literal["separate_epochs", "joint"] = field(
        default="separate_epochs",
        metadata={"doc": "'separate_epochs' (release): the policy's epochs on the policy loss, then the value's "
                         "epochs on the value loss, each AdamW on its own loss (a shared value's optimiser holds "
                         "the transformer too); 'joint': one summed loss per minibatch, both optimisers stepped"},
    )
    value_target: Literal["monte_carlo", "lambda_return"] = field(
        default="monte_carlo",
        metadata={"doc": "the value's regression target: the discounted return to the end of the trial (release) "
                         "or the GAE λ-return"},
    )
    value_loss: Literal["gaussian_nll", "mse"] = field(
        default="gaussian_nll",
        metadata={"doc": "'gaussian_nll' (release): -log N(target; value, σ) with a learned σ (initially 1); "
                         "'mse': 0.5 (value - target)²"},
    )

    def __post_init__(self) -> None:
        for name in ("layers", "heads", "d_model", "ff_size", "working_memory", "epochs", "minibatch_size"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.d_model % self.heads == 0, "heads", f"must divide d_model ({self.d_model})")
        check(self.memory_span in MEMORY_SPANS, "memory_span", f"must be one of {', '.join(MEMORY_SPANS)}")
        check(self.attention in ATTENTION_MODES, "attention", f"must be one of {', '.join(ATTENTION_MODES)}")
        check(self.policy_input in POLICY_INPUTS, "policy_input", f"must be one of {', '.join(POLICY_INPUTS)}")
        check(self.policy_input != "full_memory" or self.attention == "window", "policy_input",
              "full_memory needs attention: window")
        for name in ("init_std", "output_gain", "policy_lr", "value_lr", "clip"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("discount", "gae_lambda"):
            check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        check(0 < self.min_lr_factor <= 1, "min_lr_factor", "must be in (0, 1]")
        check((self.lr_decay_start is None) == (self.lr_decay_end is None), "lr_decay_end",
              "set both lr_decay_start and lr_decay_end, or neither")
        if self.lr_decay_start is not None and self.lr_decay_end is not None:
            check(0 <= self.lr_decay_start < self.lr_decay_end, "lr_decay_end", "must be > lr_decay_start >= 0")
        for name in ("lr_decay_optimisers", "value_update", "value_target", "value_loss"):
            allowed = typing.get_args(typing.get_type_hints(Config)[name])
            check(getattr(self, name) in allowed, name, f"must be one of {', '.join(allowed)}")
        check(self.entropy_coef >= 0, "entropy_coef", "must be >= 0")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0 or null")


# --- networks ------------------------------------------------------------------------------------


def sinusoid_table(length: int, d_model: int) -> Tensor:
    """``[length, d_model]`` fixed positions of Vaswani et al. (sin on even, cos on odd features)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)[:, : d_model // 2]
    return table


def tfixup_scales(layers: int) -> dict[str, float]:
    """Factors applied after Xavier-uniform initialisation (the released code's T-Fixup variant).

    ``embedding``: the N(0, d^-1/2) token embedding is scaled by (9N)^-1/4; ``ff_out`` (both FF layers
    and the attention output projection) by 0.67·N^-1/4; ``qkv`` by 0.67·N^-1/4·√2.
    """
    return {
        "embedding": (9 * layers) ** -0.25,
        "ff_out": 0.67 * layers**-0.25,
        "qkv": 0.67 * layers**-0.25 * math.sqrt(2.0),
    }


class Block(nn.Module):
    """``x + MHA(x)`` then ``x + FF(x)``; with ``pre_ln``, ``x + MHA(LN(x))`` and ``x + FF(LN(x))``."""

    def __init__(self, d_model: int, heads: int, ff_size: int, pre_ln: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)  # one fused projection, like nn.MultiheadAttention
        self.out = nn.Linear(d_model, d_model)
        self.ff1 = nn.Linear(d_model, ff_size)
        self.ff2 = nn.Linear(ff_size, d_model)
        self.ln_attn = nn.LayerNorm(d_model) if pre_ln else nn.Identity()
        self.ln_ff = nn.LayerNorm(d_model) if pre_ln else nn.Identity()

    def split_heads(self, x: Tensor) -> Tensor:
        """``[B, L, d]`` → ``[B, heads, L, d / heads]``."""
        b, length, d = x.shape
        return x.view(b, length, self.heads, d // self.heads).transpose(1, 2)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values ``[B, heads, L, d / heads]`` of the tokens ``x``: ``[B, L, d]``."""
        q, k, v = self.qkv(self.ln_attn(x)).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def finish(self, x: Tensor, attended: Tensor) -> Tensor:
        """The rest of the block after attention: ``attended`` is ``[B, heads, L, d / heads]``."""
        b, _, length, _ = attended.shape
        x = x + self.out(attended.transpose(1, 2).reshape(b, length, -1))
        return x + self.ff2(F.relu(self.ff1(self.ln_ff(x))))

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x``: ``[B, L, d]``; ``allowed``: bool ``[B or 1, 1, L, L]``, True where a query sees a key."""
        q, k, v = self.project(x)
        return self.finish(x, F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


def _mlp(sizes: Sequence[int], output_gain: float = 1.0) -> nn.Sequential:
    """tanh MLP with Xavier-uniform weights and zero biases (garage's Gaussian MLP modules)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(fan_in, fan_out)
        last = i == len(sizes) - 2
        nn.init.xavier_uniform_(linear.weight, gain=output_gain if last else 1.0)
        nn.init.zeros_(linear.bias)
        layers += [linear] if last else [linear, nn.Tanh()]
    return nn.Sequential(*layers)


class TrMRLNet(nn.Module):
    """Embedding, encoder blocks, policy head (and log-std) and value MLP."""

    def __init__(self, obs_dim: int, action_space: gym.Space, config: Config) -> None:
        super().__init__()
        self.config = config
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))  # type: ignore[attr-defined]
        self.obs_dim = obs_dim
        self.token_dim = obs_dim + self.action_dim + 2
        d, n = config.d_model, config.layers
        self.embed = nn.Linear(self.token_dim, d, bias=False)
        self.blocks = nn.ModuleList(Block(d, config.heads, config.ff_size, config.pre_ln) for _ in range(n))
        # A buffer so that it follows the network to its device; not persistent: not part of checkpoints.
        self.register_buffer("_positions", sinusoid_table(max(64, config.working_memory), d), persistent=False)
        self._window_constants: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}

        # T-Fixup as released: Xavier on every matrix of the encoder, then the scales of tfixup_scales.
        scales = tfixup_scales(n)
        with torch.no_grad():
            nn.init.normal_(self.embed.weight, 0.0, d**-0.5)
            self.embed.weight.mul_(scales["embedding"])
            for block in self.blocks:
                nn.init.xavier_uniform_(block.qkv.weight)  # over the fused [3d, d] matrix, as MHA's in_proj
                block.qkv.weight.mul_(scales["qkv"])
                nn.init.zeros_(block.qkv.bias)
                nn.init.zeros_(block.out.bias)
                for linear in (block.out, block.ff1, block.ff2):
                    nn.init.xavier_uniform_(linear.weight)
                    linear.weight.mul_(scales["ff_out"])

        head_in = {"latest_memory": d, "mixed_memory": 2 * d, "full_memory": d * config.working_memory}
        self.policy_head = _mlp([head_in[config.policy_input], 64, 64, self.action_dim], config.output_gain)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), math.log(config.init_std)))
        # A shared value reads the policy head's input (the release's GaussianMLPValueFunction on the
        # policy's compute_memories); a separate one the current token.
        self.value_head = _mlp([head_in[config.policy_input] if config.shared_value else self.token_dim, 64, 64, 1])
        if config.value_loss == "gaussian_nll":  # GaussianMLPValueFunction: learn_std, init_std 1
            self.value_log_std = nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self._positions.device

    def policy_parameters(self) -> list[nn.Parameter]:
        """Embedding, blocks, policy head and log-std."""
        return [p for name, p in self.named_parameters() if not name.startswith("value_")]

    def value_parameters(self) -> list[nn.Parameter]:
        """The value MLP (and its log-std): what only the value loss trains."""
        return [p for name, p in self.named_parameters() if name.startswith("value_")]

    def tokens(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor) -> Tensor:
        """``[..., token_dim]``: obs, previous action (one-hot if discrete), previous reward, done.

        With ``memory_span: episode`` every episode starts from ``[o, 0, 0, 0]`` (``forget_previous_episode``).
        """
        tokens = augmented_observation(obs, prev_action, prev_reward, episode_start, self.action_dim, self.discrete)
        if self.config.memory_span == "episode":
            tokens = self.forget_previous_episode(tokens, episode_start)
        return tokens

    def forget_previous_episode(self, tokens: Tensor, episode_start: Tensor) -> Tensor:
        """``tokens`` with the previous action, reward and done zeroed where ``episode_start`` (bool ``[...]``).

        The release's ``RL2Env.reset`` returns ``[o, 0, 0, 0]`` at every episode start, so nothing of an
        episode reaches the next one (its done flag is 0 there too, and is never 1 on a token the policy
        reads). Trial-spanning memory keeps the carried values: its window holds the previous episode anyway,
        and the done flag marks the boundary in it (RL²'s convention).
        """
        carried = torch.arange(self.token_dim, device=tokens.device) >= self.obs_dim
        return tokens.masked_fill(episode_start.to(tokens.device).unsqueeze(-1) & carried, 0.0)

    def positions(self, index: Tensor) -> Tensor:
        """Sinusoidal position vectors ``[..., d_model]`` for integer positions ``index``."""
        needed = int(index.max()) + 1 if index.numel() else 0
        if needed > len(self._positions):
            grown = sinusoid_table(max(needed, 2 * len(self._positions)), self.config.d_model)
            self._positions = grown.to(self._positions.device)
        return self._positions[index]

    def window_constants(self, w: int) -> tuple[Tensor, Tensor]:
        """``(positions [w, d_model], causal mask [1, 1, w, w])`` of a ``w``-slot window, built once per device
        (acting reads them at every env step)."""
        key = (w, self._positions.device)
        if key not in self._window_constants:
            device = self._positions.device
            allowed = torch.ones(w, w, dtype=torch.bool, device=device).tril().view(1, 1, w, w)
            self._window_constants[key] = (self.positions(torch.arange(w, device=device)), allowed)
        return self._window_constants[key]

    # -- window attention (the paper's) -----------------------------------------------------------

    def window_forward(self, windows: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        """The paper's forward over left-aligned windows.

        Args:
            windows: ``[B, W, token_dim]``, slot ``k < count`` holds the ``k``-th token of the window
                (oldest first); later slots are zeros.
            count: ``[B]`` int64 in ``1 .. W``, the tokens in each window; the current token is slot
                ``count - 1``.

        Returns:
            ``(features, outputs)``: the policy head's input ``[B, head_in]`` and the last block's
            output at the current slot ``[B, d_model]``.
        """
        positions, allowed = self.window_constants(windows.shape[1])
        embedded = self.embed(windows)
        x = embedded + positions
        for block in self.blocks:
            x = block(x, allowed)
        rows = torch.arange(len(count), device=count.device)
        current = x[rows, count - 1]
        return self._head_input(current, embedded[rows, count - 1], x), current

    # -- sliding attention --------------------------------------------------------------------------

    def sliding_forward(
        self, tokens: Tensor, position: Tensor, span: Tensor, chunk: int = 128
    ) -> tuple[Tensor, Tensor]:
        """Banded causal forward over whole sequences (the uncached computation of ``SlidingCache``).

        Queries are processed in chunks of ``chunk`` steps against the keys of the chunk and the
        ``working_memory - 1`` steps before it, so memory grows with ``T · (chunk + W)``, not ``T²``.

        Args:
            tokens: ``[B, T, token_dim]``.
            position: ``[B, T]`` int64, steps since the start of the token's memory span.
            span: ``[B, T]`` int64, an id of the memory span (tokens attend only within their span).

        Returns:
            ``(features, outputs)`` per step: ``[B, T, head_in]`` and ``[B, T, d_model]``.
        """
        t, w, device = tokens.shape[1], self.config.working_memory, tokens.device
        embedded = self.embed(tokens)
        x = embedded + self.positions(position)
        chunks = []
        for first in range(0, t, chunk):
            end, key_first = min(t, first + chunk), max(0, first - w + 1)
            lag = (torch.arange(first, end, device=device).view(-1, 1)
                   - torch.arange(key_first, end, device=device).view(1, -1))
            same_span = span[:, first:end, None] == span[:, None, key_first:end]
            chunks.append((first, end, key_first, (((lag >= 0) & (lag < w)) & same_span).unsqueeze(1)))
        for block in self.blocks:
            q, k, v = block.project(x)
            attended = [F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, ka:b], v[:, :, ka:b], attn_mask=allowed)
                        for a, b, ka, allowed in chunks]
            x = block.finish(x, torch.cat(attended, dim=2))
        return self._head_input(x, embedded, None), x

    def _head_input(self, current: Tensor, embedded: Tensor, window_outputs: Tensor | None) -> Tensor:
        if self.config.policy_input == "mixed_memory":  # working memory + episodic memory
            return torch.cat([embedded, current], dim=-1)
        if self.config.policy_input == "full_memory":
            assert window_outputs is not None
            return window_outputs.flatten(1)
        return current

    # -- heads --------------------------------------------------------------------------------------

    def distribution(self, features: Tensor) -> torch.distributions.Distribution:
        return action_distribution(self.policy_head(features), self.log_std, self.discrete)

    def log_prob(self, dist: torch.distributions.Distribution, actions: Tensor) -> Tensor:
        return per_action(dist.log_prob(actions), self.discrete)

    def entropy(self, dist: torch.distributions.Distribution) -> Tensor:
        return per_action(dist.entropy(), self.discrete)

    def value(self, tokens: Tensor, features: Tensor | None) -> Tensor:
        """Value of the current token: on ``features`` (the policy head's input) when shared, else on ``tokens``."""
        if self.config.shared_value:
            assert features is not None
            return self.value_head(features).squeeze(-1)
        return self.value_head(tokens).squeeze(-1)


# --- step-wise memory ----------------------------------------------------------------------------


class WindowMemory:
    """The paper's working memory: the last ``W`` tokens per environment, left-aligned, zero-padded.

    Nothing of the forward can be cached across steps: positions count from the window's start, so
    every token's first-layer input changes as the window slides (see the module docstring).
    """

    def __init__(self, net: TrMRLNet) -> None:
        self.net = net
        device = net.device
        self.windows = torch.zeros(0, net.config.working_memory, net.token_dim, device=device)
        self.spare = torch.zeros_like(self.windows)  # the next step's windows when every window slides
        self.count = torch.zeros(0, dtype=torch.int64, device=device)

    def reset(self, rows: Tensor) -> None:
        """Empty the windows of the environments where ``rows`` (``[N]`` bool) is True."""
        rows = rows.to(self.windows.device)
        if len(self.count) != len(rows):
            self.windows = self.windows.new_zeros(len(rows), *self.windows.shape[1:])
            self.spare = torch.zeros_like(self.windows)
            self.count = self.count.new_zeros(len(rows))
        self.windows[rows] = 0.0
        self.count[rows] = 0

    def step(self, token: Tensor) -> Tensor:
        """Append ``token`` (``[N, token_dim]``) to every window; the policy features ``[N, head_in]``."""
        w = self.windows.shape[1]
        full = self.count == w
        if bool(full.all()):  # mid-episode every window slides by one: one copy into the spare buffer
            torch.cat([self.windows[:, 1:], token.unsqueeze(1)], dim=1, out=self.spare)
            self.windows, self.spare = self.spare, self.windows
        else:
            if bool(full.any()):
                self.windows[full] = torch.roll(self.windows[full], -1, dims=1)
                self.count[full] = w - 1
            self.windows[torch.arange(len(token), device=token.device), self.count] = token
            self.count += 1
        return self.net.window_forward(self.windows, self.count)[0]


class SlidingCache:
    """Per-layer keys and values of each environment's last ``W`` tokens, in a ring of ``W`` slots.

    A token's slot is its position in the span modulo ``W``; attention ignores key order (positions
    are in the tokens), so the ring needs no shifting. One step costs one token's forward per layer.
    """

    def __init__(self, net: TrMRLNet) -> None:
        self.net = net
        self.device = net.device
        self.position = torch.zeros(0, dtype=torch.int64, device=self.device)
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.slots = torch.arange(net.config.working_memory, device=self.device).view(1, -1)

    def reset(self, rows: Tensor) -> None:
        rows = rows.to(self.device)
        if len(self.position) != len(rows):
            cfg = self.net.config
            shape = (len(rows), cfg.heads, cfg.working_memory, cfg.d_model // cfg.heads)
            self.keys = [torch.zeros(shape, device=self.device) for _ in self.net.blocks]
            self.values = [torch.zeros(shape, device=self.device) for _ in self.net.blocks]
            self.position = torch.zeros(len(rows), dtype=torch.int64, device=self.device)
            self.rows = torch.arange(len(rows), device=self.device)
        self.position[rows] = 0  # slots at or past the position are masked out, no need to clear them

    def step(self, token: Tensor) -> Tensor:
        net, w, rows = self.net, self.net.config.working_memory, self.rows
        slot = self.position % w
        embedded = net.embed(token).unsqueeze(1)  # [N, 1, d]
        x = embedded + net.positions(self.position).unsqueeze(1)
        allowed = (self.slots <= self.position.view(-1, 1)).view(-1, 1, 1, w)
        for block, keys, values in zip(net.blocks, self.keys, self.values, strict=True):
            q, k, v = block.project(x)
            keys[rows, :, slot] = k[:, :, 0]
            values[rows, :, slot] = v[:, :, 0]
            x = block.finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed))
        self.position += 1
        return net._head_input(x[:, 0], embedded[:, 0], None)


class UncachedSliding:
    """Sliding attention recomputed from each span's token history every step (the cache's reference)."""

    def __init__(self, net: TrMRLNet) -> None:
        self.net = net
        cfg = net.config
        self.device = net.device
        self.keep = cfg.layers * (cfg.working_memory - 1) + 1  # the receptive field: older tokens are irrelevant
        self.history = torch.zeros(0, self.keep, net.token_dim, device=self.device)
        self.position = torch.zeros(0, dtype=torch.int64, device=self.device)

    def reset(self, rows: Tensor) -> None:
        rows = rows.to(self.device)
        if len(self.position) != len(rows):
            self.history = torch.zeros(len(rows), self.keep, self.net.token_dim, device=self.device)
            self.position = torch.zeros(len(rows), dtype=torch.int64, device=self.device)
        self.position[rows] = 0

    def skip(self, tokens: Tensor) -> None:
        """Take in ``tokens`` (``[K, N, token_dim]``, oldest first) as ``K`` steps would, without computing the
        features of those steps (benchmarks reach a long history this way)."""
        self.history = torch.cat([self.history, tokens.transpose(0, 1)], dim=1)[:, -self.keep:]
        self.position += len(tokens)

    def step(self, token: Tensor) -> Tensor:
        self.history = torch.cat([self.history[:, 1:], token.unsqueeze(1)], dim=1)
        self.position += 1
        length = min(self.keep, int(self.position.max()))  # only the longest span's tokens matter
        # Position of every slot; slots before a span's start get negative ids and a span of their own.
        position = self.position.view(-1, 1) - length + torch.arange(length, device=self.device).view(1, -1)
        span = (position < 0).long()
        features, _ = self.net.sliding_forward(self.history[:, -length:], position.clamp_min(0), span)
        return features[:, -1]


class TrMRLPolicy:
    """Step-wise policy over the learner's network; one batched forward per step for all tasks.

    It runs on the network's device: the step's inputs are built on the CPU in one reused buffer
    (``StepInputs``) and copied over once, the action head's output comes back once, and actions are
    drawn on the CPU from ``generator`` (a CPU generator), so a seed gives the same noise on every
    device. Acting reads the network and changes nothing of the learner; ``deterministic`` acts with the
    mean (the release's evaluation) and draws nothing.
    """

    def __init__(self, net: TrMRLNet, generator: torch.Generator, cached: bool = True) -> None:
        self.net = net
        self.generator = generator
        self.device = net.device
        cfg = net.config
        if cfg.attention == "window":
            self.memory: WindowMemory | SlidingCache | UncachedSliding = WindowMemory(net)
        else:
            self.memory = SlidingCache(net) if cached else UncachedSliding(net)
        self._span_per_episode = cfg.memory_span == "episode"
        self.inputs = StepInputs(net.action_dim, net.discrete)
        self.noise = torch.empty(0)

    def reset(self, new_trial: np.ndarray) -> None:
        self.memory.reset(torch.as_tensor(new_trial, dtype=torch.bool))

    @torch.inference_mode()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        token = self.inputs(obs, prev_action, prev_reward, episode_start)
        if self._span_per_episode and episode_start.any():
            starts = torch.from_numpy(episode_start)
            self.memory.reset(starts)
            token = self.net.forget_previous_episode(token, starts)
        token = token.to(self.device)
        out = self.net.policy_head(self.memory.step(token)).cpu()
        if self.noise.shape != out.shape:
            self.noise = torch.empty(out.shape)
        return sample_action(out, self.net.log_std.cpu(), self.net.discrete, deterministic, self.generator,
                             self.noise).numpy()


# --- training ------------------------------------------------------------------------------------


def span_positions(episode_start: np.ndarray, per_episode: bool) -> tuple[Tensor, Tensor]:
    """``(position, span)`` ``[N, T]`` of every step: steps since its memory span began, and a span id.

    A span is the whole trial, or each episode when ``per_episode``.
    """
    steps = episode_start.shape[1]
    if per_episode:
        span = np.cumsum(episode_start, axis=1)
        first = np.where(episode_start, np.arange(steps), 0)
        first = np.maximum.accumulate(first, axis=1)
        position = np.arange(steps) - first
    else:
        span = np.zeros_like(episode_start, dtype=np.int64)
        position = np.broadcast_to(np.arange(steps), episode_start.shape)
    return torch.as_tensor(np.ascontiguousarray(position), dtype=torch.int64), torch.as_tensor(span, dtype=torch.int64)


def gather_windows(tokens: Tensor, position: Tensor, rows: Tensor, steps: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """The paper's left-aligned window of each selected step.

    Args:
        tokens: ``[N, T, token_dim]``; position: ``[N, T]`` steps since the span start.
        rows, steps: ``[M]`` int64, the selected samples.

    Returns:
        ``(windows [M, W, token_dim], count [M])``.
    """
    slots = torch.arange(window, device=tokens.device).unsqueeze(0)
    count = (position[rows, steps] + 1).clamp_max(window)
    index = (steps - count + 1).unsqueeze(1) + slots  # [M, W]
    filled = slots < count.unsqueeze(1)
    windows = tokens[rows.unsqueeze(1), index.clamp(0, tokens.shape[1] - 1)] * filled.unsqueeze(-1)
    return windows, count


def lr_factor(config: Config, optimiser_step: int, steps_per_epoch: int) -> float:
    """The lr of optimiser step ``optimiser_step`` (counted from 0 over the run) as a fraction of the initial lr.

    The released ``LRDecayOptimizerWrapper`` is a ``MultiStepLR`` stepped with the count of optimiser
    steps, with a milestone every ``steps_per_epoch`` steps from epoch ``lr_decay_start`` up to (not
    including) ``lr_decay_end``, each multiplying the lr by ``γ = min_lr_factor^(1 / (end - start))``:
    step ``k`` runs at ``γ^clamp(⌊k / steps_per_epoch⌋ - start + 1, 0, end - start)``. So the first
    decay applies during epoch ``start`` and the last from epoch ``end - 1`` on. ``steps_per_epoch`` is
    the launch script's ``epochs * (tasks * episodes * max_steps) // minibatch_size`` (312 on
    MuJoCo), while an iteration takes ``epochs * ceil(env_steps / minibatch_size)`` steps (320 without
    terminations): epochs in this schedule run slightly ahead of iterations, and behind them when
    episodes terminate early (AntDir), as in the release.
    """
    start, end = config.lr_decay_start, config.lr_decay_end
    if start is None or end is None:
        return 1.0
    gamma = config.min_lr_factor ** (1 / (end - start))
    return float(gamma ** min(max(optimiser_step // steps_per_epoch - start + 1, 0), end - start))


def steps_per_epoch(config: Config, num_tasks: int, episodes_per_trial: int, max_episode_steps: int) -> int:
    """The launch scripts' ``steps_per_epoch``: ``epochs * (tasks * episodes * max_steps) // minibatch_size``
    (10 * 8000 // 256 = 312 on MuJoCo), the optimiser steps the lr schedule counts as one epoch."""
    return max(1, config.epochs * num_tasks * episodes_per_trial * max_episode_steps // config.minibatch_size)


class ScheduledAdamW:
    """An AdamW optimiser whose lr follows ``lr_factor``, set at every ``zero_grad`` as the released wrapper does.

    ``zero_grad`` leaves zero gradients, not ``None`` (the release's torch 1.7 default): AdamW's weight
    decay then also acts on the parameters a loss does not reach, e.g. the policy head in a shared
    value's epochs, as in the release.
    """

    def __init__(self, parameters: list[nn.Parameter], lr: float, decays: bool, config: Config) -> None:
        self.optimiser = torch.optim.AdamW(parameters, lr=lr)
        self.lr, self.decays, self.config = lr, decays, config
        self.steps = 0  # optimiser steps so far: the released wrapper's ``_epoch``
        self.steps_per_epoch = 1  # set by the learner from its batch size

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimiser.param_groups

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.optimiser.param_groups[0]["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        del set_to_none  # always zeros, see the class docstring
        factor = lr_factor(self.config, self.steps, self.steps_per_epoch) if self.decays else 1.0
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr * factor
        self.optimiser.zero_grad(set_to_none=False)

    def step(self) -> None:
        self.optimiser.step()
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": devices.cpu_state(self.optimiser.state_dict()), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimiser.load_state_dict(state["adamw"])  # moves the state to its parameters' device
        self.steps = int(state["steps"])


class _Optimisers:
    """Both optimisers stepped together by ``ppo_update`` (``value_update: joint``)."""

    def __init__(self, policy: ScheduledAdamW, value: ScheduledAdamW) -> None:
        self.policy, self.value = policy, value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.policy.zero_grad(set_to_none)
        self.value.zero_grad(set_to_none)

    def step(self) -> None:
        self.policy.step()
        self.value.step()


# --- losses --------------------------------------------------------------------------------------


def discounted_returns(rewards: Tensor, cut: Tensor, gamma: float) -> Tensor:
    """``[N, T]`` discounted return of every step to its trial's end (garage's ``discount_cumsum`` per trial);
    ``cut`` as for ``gae``, which with zero values and λ = 1 computes exactly this sum."""
    return gae(rewards, torch.zeros_like(rewards), cut, gamma, 1.0)[0]


def value_terms(values: Tensor, targets: Tensor, mask: Tensor, log_std: Tensor | None) -> dict[str, Tensor]:
    """The value loss as named terms: with ``log_std`` (``[1]``), the release's Gaussian negative
    log-likelihood (``GaussianMLPValueFunction.compute_loss``: ``-log N(target; value, exp(log_std))``),
    else ``0.5 (value - target)²``. ``values``, ``targets`` and ``mask`` share a shape."""
    if log_std is None:
        return {"loss_value": 0.5 * masked_mean((values - targets) ** 2, mask)}
    nll = 0.5 * ((targets - values) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
    return {"loss_value": masked_mean(nll, mask), "value_std": log_std.detach().exp().squeeze()}


_LOCOMOTION: dict[str, Any] = {"layers": 4, "heads": 16, "d_model": 128, "ff_size": 512, "working_memory": 5,
                               "epochs": 10, "minibatch_size": 256}

#: DESIGN.md §9 and the release's README launch commands (the lr decay flags: --decay_epoch_init,
#: --decay_epoch_end, --min_lr_factor, --policy_lr_schedule / --vf_lr_schedule). The other fields keep
#: their defaults, which are the release's: un-centred advantages, Monte-Carlo value targets with a
#: Gaussian likelihood, separate policy and value epochs, episode memory.
PRESETS: dict[str, dict[str, Any]] = {
    "halfcheetah_vel": {**_LOCOMOTION, "discount": 0.9, "gae_lambda": 0.8, "clip": 0.1, "policy_lr": 3e-5,
                        "value_lr": 2.5e-4, "init_std": 0.2, "output_gain": 1.0, "shared_value": False,
                        "lr_decay_start": 100, "lr_decay_end": 750, "min_lr_factor": 0.1,
                        "lr_decay_optimisers": "policy"},
    "halfcheetah_dir": {**_LOCOMOTION, "discount": 0.9, "gae_lambda": 0.8, "clip": 0.2, "policy_lr": 3e-5,
                        "value_lr": 3e-5, "init_std": 0.5, "output_gain": 1.0, "shared_value": True,
                        "lr_decay_start": 100, "lr_decay_end": 3700, "min_lr_factor": 1e-4,
                        "lr_decay_optimisers": "policy_and_value"},
    "ant_dir": {**_LOCOMOTION, "discount": 0.92, "gae_lambda": 0.8, "clip": 0.2, "policy_lr": 3e-5,
                "value_lr": 3e-5, "init_std": 0.5, "output_gain": 0.01, "shared_value": True,
                "lr_decay_start": 500, "lr_decay_end": 3500, "min_lr_factor": 1e-4,
                "lr_decay_optimisers": "policy_and_value"},
    # --policy_lr_schedule=no_schedule --vf_lr_schedule=no_schedule: constant lrs.
    "metaworld": {"layers": 4, "heads": 4, "d_model": 32, "ff_size": 128, "working_memory": 5, "discount": 0.9,
                  "gae_lambda": 0.95, "clip": 0.2, "policy_lr": 5e-5, "value_lr": 5e-5, "minibatch_size": 32,
                  "epochs": 10, "init_std": 1.0, "output_gain": 0.01, "shared_value": False},
    # Not from the paper: a small transformer whose memory spans the trial, for the cheap families
    # (bandit, point_nav, tabular_mdp). Set working_memory to at least the trial length in the suite.
    # It keeps the harness's earlier PPO (one summed loss, standardised advantages, λ-returns with MSE),
    # with which it beats Thompson sampling on bandits (tests/test_trmrl.py).
    "cheap": {"layers": 2, "heads": 4, "d_model": 64, "ff_size": 128, "working_memory": 64, "memory_span": "trial",
              "attention": "sliding", "policy_lr": 3e-4, "value_lr": 1e-3, "discount": 0.9, "gae_lambda": 0.8,
              "clip": 0.2, "epochs": 4, "minibatch_size": 1000, "init_std": 0.5, "max_grad_norm": 0.5,
              "normalise_advantages": True, "value_update": "joint", "value_target": "lambda_return",
              "value_loss": "mse"},
}
PRESETS["paper"] = PRESETS["halfcheetah_vel"]


class TrMRL:
    """TrMRL trained with PPO; see the module docstring."""

    name = "trmrl"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    exploration_episodes: int | None = None
    samples_own_tasks = False
    #: Transformers at least this wide act on the training device, narrower ones on the CPU (``acts_on``).
    DEVICE_ACTING_WIDTH: ClassVar[int] = 64

    @classmethod
    def acts_on(cls, config: Config) -> devices.Acting:
        """Where acting runs (``algorithms.device``): a transformer pass over every task's window per env
        step. On an H200 the paper's locomotion width (128) sampled 1.8× faster acting on the GPU, and
        the Meta-World width (32) 1.1× faster on the CPU, where launch latency outweighs its small
        products (README, "Throughput and GPUs"); the threshold lies between the two."""
        return "device" if config.d_model >= cls.DEVICE_ACTING_WIDTH else "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        obs_dim = int(np.prod(env.observation_space.shape))
        torch_seed = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # built on the CPU: the same initial weights on any device
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=torch_seed)))
            self.net = TrMRLNet(obs_dim, env.action_space, config)
        self.net.to(self.device)
        # Acting runs on this device too at the paper's width (acts_on): its step re-reads 20 windows × 5
        # tokens through 4 blocks of width 128 (~80 M multiply-adds), compute that a GPU does in a fraction
        # of the ~4 ms one CPU core needs, for one host-device round trip per env step.
        self.acting_device = devices.acting_device(self.device, self.acts_on(config))
        self.acting_net = devices.acting_copy(self.net, self.device, self.acting_device)
        value_parameters = self.net.value_parameters()
        if config.shared_value and config.value_update == "separate_epochs":
            # The release's GaussianMLPValueFunction holds the policy as a submodule: its optimiser
            # steps the embedding and blocks on the value loss (and weight-decays the policy head).
            value_parameters += self.net.policy_parameters()
        self.optimisers = _Optimisers(
            ScheduledAdamW(self.net.policy_parameters(), config.policy_lr, True, config),
            ScheduledAdamW(value_parameters, config.value_lr, config.lr_decay_optimisers == "policy_and_value",
                           config),
        )
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=torch_seed)))
        self.iterations = 0

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        """A policy drawing its action noise from ``generator`` (None: the training generator)."""
        return TrMRLPolicy(self.acting_net, self.generator if generator is None else generator)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # adaptation is in the attention memory

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        cfg = self.config
        batch = sampler.collect(self.exploration_policy(), tasks, self.env.episodes_per_trial)

        def tensor(array: np.ndarray) -> Tensor:
            return torch.from_numpy(array).to(self.device)

        tokens = self.net.tokens(tensor(batch.obs), tensor(batch.previous(batch.actions)),
                                 tensor(batch.previous(batch.rewards)), tensor(batch.episode_start))
        actions = tensor(batch.actions)
        position, span = (x.to(self.device) for x in span_positions(batch.episode_start, cfg.memory_span == "episode"))
        net = self.net
        if cfg.attention == "window":  # every sample with its own window
            rows, steps = (tensor(a) for a in np.nonzero(batch.valid))
            count, num_minibatches = len(rows), math.ceil(len(rows) / cfg.minibatch_size)

            def select(part: Tensor) -> tuple[Any, Tensor, Tensor]:
                r, s = rows[part], steps[part]
                return (lambda: net.window_forward(*gather_windows(tokens, position, r, s, cfg.working_memory))[0],
                        tokens[r, s], actions[r, s])

            forward = self._forward(select, lambda index: torch.ones(len(index), device=self.device), 8192)
        else:  # whole trials with the banded mask
            count = batch.num_tasks
            num_minibatches = min(count, math.ceil(batch.env_steps / cfg.minibatch_size))
            valid = tensor(batch.valid)

            def select(part: Tensor) -> tuple[Any, Tensor, Tensor]:
                return (lambda: net.sliding_forward(tokens[part], position[part], span[part])[0], tokens[part],
                        actions[part])

            forward = self._forward(select, lambda index: valid[index].float(), 16)

        with torch.no_grad():
            old = forward(torch.arange(count, device=self.device), chunked=True)
            old_log_prob = old["log_prob"]
            # GAE over the whole trial: values per step in [N, T] layout.
            values = torch.zeros(batch.rewards.shape, device=self.device)
            if cfg.attention == "window":
                values[rows, steps] = old["value"]
            else:
                values = old["value"]
            rewards, cut = tensor(batch.rewards), tensor(trial_cuts(batch.valid))
            advantages, returns = gae(rewards, values, cut, cfg.discount, cfg.gae_lambda)
            if cfg.value_target == "monte_carlo":
                returns = discounted_returns(rewards, cut, cfg.discount)
            if cfg.attention == "window":
                advantages, returns = advantages[rows, steps], returns[rows, steps]

        value_log_std = self.net.value_log_std if cfg.value_loss == "gaussian_nll" else None

        def policy_terms(index: Tensor, value: bool) -> dict[str, Tensor]:
            index = index.to(self.device)  # minibatch indices come from the CPU generator
            out = forward(index, chunked=False, value=value)
            mask = out["mask"]
            adv = normalise_advantages(advantages[index], mask) if cfg.normalise_advantages else advantages[index]
            values = out["value"] if value else returns[index]  # without a value, ppo_loss's value term is 0
            terms = ppo_loss(out["log_prob"], old_log_prob[index], adv, values, returns[index], out["entropy"], mask,
                             cfg.clip, 1.0, cfg.entropy_coef)
            if value:  # one summed loss (value_update: joint)
                terms.update(value_terms(out["value"], returns[index], mask, value_log_std))
            else:  # the value's own epochs fit it
                del terms["loss_value"]
            return terms

        def value_loss(index: Tensor) -> dict[str, Tensor]:
            out = forward(index.to(self.device), chunked=False, policy=False)
            return value_terms(out["value"], returns[index.to(self.device)], out["mask"], value_log_std)

        policy_optimiser, value_optimiser = self.optimisers.policy, self.optimisers.value
        policy_optimiser.steps_per_epoch = value_optimiser.steps_per_epoch = steps_per_epoch(
            cfg, len(tasks), self.env.episodes_per_trial, self.env.max_episode_steps)
        max_grad_norm = cfg.max_grad_norm or math.inf
        if cfg.value_update == "joint":
            logs = ppo_update(lambda index: policy_terms(index, value=True), count, self.optimisers,  # type: ignore[arg-type]
                              list(self.net.parameters()), cfg.epochs, num_minibatches, max_grad_norm, self.generator)
        else:
            # The release's VPG._train: all policy minibatch epochs, then all value epochs.
            logs = ppo_update(lambda index: policy_terms(index, value=False), count, policy_optimiser,  # type: ignore[arg-type]
                              self.net.policy_parameters(), cfg.epochs, num_minibatches, max_grad_norm, self.generator)
            value_logs = ppo_update(value_loss, count, value_optimiser, value_optimiser.parameters,  # type: ignore[arg-type]
                                    cfg.epochs, num_minibatches, max_grad_norm, self.generator)
            logs.update(loss_value=value_logs["loss_value"], value_grad_norm=value_logs["grad_norm"])
            if "value_std" in value_logs:
                logs["value_std"] = value_logs["value_std"]
        self.iterations += 1
        devices.refresh(self.acting_net, self.net)
        logs["train_return"] = float(batch.episode_returns.mean())
        logs["policy_lr"] = policy_optimiser.param_groups[0]["lr"]
        logs["value_lr"] = value_optimiser.param_groups[0]["lr"]
        return logs

    def _forward(self, select: Any, mask: Any, chunk: int) -> Any:
        """``forward(index, chunked, policy, value)``: ``log_prob`` and ``entropy`` (if ``policy``), ``value`` (if
        ``value``) and ``mask`` of the samples ``index``; ``select(part)`` gives a part's features (a thunk: a
        separate value needs no transformer pass), tokens and actions, ``mask(index)`` the valid steps."""
        net = self.net

        def forward(index: Tensor, chunked: bool, policy: bool = True, value: bool = True) -> dict[str, Tensor]:
            outputs: dict[str, list[Tensor]] = {}
            for part in torch.split(index, chunk if chunked else len(index)):
                features_of, tokens, actions = select(part)
                features = features_of() if policy or self.config.shared_value else None
                if policy:
                    dist = net.distribution(features)
                    outputs.setdefault("log_prob", []).append(net.log_prob(dist, actions))
                    outputs.setdefault("entropy", []).append(net.entropy(dist))
                if value:
                    outputs.setdefault("value", []).append(net.value(tokens, features))
            return {**{key: torch.cat(parts) for key, parts in outputs.items()}, "mask": mask(index)}

        return forward

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "net": devices.cpu_state(self.net.state_dict()),
            "policy_optimiser": self.optimisers.policy.state_dict(),
            "value_optimiser": self.optimisers.value.state_dict(),
            "generator": self.generator.get_state(),
            "iterations": self.iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])  # copies into the parameters, wherever they live
        devices.refresh(self.acting_net, self.net)
        self.optimisers.policy.load_state_dict(state["policy_optimiser"])
        self.optimisers.value.load_state_dict(state["value_optimiser"])
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])

