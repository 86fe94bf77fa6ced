"""MAML as ProMP released it (issue 14) and evaluation that only observes (issue 18).

- the linear feature baseline is fitted per task over all its rollouts, advantages standardised per task;
- ProMP's ``normalize(env)``: the policy acts in ±10, rescaled to the bounds and clipped (initial std 0.1
  in env units), log-probabilities of the pre-clip samples;
- one inner step per task over its trials pooled (``inner_batch: task``), per trial as an option;
- ``adapt`` on any number of exploration episodes per task, the same step training takes on them;
- evaluation draws from the generator it is given and leaves the learner and its generator untouched.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import algorithms.maml as maml_module
from algorithms.action_maps import ActionNormalization
from algorithms.base import MetaEnvInfo, Task, TrialBatch
from algorithms.maml import MAML, PRESETS, Config, adapt_parameters, pool_trials, to_rollouts
from algorithms.maml_policy import MAMLPolicy, log_prob_from, policy_outputs, stack
from algorithms.ppo import steps_since_start
from harness.run.rollout import Sampler
from harness.tasks import family_class


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def family_setup(name: str, tasks: int, seed: int = 0, **params: Any) -> tuple[Sampler, list[Task], MetaEnvInfo]:
    """A sampler of family ``name``, ``tasks`` training tasks, and the learner's view (2-episode trials)."""
    cls = family_class(name)
    family = cls(cls.Params(**params))
    rng = np.random.default_rng(seed)
    task_list = [Task(name, f"train/{i:03d}", family.sample_params("train", rng)) for i in range(tasks)]
    sampler = Sampler(family, np.random.default_rng(seed + 1))
    return sampler, task_list, MetaEnvInfo(sampler.observation_space, sampler.action_space, 2,
                                           family.max_episode_steps)


def capture_inner_steps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every ``adapt_parameters`` call the learner makes: its start, data and result."""
    calls: list[dict[str, Any]] = []
    original = maml_module.adapt_parameters

    def spy(net: Any, params: Any, data: Any, config: Any, create_graph: bool) -> Any:
        result = original(net, params, data, config, create_graph)
        calls.append({"params": params, "data": data, "result": result, "create_graph": create_graph})
        return result

    monkeypatch.setattr(maml_module, "adapt_parameters", spy)
    return calls


def capture_batches(sampler: Sampler) -> list[tuple[Any, TrialBatch]]:
    """Record every ``(policy, batch)`` the sampler collects."""
    batches: list[tuple[Any, TrialBatch]] = []
    collect = sampler.collect

    def spy(policy: Any, tasks: Any, episodes_per_trial: int, deterministic: bool = False) -> TrialBatch:
        batch = collect(policy, tasks, episodes_per_trial, deterministic)
        batches.append((policy, batch))
        return batch

    sampler.collect = spy  # type: ignore[method-assign]
    return batches


def reward_to_go(batch: TrialBatch, discount: float) -> np.ndarray:
    """``[N, T]`` discounted reward-to-go within each episode, zero on padding."""
    out = np.zeros(batch.rewards.shape)
    for i in range(batch.rewards.shape[0]):
        running = 0.0
        for s in np.flatnonzero(batch.valid[i])[::-1]:
            running = batch.rewards[i, s] + (0.0 if batch.episode_end[i, s] else discount * running)
            out[i, s] = running
    return out


def by_hand_advantages(batch: TrialBatch, rows_per_fit: int, discount: float) -> np.ndarray:
    """λ = 1 advantages, not normalised: reward-to-go minus a ridge fit of it (reg 1e-5) on
    ``[obs, obs², t, t², t³, 1]`` (obs clipped to ±10, ``t`` = step in episode / 100) over all valid steps
    of each run of ``rows_per_fit`` consecutive rows; ``[N, T]``, zero on padding. Independent of the
    learner's code."""
    returns, step = reward_to_go(batch, discount), steps_since_start(batch.episode_start)
    out = np.zeros(returns.shape)
    for first in range(0, batch.valid.shape[0], rows_per_fit):
        rows = slice(first, first + rows_per_fit)
        valid = batch.valid[rows]
        obs = np.clip(batch.obs[rows][valid].astype(np.float64), -10, 10)
        time = step[rows][valid][:, None] / 100.0
        x = np.concatenate([obs, obs**2, time, time**2, time**3, np.ones_like(time)], axis=1)
        y = returns[rows][valid]
        w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        residual = np.zeros(valid.shape)
        residual[valid] = y - x @ w
        out[rows] = residual
    return out


# --- 1. the linear feature baseline, per task over all its rollouts ------------------------------------


@pytest.mark.parametrize(("family", "episode_steps"), [("halfcheetah_vel", 30), ("ant_dir", 50)])
def test_baseline_is_fitted_per_task_over_all_its_rollouts_so_advantages_are_not_zero(
    family: str, episode_steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Episodes shorter than the baseline's features (38 for HalfCheetah, 58 for Ant): a fit on the one
    episode it then scores interpolates its returns, so its advantages are ≈ 0 (standardising them only
    amplifies rounding noise). ProMP fits per task over its 20 rollouts: the advantages are the residuals
    of that fit, a sizeable fraction of the returns' spread."""
    sampler, tasks, env = family_setup(family, tasks=2, episode_steps=episode_steps)
    config = Config(**{**PRESETS[family], "normalise_advantages": False})
    calls, batches = capture_inner_steps(monkeypatch), capture_batches(sampler)
    MAML(env, config, seed=0).train_iteration(sampler, tasks)
    pre, pre_batch = calls[0]["data"], batches[0][1]  # the inner step's data and the trials it came from
    trials = config.trials_per_task
    valid = pre_batch.valid
    advantages = pre.advantages.double().reshape(valid.shape).numpy()  # back to one row per trial
    assert valid.all()  # no episode ends early (Ant at std 0.1 in env units)
    returns = reward_to_go(pre_batch, config.discount).reshape(len(tasks), trials, -1)
    spread = returns.std(axis=1).mean()  # how much a step's return-to-go varies across the task's episodes
    ratio = advantages.std() / spread
    assert ratio > 0.2, f"advantages' std is {ratio:.1e} of the returns' spread: the baseline interpolated them"

    # Exactly the residuals of one fit per task over its 20 one-episode trials.
    np.testing.assert_allclose(advantages, by_hand_advantages(pre_batch, trials, config.discount),
                               rtol=1e-4, atol=1e-4 * spread)


def test_advantages_are_standardised_per_task_over_all_its_rollouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """ProMP's ``normalize_adv``: zero mean and unit std over all of a task's rollouts, not per rollout."""
    sampler, tasks, env = family_setup("halfcheetah_vel", tasks=2, episode_steps=20)
    calls = capture_inner_steps(monkeypatch)
    MAML(env, Config(**{**PRESETS["halfcheetah_vel"], "trials_per_task": 5}), seed=0).train_iteration(sampler, tasks)
    pre = calls[0]["data"]
    assert pre.advantages.shape == (2, 5 * 20)
    for row in range(2):
        values = pre.advantages[row][pre.mask[row] > 0].double()
        assert abs(float(values.mean())) < 1e-5 and float(values.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
        per_trial_means = values.reshape(5, 20).mean(1)
        assert float(per_trial_means.abs().max()) > 0.05  # trials differ: standardised as one batch


# --- 2. ProMP's normalize(env): actions in ±10, rescaled and clipped ------------------------------------


@pytest.mark.parametrize("family", ["halfcheetah_vel", "halfcheetah_dir", "ant_dir"])
def test_mujoco_presets_start_with_action_std_0_1_in_env_units(family: str) -> None:
    """ProMP's policy starts with std 1 in ±10 units: 0.1 in the environment's [-1, 1] (HalfCheetah, Ant)."""
    _, _, env = family_setup(family, tasks=1, episode_steps=5)
    assert np.array_equal(env.action_space.low, -np.ones(env.action_space.shape))  # type: ignore[attr-defined]
    learner = MAML(env, Config(**PRESETS[family]), seed=0)
    obs = np.zeros((20_000, *env.observation_space.shape), np.float32)  # type: ignore[misc]
    n = len(obs)
    actions = learner.exploration_policy().act(obs, np.zeros((n, 6), np.float32), np.zeros(n, np.float32),
                                               np.ones(n, bool), False)
    std = actions.std(0)
    assert std == pytest.approx(np.full(std.shape, 0.1), rel=0.05), std


def test_actions_are_rescaled_and_clipped_and_log_probs_are_of_the_pre_clip_samples() -> None:
    """A policy whose mean sits beyond the bounds: the environment gets (and the batch stores) clipped
    env-unit actions; the inner step's log-probabilities are of the policy's own samples, in ±10 units."""
    sampler, tasks, env = family_setup("halfcheetah_vel", tasks=3, episode_steps=10)
    learner = MAML(env, Config(**PRESETS["halfcheetah_vel"]), seed=0)
    with torch.no_grad():
        learner.net.body[-1].bias[0] = 15.0  # mean of dimension 0 beyond +10: 1.5 in env units, clipped to 1
        learner.net.body[-1].bias[1] = 5.0  # 0.5 in env units: inside the bounds
    policy = learner.exploration_policy()
    batch = sampler.collect(policy, tasks, 1)
    assert np.abs(batch.actions).max() <= 1.0
    assert (batch.actions[..., 0] == 1.0).all()  # clipped
    assert abs(batch.actions[..., 1].mean() - 0.5) < 0.05 and batch.actions[..., 1].std() > 0.05

    raw = policy.in_policy_units(batch)  # type: ignore[attr-defined]
    assert raw.actions[..., 0].mean() == pytest.approx(15.0, abs=0.5) and raw.actions[..., 0].std() > 0.5
    np.testing.assert_allclose(raw.actions[..., 1] / 10.0, batch.actions[..., 1], atol=1e-6)
    theta = stack({k: v.detach() for k, v in learner.net.named_parameters()}, len(tasks))
    data = to_rollouts(learner.net, raw, theta, learner.config)
    out, log_std = policy_outputs(learner.net, theta, data.obs)
    expected = torch.distributions.Normal(out, log_std.exp()).log_prob(torch.from_numpy(raw.actions)).sum(-1)
    torch.testing.assert_close(data.log_prob, expected)
    assert float(data.log_prob.mean()) > -6 * 1.5  # ≈ -1.42 per dimension: samples under their own density

    # A batch the policy did not just collect is refused rather than mis-scored.
    other = sampler.collect(learner.exploration_policy(), tasks, 1)
    with pytest.raises(ValueError, match="not this policy's last trial"):
        policy.in_policy_units(other)  # type: ignore[attr-defined]


def test_action_normalization_config_and_spaces() -> None:
    with pytest.raises(ValueError, match=r"^action_normalization_scale: must be a finite number > 0"):
        Config(action_normalization_scale=0.0)
    with pytest.raises(ValueError, match=r"^action_normalization_scale: needs a Box"):
        ActionNormalization.of(gym.spaces.Discrete(3), 10.0)
    with pytest.raises(ValueError, match=r"^action_normalization_scale: needs finite action bounds"):
        ActionNormalization.of(gym.spaces.Box(-np.inf, np.inf, (2,)), 10.0)
    box = gym.spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    bounds = ActionNormalization.of(box, 10.0)
    np.testing.assert_allclose(bounds.to_env(np.array([[-10.0, 10.0], [0.0, 0.0], [30.0, -5.0]], np.float32)),
                               [[0.0, 2.0], [0.5, 0.0], [1.0, -1.0]], atol=1e-6)  # affine onto the bounds, clipped
    for name in ("halfcheetah_vel", "halfcheetah_dir", "ant_dir"):
        assert Config(**PRESETS[name]).action_normalization_scale == 10.0
    for name in ("metaworld", "cheap"):
        assert Config(**PRESETS[name]).action_normalization_scale is None


# --- 3. one inner step per task over its trials pooled ---------------------------------------------------


@pytest.mark.parametrize("inner_batch", ["task", "trial"])
def test_inner_batch_task_adapts_once_per_task_on_all_its_trials(
    inner_batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``task``: one inner step per task over its 3 trials pooled, and each of its post-update trials
    acts with that task's parameters; ``trial``: one step per trial on that trial alone."""
    sampler, tasks, env = family_setup("point_nav", tasks=4)
    learner = MAML(env, Config(**{**PRESETS["cheap"], "trials_per_task": 3, "inner_batch": inner_batch}), seed=0)
    calls, batches = capture_inner_steps(monkeypatch), capture_batches(sampler)
    learner.train_iteration(sampler, tasks)
    (_, pre_batch), (post_policy, _) = batches
    inner = calls[0]
    adapted = inner["result"][-1]
    rows = 4 if inner_batch == "task" else 12
    assert inner["data"].obs.shape[:2] == (rows, 12 * 20 // rows)  # 12 one-episode trials of 20 steps
    assert adapted["log_std"].shape == (rows, 2)

    # The same step from θ (as it was before the outer step), the trials of a task pooled or not.
    pooled = pool_trials(pre_batch, 3) if inner_batch == "task" else pre_batch
    theta = inner["params"]
    assert all(torch.equal(v[0], v[-1]) for v in theta.values())  # θ for every adaptation
    expected = adapt_parameters(learner.net, theta, to_rollouts(learner.net, pooled, theta, learner.config),
                                learner.config, create_graph=False)[-1]
    for name in adapted:
        torch.testing.assert_close(adapted[name], expected[name])
    # Post-update: trial j of task i acts with task i's parameters (task) or trial (3i + j)'s own (trial).
    per_trial = post_policy.params["body.4.bias"]
    assert per_trial.shape[0] == 12
    if inner_batch == "task":
        assert all(torch.equal(per_trial[3 * i + j], adapted["body.4.bias"][i]) for i in range(4) for j in range(3))
    else:
        assert torch.equal(per_trial, adapted["body.4.bias"])
        assert not torch.equal(per_trial[0], per_trial[1])  # two trials of task 0, adapted apart


def test_pool_trials_concatenates_a_tasks_trials_and_renumbers_its_episodes() -> None:
    sampler, tasks, env = family_setup("point_nav", tasks=2)
    rows = [t for t in tasks for _ in range(3)]
    learner = MAML(env, Config(**PRESETS["cheap"]), seed=0)
    batch = sampler.collect(learner.exploration_policy(), rows, 2)  # [6, 40]: trials of 2 episodes
    pooled = pool_trials(batch, 3)
    assert pooled.obs.shape[:2] == (2, 120) and pooled.task_ids == [t.task_id for t in tasks]
    np.testing.assert_array_equal(pooled.rewards[1, 40:80], batch.rewards[4])
    np.testing.assert_array_equal(pooled.episode_index[1], np.repeat(np.arange(6), 20))
    np.testing.assert_array_equal(pooled.episode_returns[0], batch.episode_returns[:3].ravel())
    assert pool_trials(batch, 1) is batch
    with pytest.raises(ValueError, match="consecutive rows of one task"):
        pool_trials(batch, 2)
    with pytest.raises(ValueError, match="do not divide"):
        pool_trials(batch, 4)


def test_inner_batch_is_validated_and_the_paper_presets_pool() -> None:
    with pytest.raises(ValueError, match=r"^inner_batch: must be one of task, trial"):
        Config(inner_batch="episode")  # type: ignore[arg-type]
    for name in ("halfcheetah_vel", "halfcheetah_dir", "ant_dir", "metaworld"):
        assert Config(**PRESETS[name]).inner_batch == "task", name
    assert Config(**PRESETS["cheap"]).inner_batch == "trial"


# --- 4. adapt on k exploration episodes per task ---------------------------------------------------------


@pytest.mark.parametrize("episodes", [1, 2, 5])
def test_adapt_takes_one_step_per_task_on_all_of_its_k_exploration_episodes(episodes: int) -> None:
    """The suite's ``evaluation.exploration_episodes`` may differ from the config's: ``adapt`` fits the
    baseline over all ``k`` episodes of a row and takes one step on them (ProMP adapts on 20)."""
    sampler, tasks, env = family_setup("halfcheetah_vel", tasks=3, episode_steps=15)
    config = Config(**{**PRESETS["halfcheetah_vel"], "normalise_advantages": False})
    learner = MAML(env, config, seed=0)
    assert learner.exploration_episodes == 1
    policy = learner.exploration_policy()
    exploration = sampler.collect(policy, tasks, episodes)
    adapted = learner.adapt(policy, exploration)

    raw = policy.in_policy_units(exploration)  # type: ignore[attr-defined]
    net = copy.deepcopy(learner.net).double()
    theta = {k: v.detach() for k, v in net.named_parameters()}
    advantages = torch.from_numpy(by_hand_advantages(raw, 1, config.discount))
    obs, actions = torch.from_numpy(raw.obs).double(), torch.from_numpy(raw.actions).double()
    mask = torch.from_numpy(raw.valid).double()
    for i in range(len(tasks)):  # θ' = θ + α ∇ mean_t log π(a_t|s_t) A_t over all k episodes of task i
        params = {k: v.clone().requires_grad_() for k, v in theta.items()}
        out, log_std = policy_outputs(net, stack(params, 1), obs[i : i + 1])
        objective = (log_prob_from(out, log_std, actions[i : i + 1]) * advantages[i] * mask[i]).sum() / mask[i].sum()
        grads = torch.autograd.grad(objective, list(params.values()))
        for (name, value), grad in zip(theta.items(), grads, strict=True):
            torch.testing.assert_close(adapted.params[name][i].double(), value + config.inner_lr * grad,  # type: ignore[attr-defined]
                                       rtol=1e-4, atol=1e-5)


def test_evaluation_on_k_episodes_takes_the_step_training_takes_on_k_pooled_trials(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training pools a task's ``trials_per_task`` one-episode trials; evaluation with
    ``exploration_episodes`` = that many adapts on one trial of as many episodes. On the same episodes
    the two steps are the same."""
    sampler, tasks, env = family_setup("point_nav", tasks=4)
    learner = MAML(env, Config(**{**PRESETS["cheap"], "trials_per_task": 3, "inner_batch": "task"}), seed=0)
    calls, batches = capture_inner_steps(monkeypatch), capture_batches(sampler)
    state = copy.deepcopy(learner.state_dict())
    learner.train_iteration(sampler, tasks)
    learner.load_state_dict(state)  # θ as it was for the inner step
    explore, pre_batch = batches[0]
    adapted = learner.adapt(explore, pool_trials(pre_batch, 3))
    for name, value in calls[0]["result"][-1].items():
        torch.testing.assert_close(adapted.params[name], value)  # type: ignore[attr-defined]


def test_maml_builds_whatever_the_familys_trial_length() -> None:
    """Training trials are ``exploration_episodes`` long whatever the family's; the evaluation protocol
    (trial length, exploration episodes) is the suite's to validate (``harness.spec.suite``)."""
    _, _, env = family_setup("point_nav", tasks=1)
    learner = MAML(env, Config(exploration_episodes=20, trials_per_task=1), seed=0)  # trials of 2 in the family
    assert learner.exploration_episodes == 20


# --- 5. evaluation draws from its own generator and changes nothing -------------------------------------


def test_evaluation_draws_from_the_generator_it_is_given_and_leaves_training_untouched() -> None:
    """``exploration_policy(g)`` and the policy ``adapt`` returns draw from ``g`` alone; the learner's
    ``state_dict`` (its training generator included) is unchanged, and training after an evaluation is
    what it would have been without it."""
    train_a, tasks, env = family_setup("halfcheetah_vel", tasks=2, seed=7, episode_steps=10)
    train_b = family_setup("halfcheetah_vel", tasks=2, seed=7, episode_steps=10)[0]
    config = Config(**{**PRESETS["halfcheetah_vel"], "trials_per_task": 2})
    learner, twin = MAML(env, config, seed=3), MAML(env, config, seed=3)
    assert learner.train_iteration(train_a, tasks) == twin.train_iteration(train_b, tasks)

    before = copy.deepcopy(learner.state_dict())
    evaluations = []
    for _ in range(2):  # the same generator seed: the same evaluation
        evaluation = family_setup("halfcheetah_vel", 2, 11, episode_steps=10)[0]
        generator = torch.Generator().manual_seed(42)
        policy = learner.exploration_policy(generator)
        assert policy.generator is generator  # type: ignore[attr-defined]
        explore = evaluation.collect(policy, tasks, 1)
        adapted = learner.adapt(policy, explore)
        assert adapted.generator is generator  # type: ignore[attr-defined]
        evaluations.append((explore.actions, evaluation.collect(adapted, tasks, 1).actions))
    np.testing.assert_array_equal(evaluations[0][0], evaluations[1][0])
    np.testing.assert_array_equal(evaluations[0][1], evaluations[1][1])
    after = learner.state_dict()
    assert torch.equal(after["generator"], before["generator"])
    for name, value in after["net"].items():
        assert torch.equal(value, before["net"][name]), name
    assert after["iterations"] == before["iterations"]

    # Training goes on exactly as the twin's, which was never evaluated.
    assert learner.train_iteration(train_a, tasks) == twin.train_iteration(train_b, tasks)
    for a, b in zip(learner.net.parameters(), twin.net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_exploration_policy_without_a_generator_is_the_training_one() -> None:
    _, _, env = family_setup("point_nav", tasks=1)
    learner = MAML(env, Config(**PRESETS["cheap"]), seed=0)
    policy = learner.exploration_policy()
    assert isinstance(policy, MAMLPolicy) and policy.generator is learner.generator
