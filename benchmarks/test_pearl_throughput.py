"""PEARL training throughput on ``halfcheetah_vel``, against the bare simulator measured in the same process.

Run with ``pytest benchmarks/test_pearl_throughput.py --benchmark-only -s``.

One round is one ``train_iteration`` of the ``halfcheetah_vel`` preset (oyster's networks and batches:
300 × 3 units, meta-batch 16 × 256 transitions, context 100) on 5 tasks already initialised, so each round
collects the same 5 × (400 prior + 600 extra posterior) = 5000 env steps in 200-step episodes, but with
``GRADIENT_STEPS`` gradient steps instead of the preset's 2000 so that a round takes seconds. Reported in
``extra_info`` (and printed):

* ``s_per_10k_env_steps``: the round's wall time per 10k env steps collected;
* ``simulator_share``: the time a bare ``gymnasium.vector.SyncVectorEnv`` of 5 ``HalfCheetah-v5`` takes
  for the same 5000 env steps with pre-drawn random actions, over the round's time;
* ``collection_share``: the time spent inside ``sampler.collect`` (simulator + batched policy calls);
* ``ms_per_gradient_step`` and ``preset_s_per_10k_env_steps``: the cost with the preset's 2000
  gradient steps per iteration, extrapolated from the measured collection and gradient-step times.

Rounds of PEARL and of the bare vector env alternate (pedantic's untimed setup), so both see the same
load; each side's best round is its figure. Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import time
from typing import Any

from algorithms.base import MetaEnvInfo
from algorithms.pearl import PEARL, PRESETS, Config
from harness import seeding
from harness.bench import THREADS, TimedSampler, halfcheetah_bare, torch_threads
from harness.rollout import Sampler
from harness.tasks import family_class, make_split

TASKS, ROUNDS, GRADIENT_STEPS = 5, 3, 10
PRESET = "halfcheetah_vel"


def test_pearl_iteration_vs_bare_vector_env(benchmark: Any) -> None:
    with torch_threads(THREADS):  # one, as the harness's workers
        _measure(benchmark)


def _measure(benchmark: Any) -> None:
    cls = family_class(PRESET)
    family = cls(cls.Params())
    tasks = make_split(family, "bench", {"train": TASKS}, lambda split: seeding.generator(0, "bench", split))["train"]
    sampler = Sampler(family, seeding.generator(0, "bench", "sampler"))
    info = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    config = Config(**{**PRESETS[PRESET], "gradient_steps": GRADIENT_STEPS, "collect_tasks": TASKS})
    learner = PEARL(info, config, seed=0)
    learner.train_iteration(sampler, tasks)  # initial data for every task: rounds then collect the same
    steps_per_task = config.prior_env_steps + config.posterior_env_steps + config.extra_rl_env_steps
    bare = halfcheetah_bare(TASKS, steps_per_task)
    rounds: list[dict[str, float]] = []

    def iteration() -> None:
        timed = TimedSampler(sampler)
        env_steps, gradient_steps = sampler.env_steps, learner.gradient_steps_taken
        start = time.perf_counter()
        learner.train_iteration(timed, tasks)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        rounds.append({"seconds": seconds, "collect": timed.seconds, "env_steps": sampler.env_steps - env_steps,
                       "gradient_steps": learner.gradient_steps_taken - gradient_steps})

    benchmark.pedantic(iteration, setup=bare.run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    bare.close()
    best = min(rounds[1:], key=lambda r: r["seconds"])  # rounds[0] is pedantic's warm-up
    env_steps = best["env_steps"]
    assert env_steps == TASKS * steps_per_task  # whole 200-step episodes, no initial data
    simulator = min(bare.seconds)
    step_ms = 1e3 * (best["seconds"] - best["collect"]) / best["gradient_steps"]
    preset_seconds = best["collect"] + PRESETS[PRESET]["gradient_steps"] * step_ms / 1e3  # the rest is training
    figures = {
        "env_steps_per_round": env_steps,
        "gradient_steps_per_round": best["gradient_steps"],
        "s_per_10k_env_steps": round(best["seconds"] / env_steps * 1e4, 3),
        "simulator_share": round(simulator / best["seconds"], 4),
        "collection_share": round(best["collect"] / best["seconds"], 4),
        "bare_vector_steps_per_s": round(env_steps / simulator),
        "ms_per_gradient_step": round(step_ms, 2),
        "preset_s_per_10k_env_steps": round(preset_seconds / env_steps * 1e4, 1),
    }
    benchmark.extra_info.update(figures)
    print(f"\nPEARL {PRESET}, {env_steps} env steps + {best['gradient_steps']} gradient steps per round: "
          f"{figures['s_per_10k_env_steps']:.2f} s per 10k env steps; simulator share "
          f"{figures['simulator_share']:.1%} (bare SyncVectorEnv {figures['bare_vector_steps_per_s']:,} steps/s), "
          f"collection share {figures['collection_share']:.1%}; {step_ms:.1f} ms per gradient step → "
          f"{figures['preset_s_per_10k_env_steps']:.0f} s per 10k env steps with the preset's "
          f"{PRESETS[PRESET]['gradient_steps']} gradient steps")
