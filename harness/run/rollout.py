"""The sampler: one environment per task, stepped in lock-step with one batched policy call per step.

A trial is ``episodes_per_trial`` consecutive episodes on one task. The policy's memory is reset at
the start of a trial only; at an episode boundary inside a trial it sees ``episode_start=True`` and
keeps its memory (RL²). Each environment is reset with a seed drawn from the sampler's generator at
the start of a trial and without a seed between the episodes of a trial, so a trial is reproducible
from the sampler's state alone.

The loop's own cost is small next to ``env.step`` (``python -m harness bench``, case ``random``): the
buffers are written with one slice per array while every trial is running, and per-environment
bookkeeping stays in Python scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from algorithms.base import Policy, Task, TrialBatch
from harness.tasks.base import TaskFamily


class Sampler:
    """Collects trials of a family's tasks and counts the env steps it takes.

    Args:
        family: the task family (builds and re-targets environments).
        rng: generator for environment reset seeds; owned by the sampler.
    """

    def __init__(self, family: TaskFamily, rng: np.random.Generator) -> None:
        self.family = family
        self.rng = rng
        self.env_steps = 0
        self._envs: list[gym.Env] = []
        probe = family.make_env()
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        self._discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self._envs.append(probe)

    def prepare(self, tasks: Sequence[Task]) -> None:
        """Build the environments ``collect`` will need for ``tasks`` now (it builds missing ones on first use:
        ~0.1 s each for Meta-World, which a benchmark should not time)."""
        self._envs_for(tasks)

    def _envs_for(self, tasks: Sequence[Task]) -> list[gym.Env]:
        while len(self._envs) < len(tasks):
            self._envs.append(self.family.make_env())
        envs = self._envs[: len(tasks)]
        for env, task in zip(envs, tasks, strict=True):
            self.family.set_task(env, task)
        return envs

    def collect(
        self,
        policy: Policy,
        tasks: Sequence[Task],
        episodes_per_trial: int,
        deterministic: bool = False,
    ) -> TrialBatch:
        """Run one trial of ``episodes_per_trial`` episodes on each task.

        Returns:
            A ``TrialBatch`` with ``[len(tasks), episodes_per_trial * max_episode_steps]`` arrays.
        """
        num, episodes, horizon = len(tasks), episodes_per_trial, self.family.max_episode_steps
        steps = episodes * horizon
        envs = self._envs_for(tasks)
        obs_shape = self.observation_space.shape or ()
        act_shape = () if self._discrete else (self.action_space.shape or ())
        act_dtype = np.int64 if self._discrete else np.float32

        obs_buf = np.zeros((num, steps, *obs_shape), np.float32)
        act_buf = np.zeros((num, steps, *act_shape), act_dtype)
        rew_buf = np.zeros((num, steps), np.float32)
        start_buf = np.zeros((num, steps), bool)
        end_buf = np.zeros((num, steps), bool)
        term_buf = np.zeros((num, steps), bool)
        episode_buf = np.zeros((num, steps), np.int64)
        valid = np.zeros((num, steps), bool)
        success_buf = np.zeros((num, steps), bool)
        returns = np.zeros((num, episodes))
        lengths = np.zeros((num, episodes), np.int64)

        seeds = self.rng.integers(0, 2**31 - 1, size=num)
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]).astype(np.float32)
        policy.reset(np.ones(num, bool))
        prev_action = np.zeros((num, *act_shape), act_dtype)
        prev_reward = np.zeros(num, np.float32)
        episode_start = np.ones(num, bool)
        episode = np.zeros(num, np.int64)
        step_in_episode = [0] * num  # Python ints: the per-env loop below reads and writes them every step
        active = np.ones(num, bool)
        active_count = num
        every_row = np.arange(num)
        step_fns = [env.step for env in envs]

        for t in range(steps):
            if not active_count:
                break
            # obs and episode_start are the same arrays every step, updated in place below: a policy that
            # keeps them across steps must copy them (PEARLPolicy.last_obs does).
            actions = np.asarray(policy.act(obs, prev_action, prev_reward, episode_start, deterministic))
            if active_count == num:  # the common case: plain slices instead of fancy indexing
                rows = every_row
                obs_buf[:, t] = obs
                act_buf[:, t] = actions
                start_buf[:, t] = episode_start
                episode_buf[:, t] = episode
                valid[:, t] = True
            else:
                rows = np.flatnonzero(active)
                obs_buf[rows, t] = obs[rows]
                act_buf[rows, t] = actions[rows]
                start_buf[rows, t] = episode_start[rows]
                episode_buf[rows, t] = episode[rows]
                valid[rows, t] = True
            episode_now = episode[rows]  # returns go to the episode the step belongs to, before any increment
            rewards, successes, dones = [], [], []
            # obs[rows] is stored above, so each row's next observation can overwrite it in place.
            for i in rows.tolist():
                o, r, terminated, truncated, info = step_fns[i](actions[i])
                rewards.append(r)
                successes.append(bool(info.get("success", False)))
                step_in_episode[i] += 1
                done = terminated or truncated or step_in_episode[i] >= horizon
                if done:
                    end_buf[i, t] = True
                    term_buf[i, t] = terminated
                    lengths[i, episode[i]] = step_in_episode[i]
                    episode[i] += 1
                    step_in_episode[i] = 0
                    if episode[i] == episodes:
                        active[i] = False
                        active_count -= 1
                    else:
                        o, _ = envs[i].reset()
                obs[i] = o
                dones.append(done)
            # One vectorised write per array: float64 rewards cast to float32 exactly as item assignment
            # would, and returns accumulate the float64 rewards in step order as before.
            reward_row = np.array(rewards, np.float64)
            rew_buf[rows, t] = reward_row
            returns[rows, episode_now] += reward_row
            success_buf[rows, t] = successes
            episode_start[rows] = dones
            self.env_steps += len(rows)
            prev_action = actions.astype(act_dtype, copy=False)
            prev_reward = rew_buf[:, t]  # a view: column t is final once the step is taken

        episode_success = np.zeros((num, episodes), bool)
        for e in range(episodes):
            episode_success[:, e] = (success_buf & (episode_buf == e) & valid).any(axis=1)
        return TrialBatch(
            obs=obs_buf,
            actions=act_buf,
            rewards=rew_buf,
            episode_start=start_buf,
            episode_end=end_buf,
            terminated=term_buf,
            episode_index=episode_buf,
            valid=valid,
            success=success_buf,
            episode_returns=returns,
            episode_lengths=lengths,
            episode_success=episode_success,
            task_ids=[t.task_id for t in tasks],
        )

    def close(self) -> None:
        """Close every environment the sampler built."""
        for env in self._envs:
            env.close()
        self._envs = []

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
