"""Memoryless PPO (the ``multitask`` and ``oracle`` references): it learns a bandit's best arm (Discrete) and
a shared point-navigation goal (Box), acts as it trains, is reproducible from its seed and from a checkpoint,
and evaluating it never touches training."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from algorithms import mlp_ppo
from algorithms.base import MetaEnvInfo, Task, TrialBatch
from algorithms.mlp_ppo import MLPPPO, Config
from algorithms.ppo import gae
from harness.run.rollout import Sampler
from harness.tasks.bandit import BanditFamily, BanditParams
from harness.tasks.base import TaskFamily
from harness.tasks.point_nav import PointNavFamily, PointNavParams

MEANS = [0.1, 0.2, 0.9, 0.3, 0.1]  # arm 2 is best: 9 of 10 pulls pay
GOAL = [0.0, 1.0]
# Small batches (16 tasks × 10 or 20 steps) want fewer minibatches and larger steps than cleanrl's defaults.
CHEAP = {"lr": 1e-2, "minibatches": 4}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One intra-op thread, as the harness's workers run: the small MLPs run many times slower with two
    threads on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bandit(episodes_per_trial: int = 1) -> tuple[TaskFamily, list[Task], MetaEnvInfo]:
    family = BanditFamily(BanditParams(arms=5, pulls=10))
    tasks = [Task("bandit", f"train/{i:03d}", {"means": MEANS}) for i in range(16)]
    probe = Sampler(family, np.random.default_rng(0))
    return family, tasks, MetaEnvInfo(probe.observation_space, probe.action_space, episodes_per_trial,
                                      family.max_episode_steps)


def _point_nav(episodes_per_trial: int = 1) -> tuple[TaskFamily, list[Task], MetaEnvInfo]:
    family = PointNavFamily(PointNavParams())
    tasks = [Task("point_nav", f"train/{i:03d}", {"goal": GOAL}) for i in range(16)]
    probe = Sampler(family, np.random.default_rng(0))
    return family, tasks, MetaEnvInfo(probe.observation_space, probe.action_space, episodes_per_trial,
                                      family.max_episode_steps)


def _trial(learner: MLPPPO, family: TaskFamily, tasks: list[Task], deterministic: bool, seed: int = 7) -> TrialBatch:
    """One trial per task on evaluation environments of their own (the same reset seeds for every call)."""
    policy = learner.exploration_policy(torch.Generator().manual_seed(seed))
    return Sampler(family, np.random.default_rng(123)).collect(policy, tasks, 1, deterministic=deterministic)


def _train(learner: MLPPPO, sampler: Sampler, tasks: list[Task], iterations: int) -> list[dict[str, float]]:
    return [learner.train_iteration(sampler, tasks) for _ in range(iterations)]


def test_learns_the_best_arm_of_a_bandit_every_task_shares() -> None:
    family, tasks, info = _bandit()
    learner = MLPPPO(info, Config(**CHEAP), seed=0)
    untrained = _trial(learner, family, tasks, deterministic=False).episode_returns.mean()
    _train(learner, Sampler(family, np.random.default_rng(0)), tasks, 10)
    trained = _trial(learner, family, tasks, deterministic=True)
    assert (trained.actions == 2).all()  # the mode is the best arm, in every task, at every pull
    # untrained: near-uniform arms, ~3.2 of 10 pulls pay; the best arm pays ~9
    assert trained.episode_returns.mean() > 7.5 > untrained + 3.0


def test_moves_to_a_goal_every_task_shares() -> None:
    family, tasks, info = _point_nav()
    learner = MLPPPO(info, Config(**{**CHEAP, "lr": 3e-3}), seed=0)
    untrained = _trial(learner, family, tasks, deterministic=True).episode_returns.mean()
    _train(learner, Sampler(family, np.random.default_rng(0)), tasks, 20)
    trained = _trial(learner, family, tasks, deterministic=True).episode_returns.mean()
    # untrained: the mean action is 0, so the point stays 1 away for 20 steps (-20); heading straight for
    # the goal gives -4.5 (seeds 0-2 reach -5.5 to -4.9 in 20 iterations)
    assert untrained == pytest.approx(-20.0)
    assert trained > -9.0, f"return {trained:.2f} after 20 iterations"


def test_returns_stop_at_every_episode_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """No memory of earlier episodes: an episode's last step returns its own reward, nothing bootstrapped from
    the next episode of the trial (a time limit included: the batch has no observation after it)."""
    family, tasks, info = _point_nav(episodes_per_trial=2)
    returns: list[torch.Tensor] = []

    def recording_gae(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = gae(*args)
        returns.append(out[1])
        return out

    monkeypatch.setattr(mlp_ppo, "gae", recording_gae)
    MLPPPO(info, Config(**CHEAP), seed=0).train_iteration(Sampler(family, np.random.default_rng(0)), tasks)
    monkeypatch.undo()
    # the same seeds give the same batch
    batch = Sampler(family, np.random.default_rng(0)).collect(MLPPPO(info, Config(**CHEAP), seed=0)
                                                              .exploration_policy(), tasks, 2)
    ends = batch.episode_end
    assert ends[:, 19].all() and ends.sum() == 2 * len(tasks)  # episode 1 ends inside the trial
    torch.testing.assert_close(returns[0][torch.from_numpy(ends)], torch.from_numpy(batch.rewards[ends]))


def test_acting_matches_the_training_forward_with_normalised_observations() -> None:
    family, tasks, info = _point_nav()
    learner = MLPPPO(info, Config(**CHEAP, normalise_observations=True), seed=0)
    _train(learner, Sampler(family, np.random.default_rng(0)), tasks, 2)
    assert learner.net.obs_count > 600  # two batches of 16 × 20 steps merged into the statistics
    batch = _trial(learner, family, tasks, deterministic=True)
    with torch.no_grad():
        means = learner.net.actor(learner.net.normalise(torch.from_numpy(batch.obs)))
    torch.testing.assert_close(torch.from_numpy(batch.actions), means)


def test_observation_statistics_are_those_of_all_batches_seen() -> None:
    _, _, info = _point_nav()
    net = MLPPPO(info, Config(normalise_observations=True), seed=0).net
    first, second = torch.randn(50, 2) * 3 + 1, torch.randn(70, 2) - 2
    net.update_statistics(first), net.update_statistics(second)
    both = torch.cat([first, second]).double()
    # gymnasium's RunningMeanStd starts from a count of 1e-4: equal up to ~1e-6
    torch.testing.assert_close(net.obs_mean, both.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.obs_var, both.var(0, unbiased=False), rtol=1e-5, atol=1e-5)


def test_rewards_are_divided_by_the_running_std_of_their_discounted_return() -> None:
    """γ = 0.5; row 0 is one episode, row 1 restarts at step 2; the last step of row 1 is padding."""
    _, _, info = _point_nav()
    net = MLPPPO(info, Config(normalise_rewards=True), seed=0).net
    rewards = torch.tensor([[1.0, 1.0, 1.0], [2.0, 4.0, 9.0]])
    start = torch.tensor([[True, False, False], [True, False, True]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    scaled = net.scale_rewards(rewards, start, valid, discount=0.5)
    returns = torch.tensor([1.0, 1.5, 1.75, 2.0, 5.0], dtype=torch.float64)  # by hand; padding left out
    # gymnasium's RunningMeanStd starts from a count of 1e-4: equal up to ~1e-5
    torch.testing.assert_close(net.return_var, returns.var(unbiased=False), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scaled, rewards / returns.var(unbiased=False).sqrt().float(), rtol=1e-4, atol=1e-4)
    spike = torch.zeros(1, 1000)
    spike[0, 500] = 1.0  # a return std of ≈ 0.03: the spike scales to ≈ 32
    fresh = MLPPPO(info, Config(normalise_rewards=True), seed=0).net
    scaled = fresh.scale_rewards(spike, torch.ones(1, 1000, dtype=torch.bool), torch.ones(1, 1000, dtype=torch.bool),
                                 discount=0.0)  # fmt: skip
    assert scaled[0, 500] == 10.0 and (scaled[0, :500] == 0).all()  # clipped to ±10, as cleanrl's MuJoCo runs
    assert "return_var" not in MLPPPO(info, Config(), seed=0).state_dict()["net"]  # off: checkpoints keep their keys


def test_clipped_actions_reach_the_environment_and_log_probs_are_of_the_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``clip_actions`` (cleanrl's ClipAction): a policy whose mean sits beyond the bounds gives the
    environment (and the batch) clipped actions; it is scored on its own samples, whose log-probabilities are
    those of samples under their own density (≈ -1.42 per dimension at std 1), not of the clipped actions
    (≈ -8.9)."""
    family, tasks, info = _point_nav()
    learner = MLPPPO(info, Config(**CHEAP, clip_actions=True), seed=0)
    with torch.no_grad():
        learner.net.actor[-1].bias[0] = 5.0  # far beyond the bound 1
    policy = learner.exploration_policy(torch.Generator().manual_seed(3))
    batch = Sampler(family, np.random.default_rng(0)).collect(policy, tasks, 1)
    assert np.abs(batch.actions).max() <= 1.0 and (batch.actions[..., 0] == 1.0).mean() > 0.99
    raw = policy.in_policy_units(batch).actions
    assert raw[..., 0].mean() == pytest.approx(5.0, abs=0.2) and raw[..., 0].std() > 0.5
    np.testing.assert_array_equal(np.clip(raw, -1.0, 1.0), batch.actions)

    original, scored = mlp_ppo.ppo_loss, []

    def recording_loss(*args: Any) -> dict[str, torch.Tensor]:
        scored.append(args[1])  # the log-probabilities at collection
        return original(*args)

    monkeypatch.setattr(mlp_ppo, "ppo_loss", recording_loss)
    learner.train_iteration(Sampler(family, np.random.default_rng(0)), tasks)
    assert float(torch.cat(scored).mean()) > 2 * -1.42 - 0.5  # two dimensions, each near its own density's mean
    with pytest.raises(ValueError, match=r"^clip_actions: needs a Box"):
        MLPPPO(_bandit()[2], Config(clip_actions=True), seed=0)


def _equal(a: Any, b: Any) -> bool:
    """Exact equality through nested dicts, lists and tuples of tensors and scalars."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("make", [_bandit, _point_nav], ids=["discrete", "box"])
def test_same_seed_same_run_and_a_reloaded_checkpoint_continues_bit_identically(make: Any, tmp_path: Any) -> None:
    family, tasks, info = make(episodes_per_trial=2)
    config = Config(**CHEAP, normalise_observations=True, normalise_rewards=True)

    def run(seed: int) -> tuple[MLPPPO, Sampler, list[dict[str, float]]]:
        learner, sampler = MLPPPO(info, config, seed=seed), Sampler(family, np.random.default_rng(seed))
        return learner, sampler, _train(learner, sampler, tasks, 2)

    learner, sampler, logs = run(0)
    twin, _, twin_logs = run(0)
    assert logs == twin_logs and "train_return" in logs[0]
    actions = [_trial(each, family, tasks, deterministic=False).actions for each in (learner, twin)]
    np.testing.assert_array_equal(*actions)
    assert not _equal(*(MLPPPO(info, config, seed=s).state_dict()["net"] for s in (0, 1)))  # other initial weights

    torch.save({"learner": learner.state_dict(), "sampler": sampler.state_dict()}, tmp_path / "checkpoint.pt")
    continued = _train(learner, sampler, tasks, 2)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed, resumed_sampler, _ = run(5)  # other weights, statistics and generator: all must be overwritten
    resumed.load_state_dict(saved["learner"])
    resumed_sampler.load_state_dict(saved["sampler"])
    assert _train(resumed, resumed_sampler, tasks, 2) == continued
    assert _equal(resumed.state_dict(), learner.state_dict())


@pytest.mark.parametrize("make", [_bandit, _point_nav], ids=["discrete", "box"])
def test_evaluation_draws_from_its_own_generator_and_never_touches_training(make: Any) -> None:
    family, tasks, info = make()
    learner = MLPPPO(info, Config(**CHEAP), seed=0)
    _train(learner, Sampler(family, np.random.default_rng(0)), tasks, 1)
    before = copy.deepcopy(learner.state_dict())  # the generator's state included

    def evaluate(seed: int) -> np.ndarray:
        policy = learner.exploration_policy(torch.Generator().manual_seed(seed))
        sampler = Sampler(family, np.random.default_rng(1))
        exploration = sampler.collect(policy, tasks, 1)
        adapted = learner.adapt(policy, exploration)
        assert adapted is policy  # nothing to adapt
        return np.concatenate([exploration.actions, sampler.collect(adapted, tasks, 1).actions], axis=1)

    first = evaluate(7)
    assert _equal(learner.state_dict(), before)
    learner.generator.manual_seed(99)  # evaluation does not read the training generator either
    np.testing.assert_array_equal(evaluate(7), first)
    assert not np.array_equal(evaluate(8), first)


def test_presets_are_valid_and_yaml_lists_become_tuples() -> None:
    mujoco = Config(**MLPPPO.presets["mujoco"])
    assert (mujoco.hidden_sizes, mujoco.lr, mujoco.epochs, mujoco.max_grad_norm) == ((64, 64), 3e-4, 10, 0.5)
    assert mujoco.normalise_observations and mujoco.normalise_rewards and mujoco.clip_actions  # cleanrl's make_env
    assert Config(hidden_sizes=[32, 32]).hidden_sizes == (32, 32)  # type: ignore[arg-type]
    assert MLPPPO.acts_on(mujoco) == "cpu" and MLPPPO.exploration_episodes is None


@pytest.mark.parametrize(("name", "value"), [
    ("hidden_sizes", (64, 0)), ("lr", 0.0), ("adam_eps", -1e-5), ("discount", 1.5), ("gae_lambda", -0.1),
    ("clip", 0.0), ("epochs", 0), ("minibatches", 0), ("entropy_coef", -0.01), ("value_coef", -1.0),
    ("max_grad_norm", 0.0), ("target_kl", 0.0), ("init_std", 0.0),
])
def test_bad_config_values_raise_naming_the_field(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{name}:"):
        Config(**{name: value})
