"""The learners' ``device`` argument, on the CPU (the project's CI machines have no GPU).

What runs here is what a GPU learner does apart from the GPU itself: the argument's forms, checkpoints
holding CPU tensors only, and acting with CPU copies of the networks refreshed after every update —
forced on the CPU, where it must leave the run bit-identical to acting with the trained tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo
from algorithms.registry import learner_class
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import family_class, make_split

#: Small configs of every learner on point_nav (2 episodes of 20 steps per trial).
CONFIGS: dict[str, dict[str, Any]] = {
    "rl2": {"hidden_size": 16, "epochs": 2},
    "trmrl": {**learner_class("trmrl").presets["cheap"], "d_model": 16, "ff_size": 32, "working_memory": 40},
    "maml": {**learner_class("maml").presets["cheap"], "hidden_sizes": (16, 16)},
    "pearl": {**learner_class("pearl").presets["cheap"], "hidden_size": 16, "encoder_hidden_size": 16,
              "gradient_steps": 5, "posterior_context": "trial"},
}


def _tensors(state: Any) -> Iterator[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from _tensors(value)
    elif isinstance(state, list | tuple):
        for value in state:
            yield from _tensors(value)


def _run(algorithm: str, device: Any = None, iterations: int = 2) -> tuple[Any, list[dict[str, float]], list[Any]]:
    """Train ``iterations`` times on point_nav, then evaluate one trial per test task (adapting where the
    learner does); returns the learner, its logs and the evaluation batches."""
    cls = family_class("point_nav")
    family = cls(cls.Params())
    split = make_split(family, "pn", {"train": 6, "test": 3}, lambda s: seeding.generator(0, "device", s))
    sampler = Sampler(family, seeding.generator(0, "device", "sampler"))
    info = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    learner_cls = learner_class(algorithm)
    kwargs = {} if device is None else {"device": device}
    learner = learner_cls(info, learner_cls.Config(**CONFIGS[algorithm]), seed=1, **kwargs)
    logs = [learner.train_iteration(sampler, split["train"][:4]) for _ in range(iterations)]
    return learner, logs, _evaluate(learner, family, split["test"])


def _evaluate(learner: Any, family: Any, tasks: list[Any]) -> list[Any]:
    """One trial per task from the learner's policy (after its exploration episodes and ``adapt``, where it
    has them), its noise from the learner's own generator; the batches collected."""
    evaluation = Sampler(family, seeding.generator(0, "device", "eval"))
    policy = learner.exploration_policy()
    if learner.exploration_episodes is None:
        return [evaluation.collect(policy, tasks, 2)]
    explore = evaluation.collect(policy, tasks, learner.exploration_episodes)
    return [explore, evaluation.collect(learner.adapt(policy, explore), tasks, 1)]


def _assert_same_run(a: tuple[Any, list[dict[str, float]], list[Any]],
                     b: tuple[Any, list[dict[str, float]], list[Any]]) -> None:
    assert a[1] == b[1]  # every logged number, exactly
    for x, y in zip(a[2], b[2], strict=True):
        for field in ("obs", "actions", "rewards", "episode_returns"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    state_a, state_b = list(_tensors(a[0].state_dict())), list(_tensors(b[0].state_dict()))
    assert len(state_a) == len(state_b)
    assert all(torch.equal(x, y) for x, y in zip(state_a, state_b, strict=True))


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_cpu_given_by_name_or_as_torch_device_runs_exactly_as_the_default(algorithm: str) -> None:
    default = _run(algorithm)
    assert default[0].device == torch.device("cpu")
    for device in ("cpu", torch.device("cpu")):
        run = _run(algorithm, device)
        assert run[0].device == torch.device("cpu")
        _assert_same_run(default, run)


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_checkpoints_hold_cpu_tensors_only_and_load_with_weights_only(algorithm: str, tmp_path: Path) -> None:
    learner, _, _ = _run(algorithm, "cpu", iterations=1)
    state = learner.state_dict()
    assert all(tensor.device.type == "cpu" for tensor in _tensors(state))
    torch.save(state, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # as harness.run.store loads checkpoints
    restored, _, _ = _run(algorithm, "cpu", iterations=0)
    restored.load_state_dict(loaded)
    again = list(_tensors(restored.state_dict()))
    assert all(torch.equal(x, y) for x, y in zip(_tensors(state), again, strict=True))


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_acting_with_copies_refreshed_after_each_update_leaves_the_run_unchanged(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RL², MAML and PEARL act on the CPU; on a GPU they act with CPU copies of their networks (or of MAML's
    parameters), refreshed after every update and checkpoint load (TrMRL likewise, when told to act on the
    CPU). Forcing the copies on the CPU must not change a single number: a stale copy would act with old
    parameters and the evaluation would differ."""
    copies = {"rl2": lambda learner: learner.acting_net is not learner.net,
              "trmrl": lambda learner: learner.acting_net is not learner.net,
              "pearl": lambda learner: learner.acting_nets is not learner.nets,
              "maml": lambda learner: all(p is not q for p, q in zip(learner.exploration_policy().params.values(),
                                                                     learner.net.parameters(), strict=True))}
    normal = _run(algorithm, "cpu")
    assert not copies[algorithm](normal[0])
    monkeypatch.setattr(devices, "shares_tensors", lambda device, acting: False)
    copied = _run(algorithm, "cpu")
    assert copies[algorithm](copied[0])
    _assert_same_run(normal, copied)


def test_device_names_are_checked_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match=r"^device: 'auto' must be resolved"):
        devices.resolve("auto")
    with pytest.raises(ValueError, match=r"^device: 'gpu0' is not a torch device"):
        devices.resolve("gpu0")
    assert devices.resolve(torch.device("cpu")) == devices.resolve("cpu") == torch.device("cpu")
    if torch.cuda.is_available():  # either way the outcome is checked: a device, or a clear error
        assert devices.resolve("cuda:0") == torch.device("cuda:0")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            devices.resolve("cuda:0")


def test_cpu_state_keeps_the_structure_and_cpu_tensors_themselves() -> None:
    tensor = torch.ones(2)
    state = {"a": tensor, "b": [tensor, (tensor, 3)], "c": "text"}
    moved = devices.cpu_state(state)
    assert moved["a"] is tensor and moved["b"][0] is tensor and moved["b"][1][0] is tensor
    assert isinstance(moved["b"][1], tuple) and moved["b"][1][1] == 3 and moved["c"] == "text"


def test_acting_copy_is_the_module_on_its_own_device_and_a_refreshed_copy_elsewhere() -> None:
    net, cpu = nn.Linear(3, 2), torch.device("cpu")
    assert devices.acting_copy(net, cpu, cpu) is net
    copy = devices.acting_copy(net, torch.device("meta"), cpu)  # trained elsewhere than the CPU: a CPU copy
    assert copy is not net and copy.weight.device.type == "cpu" and torch.equal(copy.weight, net.weight)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not torch.equal(copy.weight, net.weight)
    devices.refresh(copy, net)
    assert torch.equal(copy.weight, net.weight) and copy.weight is not net.weight


def test_each_learner_acts_where_it_says_unless_told_otherwise() -> None:
    """``acts_on(config)`` picks the acting device relative to the training device (TrMRL by its width: the
    device for the paper's locomotion width, the CPU for its Meta-World one); ``acting_on`` overrides it for
    the learners built inside it, and only there."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")  # a name only: nothing is allocated

    def config(name: str, preset: str) -> Any:
        cls = learner_class(name)
        return cls.Config(**cls.presets.get(preset, {}))

    assert {name: learner_class(name).acts_on(config(name, "halfcheetah_vel")) for name in CONFIGS} == {
        "rl2": "cpu", "trmrl": "device", "maml": "cpu", "pearl": "cpu"}
    assert learner_class("trmrl").acts_on(config("trmrl", "metaworld")) == "cpu"
    assert devices.acting_device(gpu, "cpu") == cpu and devices.acting_device(gpu, "device") == gpu
    with devices.acting_on("device"):
        assert devices.acting_device(gpu, "cpu") == gpu
        with devices.acting_on(None):  # the learner's own choice again
            assert devices.acting_device(gpu, "cpu") == cpu
    with devices.acting_on("cpu"):
        assert devices.acting_device(gpu, "device") == cpu
    assert devices.acting_device(gpu, "device") == gpu  # restored on leaving the block
    with pytest.raises(ValueError, match="'gpu' is not 'cpu' or 'device'"), devices.acting_on("gpu"):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_on_a_cpu_device_acting_on_the_cpu_or_on_the_device_is_one_and_the_same(algorithm: str) -> None:
    """On a CPU device both choices act with the trained tensors themselves: the same run, bit for bit."""
    with devices.acting_on("cpu"):
        on_cpu = _run(algorithm, "cpu")
    with devices.acting_on("device"):
        on_device = _run(algorithm, "cpu")
    _assert_same_run(on_cpu, on_device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_on_a_gpu_acting_on_the_cpu_or_on_the_gpu_acts_the_same_up_to_rounding(algorithm: str) -> None:
    """A learner trained one iteration on CUDA, its state loaded into one acting with CPU copies and into one
    acting on the GPU: the same evaluation trials (the noise is drawn on the CPU either way, MAML adapts on
    the training device either way) up to floating-point rounding. Training is not compared: a TRPO line
    search may accept a different step on a rounding difference, which says nothing of where acting ran."""
    trained, _, _ = _run(algorithm, "cuda", iterations=1)
    cls = family_class("point_nav")
    family = cls(cls.Params())
    tasks = make_split(family, "pn", {"train": 6, "test": 3}, lambda s: seeding.generator(0, "device", s))["test"]
    batches = {}
    for where in ("cpu", "device"):
        with devices.acting_on(where):  # type: ignore[arg-type]
            learner, _, _ = _run(algorithm, "cuda", iterations=0)
        learner.load_state_dict(trained.state_dict())  # also refreshes the acting copies
        assert learner.exploration_policy().device.type == ("cpu" if where == "cpu" else "cuda")
        batches[where] = _evaluate(learner, family, tasks)
    for x, y in zip(batches["cpu"], batches["device"], strict=True):
        np.testing.assert_allclose(x.actions, y.actions, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(x.rewards, y.rewards, rtol=1e-4, atol=1e-4)
