"""Speed of class-incremental CIFAR-100: env + agent against the agent alone (no download).

Writes a synthetic CIFAR-100 (500 training and 100 test images of each class, random
class patterns plus noise) in the real ``cifar-100-python`` pickle layout to a temporary
directory, then, in one run, for each agent:

  (a) the env-driven loop: ``act`` -> ``env.step`` -> ``learn`` over the first ``--steps``
      steps of the stream (train batches with the env's augmentation, and the val steps
      that fall in between), recording every observation and info;
  (b) the bare loop: a fresh agent (same seed) calling ``act``/``learn`` on the very same
      recorded tensors and infos, no env;

and prints training images/s of both, the agent's milliseconds per training batch (the
val steps in between included) and the env's overhead ``(a) / (b) - 1``, which must stay
at most 10%; "env alone" is the env's own steps on the recorded actions, as a fraction of
(b): the overhead without the noise of two agent runs. Each loop runs ``--repeats`` times
(alternating) and the fastest counts.
One torch thread by default, as `lop-bench reproduce` runs its workers.

    python benchmarks/cifar_speed.py                                # cpu tier, width 1/8
    python benchmarks/cifar_speed.py --widths 0.125 0.25 --steps 20  # per-batch timings
    python benchmarks/cifar_speed.py --tier paper --device cuda --steps 200
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lop_bench
from baselines import backprop, continual_backprop, from_scratch, head_reset, shrink_perturb

ENV = "lop/IncrementalCIFAR100-v0"
FACTORIES = {
    "backprop": backprop.make_agent,
    "shrink_perturb": shrink_perturb.make_agent,
    "continual_backprop": continual_backprop.make_agent,
    "head_reset": head_reset.make_agent,
    "from_scratch": from_scratch.make_agent,
}
MAX_OVERHEAD = 0.10


def write_synthetic_cifar100(root: Path, train_per_class: int = 500, test_per_class: int = 100) -> Path:
    """A CIFAR-100-shaped dataset in ``root/cifar-100-python/{train,test,meta}`` (the official
    pickles' layout: ``data`` N x 3072 uint8 in R, G, B planes, ``fine_labels``)."""
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, size=(100, 3072), dtype=np.uint8)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class))
        noise = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data = (templates[labels] // 4 * 3 + noise // 4).astype(np.uint8)
        obj = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{name} batch",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": data,
        }
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    meta = {"fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _agent(name: str, env, device: str, hparams: dict):
    return FACTORIES[name](env.spec, env.observation_space, env.action_space, 0, device, **hparams)


def env_loop(env, name: str, device: str, hparams: dict, steps: int):
    """(seconds, train images, recorded steps) of act -> step -> learn over ``steps`` steps."""
    agent = _agent(name, env, device, hparams)
    obs, info = env.reset(seed=0)
    record, images = [], 0
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        action = agent.act(obs, info)
        next_obs, reward, term, trunc, next_info = env.step(action)
        agent.learn(obs, action, reward, next_obs, term, trunc, next_info)
        record.append((obs, info, next_info, action))
        if info["phase"] == "train":
            images += int(info["valid"])
        if next_info["stream_done"]:
            break
        obs, info = next_obs, next_info
    _sync(device)
    return time.perf_counter() - start, images, record


def bare_loop(env, name: str, device: str, hparams: dict, record) -> float:
    """Seconds of a fresh agent's act/learn on the recorded observations and infos."""
    agent = _agent(name, env, device, hparams)
    act, learn = agent.act, agent.learn
    _sync(device)
    start = time.perf_counter()
    for obs, info, next_info, _ in record:
        action = act(obs, info)
        learn(obs, action, 0.0, obs, False, False, next_info)
    _sync(device)
    return time.perf_counter() - start


def env_alone(env, record, device: str) -> float:
    """Seconds of the env's own steps on the recorded actions (no agent)."""
    env.reset(seed=0)
    _sync(device)
    start = time.perf_counter()
    for *_, action in record:
        env.step(action)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", default="cpu", help="stream tier (cpu, smoke, paper)")
    p.add_argument("--device", default="cpu", help="torch device of env data and agent (cuda)")
    p.add_argument("--agents", nargs="+", default=["backprop"], choices=list(FACTORIES))
    p.add_argument("--widths", nargs="+", type=float, default=None,
                   help="ResNet width factors to measure (default: the agent's preset)")
    p.add_argument("--steps", type=int, default=30, help="stream steps per measurement")
    p.add_argument("--repeats", type=int, default=2, help="alternating repeats (fastest counts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (reproduce uses 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    env_device = None if args.device == "cpu" else args.device
    widths = args.widths or [None]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cifar100(Path(tmp))
        # The synthetic files carry the official names, not their checksums: allow them.
        os.environ["LOP_BENCH_ALLOW_CHECKSUM_MISMATCH"] = "1"
        env = lop_bench.make(ENV, tier=args.tier, root=str(root), device=env_device).unwrapped
        cfg = env.config
        print(f"{ENV} [{args.tier}] on {args.device}, {args.threads} thread(s): batch "
              f"{cfg.batch_size}, {cfg.epochs_per_block} epochs/block; synthetic CIFAR-100; "
              f"first {args.steps} steps of the stream")
        print(f"{'agent':<20} {'width':>6} {'env+agent':>12} {'bare agent':>12} "
              f"{'ms/train batch':>15} {'overhead':>9} {'env alone':>9}")
        for name in args.agents:
            for width in widths:
                hp = {} if width is None else {"width": width}
                # warm-up: first-call costs (allocator, kernels) out of the measurement
                env_loop(env, name, args.device, hp, min(3, args.steps))
                t_env, t_bare, t_alone = float("inf"), float("inf"), float("inf")
                for _ in range(args.repeats):
                    t, images, record = env_loop(env, name, args.device, hp, args.steps)
                    t_env = min(t_env, t)
                    t_bare = min(t_bare, bare_loop(env, name, args.device, hp, record))
                    t_alone = min(t_alone, env_alone(env, record, args.device))
                train_steps = sum(1 for _, info, _, _ in record if info["phase"] == "train")
                overhead = t_env / t_bare - 1.0
                failed |= overhead > MAX_OVERHEAD
                w = _agent(name, env, "cpu", hp).cfg.width if width is None else width
                print(f"{name:<20} {w:>6.3f} {images / t_env:>9,.0f}/s {images / t_bare:>9,.0f}/s "
                      f"{1000 * t_bare / max(train_steps, 1):>15.1f} {overhead:>8.1%} "
                      f"{t_alone / t_bare:>9.1%}")
    print(f"required: env overhead at most {MAX_OVERHEAD:.0%}: {'FAIL' if failed else 'ok'}")
    if not args.device.startswith("cuda"):
        gpu = ("a GPU is available: measure a paper-tier block there with --tier paper "
               "--device cuda --steps 200" if torch.cuda.is_available()
               else "no GPU available here: the paper tier's images/s on a GPU was not measured")
        print(gpu)


if __name__ == "__main__":
    main()
