"""The sampler: one environment per task, stepped in lock-step with one batched policy call per step.

A trial is ``episodes_per_trial`` consecutive episodes on one task. The policy's memory is reset at
the start of a trial only; at an episode boundary inside a trial it sees ``episode_start=True`` and
keeps its memory (RL²). Each environment is reset with a seed drawn from the sampler's generator at
the start of a trial and without a seed between the episodes of a trial, so a trial is reproducible
from the sampler's state alone.
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
        step_in_episode = np.zeros(num, np.int64)
        active = np.ones(num, bool)

        for t in range(steps):
            if not active.any():
                break
            actions = np.asarray(policy.act(obs, prev_action, prev_reward, episode_start, deterministic))
            rows = np.flatnonzero(active)
            obs_buf[rows, t] = obs[rows]
            act_buf[rows, t] = actions[rows]
            start_buf[rows, t] = episode_start[rows]
            episode_buf[rows, t] = episode[rows]
            valid[rows, t] = True
            # obs[rows] is stored above, so each row's next observation can overwrite it in place.
            for i in rows:
                o, r, terminated, truncated, info = envs[i].step(actions[i])
                step_in_episode[i] += 1
                rew_buf[i, t] = r
                returns[i, episode[i]] += r
                success_buf[i, t] = bool(info.get("success", False))
                done = terminated or truncated or step_in_episode[i] >= horizon
                if done:
                    end_buf[i, t] = True
                    term_buf[i, t] = terminated
                    lengths[i, episode[i]] = step_in_episode[i]
                    episode[i] += 1
                    step_in_episode[i] = 0
                    if episode[i] == episodes:
                        active[i] = False
                    else:
                        o, _ = envs[i].reset()
                obs[i] = o
                episode_start[i] = done
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

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
