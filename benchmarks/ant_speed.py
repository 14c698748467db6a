"""Speed of the changing-friction Ant stream and of PPO training on it.

Prints env steps/s of
  (a) gymnasium's own Ant-v5 (``gymnasium.make("Ant-v5", ...).unwrapped``, the reference),
      random actions, reset at termination or after 1,000 steps;
  (b) lop/ChangingFrictionAnt-v0 (the class itself) with the same random actions: action
      checks, float32 observations, info keys, friction changes (every 10,000 steps here);
      (b') the same at a constant friction of 1.0, the Ant's own: the wrapper's cost alone
      (MuJoCo's step time depends on the contacts, so other frictions cost a little more
      or less);
  (c) full PPO training with the paper's settings (standard PPO preset: 2 x 256 ReLU
      policy and value networks, batch 2048, 10 epochs x 16 minibatches) on the stream,
      the DESIGN.md loop by hand, one process; optionally other presets (--agents).
(a) and (b) are interleaved, best of --repeats, so machine noise largely cancels. The
requirements: (b) within 10% of (a); (c) at least 1,200 steps/s on 2 CPU cores.

    python benchmarks/ant_speed.py                      # torch threads 1
    python benchmarks/ant_speed.py --threads 2 --agents ppo,ppo_cbp
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec

from lop_bench.envs.ant import ChangingFrictionAntEnv

ANT = ChangingFrictionAntEnv.ENV_ID


def plain_ant(actions: np.ndarray) -> float:
    """(a) Steps/s of gymnasium's Ant-v5 with ``actions``."""
    env = gymnasium.make("Ant-v5", include_cfrc_ext_in_observation=False).unwrapped
    env.reset(seed=0)
    step, reset = env.step, env.reset
    t = 0
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, _, _ = step(a)
        t += 1
        if terminated or t == 1000:
            reset()
            t = 0
    return len(actions) / (time.perf_counter() - start)


def stream(actions: np.ndarray, constant_friction: float | None = None) -> float:
    """(b) Steps/s of the stream with ``actions`` (friction changes every 10,000 steps)."""
    env = ChangingFrictionAntEnv(tier="cpu", steps_per_task=10_000, num_tasks=1_000,
                                 constant_friction=constant_friction)
    env.reset(seed=0)
    step, reset = env.step, env.reset
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    return len(actions) / (time.perf_counter() - start)


def ppo_training(agent_name: str, steps: int) -> float:
    """(c) Steps/s of PPO (preset ``agent_name``) learning on the stream for ``steps`` steps."""
    from lop_bench.agents import resolve_factory

    env = ChangingFrictionAntEnv(tier="cpu", steps_per_task=10_000, num_tasks=1_000)
    factory = resolve_factory(agent_name)[1]  # ppo, ppo_l2, ppo_cbp, ... (or canonical names)
    spec = EnvSpec(id=ANT, entry_point="x:y", kwargs={"tier": "cpu"})
    agent = factory(spec, env.observation_space, env.action_space, 0, "cpu")
    obs, info = env.reset(seed=0)
    act, learn, step, reset = agent.act, agent.learn, env.step, env.reset
    start = time.perf_counter()
    for _ in range(steps):
        action = act(obs, info)
        next_obs, reward, terminated, truncated, info = step(action)
        learn(obs, action, reward, next_obs, terminated, truncated, info)
        if terminated or truncated:
            next_obs, info = reset()
        obs = next_obs
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20_000, help="env steps per (a)/(b) measurement")
    p.add_argument("--ppo-steps", type=int, default=10 * 2048, help="env steps of (c) (10 updates)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads for (c)")
    p.add_argument("--agents", default="ppo", help="PPO presets for (c), comma-separated")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(args.steps, 8)).astype(np.float32)
    a = b = b1 = 0.0
    for _ in range(args.repeats):
        a = max(a, plain_ant(actions))
        b = max(b, stream(actions))
        b1 = max(b1, stream(actions, constant_friction=1.0))
    rows = [("(a)  gymnasium Ant-v5, random actions (reference)", a),
            ("(b)  lop/ChangingFrictionAnt-v0, random actions", b),
            ("(b') the same at constant friction 1.0", b1)]
    for name in args.agents.split(","):
        c = ppo_training(name, args.ppo_steps)
        rows.append((f"(c)  {name} training, paper settings, threads {args.threads}", c))
    print(f"changing-friction Ant: (a), (b) {args.steps:,} steps, best of {args.repeats}; "
          f"(c) {args.ppo_steps:,} steps ({args.ppo_steps // 2048} updates)")
    print(f"{'measurement':58s} {'steps/s':>9s} {'vs (a)':>8s}")
    for label, v in rows:
        print(f"{label:58s} {v:9,.0f} {v / a:7.1%}")
    print(f"(b) costs {(a / b - 1) * 100:+.1f}% time vs (a), (b') {(a / b1 - 1) * 100:+.1f}% "
          f"(required: within 10%); (c) >= 1,200 steps/s required.")


if __name__ == "__main__":
    main()
