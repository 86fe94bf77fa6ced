"""TrMRL's transformer and its step-wise memories; ``algorithms.trmrl`` holds the learner that trains them.

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

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms.common import action_size, mlp
from algorithms.heads import action_distribution, augmented_observation, per_action

if TYPE_CHECKING:
    from algorithms.trmrl import Config


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


def garage_mlp(sizes: Sequence[int], output_gain: float = 1.0) -> nn.Sequential:
    """tanh MLP with Xavier-uniform weights (the output layer's gain ``output_gain``) and zero biases, each
    layer initialised as it is built (garage's Gaussian MLP modules)."""

    def init(linear: nn.Linear, last: bool) -> None:
        nn.init.xavier_uniform_(linear.weight, gain=output_gain if last else 1.0)
        nn.init.zeros_(linear.bias)

    return mlp(sizes, nn.Tanh, init)


class TrMRLNet(nn.Module):
    """Embedding, encoder blocks, policy head (and log-std) and value MLP."""

    def __init__(self, obs_dim: int, action_space: gym.Space, config: Config) -> None:
        super().__init__()
        self.config = config
        self.discrete, self.action_dim = action_size(action_space)
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
        self.policy_head = garage_mlp([head_in[config.policy_input], 64, 64, self.action_dim], config.output_gain)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), math.log(config.init_std)))
        # A shared value reads the policy head's input (the release's GaussianMLPValueFunction on the
        # policy's compute_memories); a separate one the current token.
        value_in = head_in[config.policy_input] if config.shared_value else self.token_dim
        self.value_head = garage_mlp([value_in, 64, 64, 1])
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

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """``[..., d_model]``: the tokens' embeddings, scaled by sqrt(d_model) with ``scale_embedding``."""
        embedded = self.embed(tokens)
        return embedded * math.sqrt(self.config.d_model) if self.config.scale_embedding else embedded

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
        embedded = self.embed_tokens(windows)
        x = embedded + positions
        for block in self.blocks:
            x = block(x, allowed)
        rows = torch.arange(len(count), device=count.device)
        current = x[rows, count - 1]
        return self.head_input(current, embedded[rows, count - 1], x), current

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
        embedded = self.embed_tokens(tokens)
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
        return self.head_input(x, embedded, None), x

    def head_input(self, current: Tensor, embedded: Tensor, window_outputs: Tensor | None) -> Tensor:
        """What the policy head reads (``policy_input``) from the last block's output at the current step
        ``current`` ``[..., d_model]``, the current token's embedding ``embedded`` ``[..., d_model]``, and (for
        ``full_memory``) the last block's outputs over the whole window ``[B, W, d_model]``."""
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


class StepMemory(Protocol):
    """What ``TrMRLPolicy`` steps: the memory of each environment of a batch, one token at a time."""

    def reset(self, rows: Tensor) -> None:
        """Forget the memory of the environments where ``rows`` (``[N]`` bool) is True."""

    def step(self, token: Tensor) -> Tensor:
        """Take in each environment's current token (``[N, token_dim]``); the policy head's input ``[N, head_in]``."""


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
        embedded = net.embed_tokens(token).unsqueeze(1)  # [N, 1, d]
        x = embedded + net.positions(self.position).unsqueeze(1)
        allowed = (self.slots <= self.position.view(-1, 1)).view(-1, 1, 1, w)
        for block, keys, values in zip(net.blocks, self.keys, self.values, strict=True):
            q, k, v = block.project(x)
            keys[rows, :, slot] = k[:, :, 0]
            values[rows, :, slot] = v[:, :, 0]
            x = block.finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed))
        self.position += 1
        return net.head_input(x[:, 0], embedded[:, 0], None)
