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
* PPO with the clipped objective only (no entropy bonus), separate AdamW optimisers for policy and
  value, minibatch epochs, and the released per-iteration learning-rate decay; GAE runs across the
  episodes of a trial.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check, register
from algorithms.heads import StepInputs, action_distribution, augmented_observation, per_action, sample_action
from algorithms.ppo import gae, normalise_advantages, ppo_loss, ppo_update, trial_cuts

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
        default=None, metadata={"doc": "iteration where the released geometric lr decay starts (None: constant lr)"}
    )
    lr_decay_end: int | None = field(
        default=None, metadata={"doc": "iteration where the decay reaches min_lr_factor (then constant)"}
    )
    min_lr_factor: float = field(default=0.1, metadata={"doc": "final lr as a fraction of the initial lr"})
    discount: float = field(default=0.9, metadata={"doc": "γ over the whole trial"})
    gae_lambda: float = field(default=0.8, metadata={"doc": "GAE λ (across the episodes of a trial)"})
    clip: float = field(default=0.1, metadata={"doc": "PPO ratio clip"})
    epochs: int = field(default=10, metadata={"doc": "passes over each batch per iteration"})
    minibatch_size: int = field(
        default=256, metadata={"doc": "samples (env steps) per minibatch; sliding attention rounds to whole trials"}
    )
    entropy_coef: float = field(default=0.0, metadata={"doc": "entropy bonus (the paper: none)"})
    max_grad_norm: float | None = field(default=None, metadata={"doc": "global gradient clipping (None: none)"})
    normalise_advantages: bool = field(default=True, metadata={"doc": "standardise advantages per minibatch"})

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
        self.value_head = _mlp([d if config.shared_value else self.token_dim, 64, 64, 1])

    @property
    def device(self) -> torch.device:
        return self._positions.device

    def policy_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("value_head.")]

    def value_parameters(self) -> list[nn.Parameter]:
        return list(self.value_head.parameters())

    def tokens(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor) -> Tensor:
        """``[..., token_dim]``: obs, previous action (one-hot if discrete), previous reward, done."""
        return augmented_observation(obs, prev_action, prev_reward, episode_start, self.action_dim, self.discrete)

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

    def value(self, tokens: Tensor, outputs: Tensor) -> Tensor:
        return self.value_head(outputs if self.config.shared_value else tokens).squeeze(-1)


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
    drawn on the CPU from the learner's CPU generator, so a seed gives the same noise on every device.
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
        if self._span_per_episode and episode_start.any():
            self.memory.reset(torch.from_numpy(episode_start))
        token = self.inputs(obs, prev_action, prev_reward, episode_start).to(self.device)
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


class _Optimisers:
    """The policy's and the value function's AdamW optimisers, stepped together by ``ppo_update``."""

    def __init__(self, policy: torch.optim.Optimizer, value: torch.optim.Optimizer) -> None:
        self.policy, self.value = policy, value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.policy.zero_grad(set_to_none=set_to_none)
        self.value.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.policy.step()
        self.value.step()


def lr_factor(config: Config, iteration: int) -> float:
    """The released ``LRDecayOptimizerWrapper``: constant, then a geometric decay per iteration from
    ``lr_decay_start`` to ``min_lr_factor`` at ``lr_decay_end``, then constant."""
    if config.lr_decay_start is None or config.lr_decay_end is None or iteration <= config.lr_decay_start:
        return 1.0
    progress = min(1.0, (iteration - config.lr_decay_start) / (config.lr_decay_end - config.lr_decay_start))
    return config.min_lr_factor**progress


_LOCOMOTION: dict[str, Any] = {"layers": 4, "heads": 16, "d_model": 128, "ff_size": 512, "working_memory": 5,
                               "epochs": 10, "minibatch_size": 256}

#: DESIGN.md §9, from the released configs. The lr decay: the released wrapper's default decay_epoch
#: (500) to the last iteration of the paper's budget (≈2e7 and ≈4e7 env steps at 8000 per iteration).
PRESETS: dict[str, dict[str, Any]] = {
    "halfcheetah_vel": {**_LOCOMOTION, "discount": 0.9, "gae_lambda": 0.8, "clip": 0.1, "policy_lr": 3e-5,
                        "value_lr": 2.5e-4, "init_std": 0.2, "output_gain": 1.0, "shared_value": False,
                        "lr_decay_start": 500, "lr_decay_end": 2500},
    "halfcheetah_dir": {**_LOCOMOTION, "discount": 0.9, "gae_lambda": 0.8, "clip": 0.2, "policy_lr": 3e-5,
                        "value_lr": 3e-5, "init_std": 0.5, "output_gain": 1.0, "shared_value": True,
                        "lr_decay_start": 500, "lr_decay_end": 5000},
    "ant_dir": {**_LOCOMOTION, "discount": 0.92, "gae_lambda": 0.8, "clip": 0.2, "policy_lr": 3e-5,
                "value_lr": 3e-5, "init_std": 0.5, "output_gain": 0.01, "shared_value": True,
                "lr_decay_start": 500, "lr_decay_end": 5000},
    "metaworld": {"layers": 4, "heads": 4, "d_model": 32, "ff_size": 128, "working_memory": 5, "discount": 0.9,
                  "gae_lambda": 0.95, "clip": 0.2, "policy_lr": 5e-5, "value_lr": 5e-5, "minibatch_size": 32,
                  "epochs": 10, "init_std": 1.0, "output_gain": 0.01, "shared_value": False},
    # Not from the paper: a small transformer whose memory spans the trial, for the cheap families
    # (bandit, point_nav, tabular_mdp). Set working_memory to at least the trial length in the suite.
    "cheap": {"layers": 2, "heads": 4, "d_model": 64, "ff_size": 128, "working_memory": 64, "memory_span": "trial",
              "attention": "sliding", "policy_lr": 3e-4, "value_lr": 1e-3, "discount": 0.9, "gae_lambda": 0.8,
              "clip": 0.2, "epochs": 4, "minibatch_size": 1000, "init_std": 0.5, "max_grad_norm": 0.5},
}
PRESETS["paper"] = PRESETS["halfcheetah_vel"]


@register("trmrl")
class TrMRL:
    """TrMRL trained with PPO; see the module docstring."""

    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    exploration_episodes: int | None = None

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        obs_dim = int(np.prod(env.observation_space.shape))
        torch_seed = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # built on the CPU: the same initial weights on any device
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=torch_seed)))
            self.net = TrMRLNet(obs_dim, env.action_space, config)
        # Acting runs on this device too (TrMRLPolicy): the paper's step re-reads 20 windows × 5 tokens
        # through 4 blocks of width 128 (~80 M multiply-adds), compute that a GPU does in a fraction of
        # the ~4 ms one CPU core needs, for one host-device round trip per env step.
        self.net.to(self.device)
        self.optimisers = _Optimisers(
            torch.optim.AdamW(self.net.policy_parameters(), lr=config.policy_lr),
            torch.optim.AdamW(self.net.value_parameters(), lr=config.value_lr),
        )
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=torch_seed)))
        self.iterations = 0

    def exploration_policy(self) -> Policy:
        return TrMRLPolicy(self.net, self.generator)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # adaptation is in the attention memory

    def _set_lr(self) -> None:
        factor = lr_factor(self.config, self.iterations)
        for group in self.optimisers.policy.param_groups:
            group["lr"] = self.config.policy_lr * factor
        for group in self.optimisers.value.param_groups:
            group["lr"] = self.config.value_lr * factor

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        self._set_lr()
        batch = sampler.collect(self.exploration_policy(), tasks, self.env.episodes_per_trial)
        cfg = self.config

        def tensor(array: np.ndarray) -> Tensor:
            return torch.from_numpy(array).to(self.device)

        tokens = self.net.tokens(tensor(batch.obs), tensor(batch.previous(batch.actions)),
                                 tensor(batch.previous(batch.rewards)), tensor(batch.episode_start))
        actions = tensor(batch.actions)
        position, span = (x.to(self.device) for x in span_positions(batch.episode_start, cfg.memory_span == "episode"))
        if cfg.attention == "window":
            rows, steps = (tensor(a) for a in np.nonzero(batch.valid))
            forward = self._window_samples(tokens, actions, position, rows, steps)
            count, num_minibatches = len(rows), math.ceil(len(rows) / cfg.minibatch_size)
        else:
            forward = self._sliding_trials(tokens, actions, position, span, tensor(batch.valid))
            count = batch.num_tasks
            num_minibatches = min(count, math.ceil(batch.env_steps / cfg.minibatch_size))

        with torch.no_grad():
            old_log_prob, old_values, _, _ = forward(torch.arange(count, device=self.device), chunked=True)
            # GAE over the whole trial: values per step in [N, T] layout.
            values = torch.zeros(batch.rewards.shape, device=self.device)
            if cfg.attention == "window":
                values[rows, steps] = old_values
            else:
                values = old_values
            advantages, returns = gae(tensor(batch.rewards), values, tensor(trial_cuts(batch.valid)), cfg.discount,
                                      cfg.gae_lambda)
            if cfg.attention == "window":
                advantages, returns = advantages[rows, steps], returns[rows, steps]

        def loss_fn(index: Tensor) -> dict[str, Tensor]:
            index = index.to(self.device)  # minibatch indices come from the CPU generator
            log_prob, values, entropy, mask = forward(index, chunked=False)
            adv = normalise_advantages(advantages[index], mask) if cfg.normalise_advantages else advantages[index]
            return ppo_loss(log_prob, old_log_prob[index], adv, values, returns[index], entropy, mask,
                            cfg.clip, 1.0, cfg.entropy_coef)

        logs = ppo_update(loss_fn, count, self.optimisers, list(self.net.parameters()),  # type: ignore[arg-type]
                          cfg.epochs, num_minibatches, cfg.max_grad_norm or math.inf, self.generator)
        self.iterations += 1
        logs["train_return"] = float(batch.episode_returns.mean())
        logs["policy_lr"] = self.optimisers.policy.param_groups[0]["lr"]
        return logs

    def _window_samples(self, tokens: Tensor, actions: Tensor, position: Tensor, rows: Tensor, steps: Tensor) -> Any:
        """Forward over the samples ``index`` (into ``rows``/``steps``), each with its own window."""

        def forward(index: Tensor, chunked: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            outputs = []
            for part in torch.split(index, 8192 if chunked else len(index)):
                r, s = rows[part], steps[part]
                windows, count = gather_windows(tokens, position, r, s, self.config.working_memory)
                features, current = self.net.window_forward(windows, count)
                dist = self.net.distribution(features)
                outputs.append((self.net.log_prob(dist, actions[r, s]), self.net.value(tokens[r, s], current),
                                self.net.entropy(dist)))
            log_prob, values, entropy = (torch.cat(parts) for parts in zip(*outputs, strict=True))
            return log_prob, values, entropy, torch.ones_like(log_prob)

        return forward

    def _sliding_trials(self, tokens: Tensor, actions: Tensor, position: Tensor, span: Tensor, valid: Tensor) -> Any:
        """Forward over the whole trials ``index`` with the banded mask."""

        def forward(index: Tensor, chunked: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            outputs = []
            for part in torch.split(index, 16 if chunked else len(index)):
                features, current = self.net.sliding_forward(tokens[part], position[part], span[part])
                dist = self.net.distribution(features)
                outputs.append((self.net.log_prob(dist, actions[part]), self.net.value(tokens[part], current),
                                self.net.entropy(dist)))
            log_prob, values, entropy = (torch.cat(parts) for parts in zip(*outputs, strict=True))
            return log_prob, values, entropy, valid[index].float()

        return forward

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "net": devices.cpu_state(self.net.state_dict()),
            "policy_optimiser": devices.cpu_state(self.optimisers.policy.state_dict()),
            "value_optimiser": devices.cpu_state(self.optimisers.value.state_dict()),
            "generator": self.generator.get_state(),
            "iterations": self.iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])  # copies into the parameters, wherever they live
        # Optimiser states are moved to their parameters' device by load_state_dict.
        self.optimisers.policy.load_state_dict(state["policy_optimiser"])
        self.optimisers.value.load_state_dict(state["value_optimiser"])
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])
