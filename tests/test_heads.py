"""The acting-side pieces shared by RL² and TrMRL: step inputs in a reused buffer, and action sampling."""

from __future__ import annotations

import numpy as np
import torch

from algorithms.heads import StepInputs, augmented_observation, sample_action


def test_step_inputs_equal_the_augmented_observation_bit_for_bit_and_reuse_one_buffer() -> None:
    rng = np.random.default_rng(0)
    for discrete, action_dim in ((False, 3), (True, 4)):
        inputs = StepInputs(action_dim, discrete)
        buffers = set()
        for num in (5, 5, 2):  # the buffer is reused while the batch keeps its size
            obs = rng.normal(size=(num, 7)).astype(np.float32)
            prev_action = (rng.integers(0, action_dim, num) if discrete
                           else rng.normal(size=(num, action_dim)).astype(np.float32))
            prev_reward = rng.normal(size=num).astype(np.float32)
            episode_start = rng.random(num) < 0.5
            got = inputs(obs, prev_action, prev_reward, episode_start)
            expected = augmented_observation(torch.from_numpy(obs), torch.from_numpy(prev_action),
                                             torch.from_numpy(prev_reward), torch.from_numpy(episode_start),
                                             action_dim, discrete)
            assert got.dtype == expected.dtype and torch.equal(got, expected)
            buffers.add(got.data_ptr())
        assert len(buffers) == 2  # one buffer per batch size: sizes 5, 5, 2


def test_sampling_into_a_noise_buffer_draws_what_a_fresh_tensor_would() -> None:
    out, log_std = torch.randn(6, 3), torch.full((3,), -0.5)
    fresh, reused = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    noise = torch.empty(6, 3)
    for _ in range(3):
        a = sample_action(out, log_std, False, False, fresh)
        b = sample_action(out, log_std, False, False, reused, noise)
        assert torch.equal(a, b) and a.data_ptr() != noise.data_ptr()  # the action is a new tensor
    assert torch.equal(sample_action(out, log_std, False, True, reused, noise), out)  # the mode; no draw
