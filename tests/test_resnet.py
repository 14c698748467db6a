"""ResNet-18 of incremental CIFAR-100 and generate-and-test for its conv channels."""

import math

import pytest
import torch
from torch import nn

from baselines.core.gnt import GenerateAndTest, SingleSeed, resnet_units
from baselines.core.nets import ChannelLayer, ResNet18, stage_channels
from baselines.core.optim import OptimizerEntries
from lop_bench.errors import InvalidConfigError


def _net(seed=0, width=0.0625, num_classes=10):
    return ResNet18(num_classes, width, generator=torch.Generator().manual_seed(seed))


def test_stage_channels_and_errors():
    assert stage_channels(1.0) == (64, 128, 256, 512)
    assert stage_channels(0.125) == (8, 16, 32, 64)
    assert stage_channels(0.25) == (16, 32, 64, 128)
    assert stage_channels(1e-4) == (1, 1, 1, 1)
    for bad in (0, -1, float("nan")):
        with pytest.raises(InvalidConfigError, match="width"):
            stage_channels(bad)


def test_architecture_shapes_and_features():
    net = _net(width=0.125)
    assert len(net.blocks) == 8
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert all(isinstance(m.bias, torch.Tensor) for m in net.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net.eval()
    logits, feats = net.forward_with_features(x)
    assert logits.shape == (3, 10)
    assert torch.equal(logits, net(x))
    # stem, then (mid, out) per block with the last block's output replaced by the pooled one
    assert len(feats) == 17
    assert feats[0].shape == (3, 8, 32, 32)
    sizes = [f.shape[1:] for f in feats[1:-1]]
    assert sizes[0] == (8, 32, 32) and sizes[4] == (16, 16, 16) and sizes[8] == (32, 8, 8)
    assert sizes[12] == (64, 4, 4) and sizes[14] == (64, 4, 4)
    assert feats[-1].shape == (3, 64)
    mids = net.forward_with_features(x, all_features=False)[1]
    assert len(mids) == 8 and all(torch.equal(a, feats[1 + 2 * i]) for i, a in enumerate(mids))


def test_init_follows_the_paper_code_and_uses_only_the_generator():
    state = torch.get_rng_state()
    net = ResNet18(100, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            std = m.weight.std().item()
            assert std == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.1 if m.weight.numel() > 500 else 0.5)
            assert torch.all(m.bias == 0)
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
    assert net.fc.weight.std().item() == pytest.approx(1 / math.sqrt(512), rel=0.05)
    assert torch.all(net.fc.bias == 0)
    # Torchvision's ResNet-18 has 11,227,812 parameters for 100 classes; the paper's adds
    # conv biases and a 3x3 stem (64 * 3 * (9 - 49) fewer weights).
    conv_biases = sum(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d))
    assert sum(p.numel() for p in net.parameters()) == 11_227_812 + conv_biases - 64 * 3 * 40


def test_matches_torchvision_resnet18_with_the_paper_modifications():
    torchvision = pytest.importorskip("torchvision")
    net = ResNet18(100, 1.0, generator=torch.Generator().manual_seed(3))
    tv = torchvision.models.resnet18(num_classes=100)
    tv.conv1 = nn.Conv2d(3, 64, 3, 1, 1)
    tv.maxpool = nn.Identity()

    def add_bias(module):
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d) and child.bias is None:
                setattr(module, name, nn.Conv2d(child.in_channels, child.out_channels,
                                                child.kernel_size, child.stride, child.padding))
            else:
                add_bias(child)

    add_bias(tv)
    mapped = {}
    for k, v in net.state_dict().items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            k = f"layer{int(i) // 2 + 1}.{int(i) % 2}.{rest}"
        mapped[k] = v
    tv.load_state_dict(mapped, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    net.eval()
    tv.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), tv(x), rtol=1e-5, atol=1e-5)


def test_same_generator_same_network():
    a, b, c = _net(0), _net(0), _net(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    g = torch.Generator().manual_seed(5)
    before = a.fc.weight.clone()
    a.reset_head(g)
    assert not torch.equal(a.fc.weight, before)
    assert a.fc.weight.std().item() == pytest.approx(1 / math.sqrt(a.fc.in_features), rel=0.3)


# -- generate-and-test -----------------------------------------------------------------------
def _residual_gnt(layers, opt, generator, **settings):
    """Generate-and-test over a ResNet's channel layers, one seed (as the agent builds it)."""
    return SingleSeed(GenerateAndTest(resnet_units(layers), [generator], OptimizerEntries(opt),
                                      **settings))


def _trained_net_and_gnt(rate=0.0, maturity=0, utility="contribution", coverage="first_convs"):
    torch.manual_seed(0)  # only for the data below; the net uses its own generator
    net = _net(0, width=0.125)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gnt = _residual_gnt(net.channel_layers(coverage), opt,
                                  torch.Generator().manual_seed(7), replacement_rate=rate,
                                  decay_rate=0.99, maturity_threshold=maturity, utility=utility)
    return net, opt, gnt


def _train(net, opt, gnt, steps=5, seed=0, before_step=None):
    g = torch.Generator().manual_seed(seed)
    net.train()
    all_features = len(gnt.layers) == 17
    for _ in range(steps):
        if before_step is not None:
            before_step()
        x = torch.randn(6, 3, 16, 16, generator=g)
        y = torch.randint(0, 10, (6,), generator=g)
        logits, mids = net.forward_with_features(x, all_features=all_features)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        gnt.step(mids)


def _pin_channel(block, c, value):
    """Make channel c of the block's first conv output the constant max(value, 0) (train and eval)."""
    with torch.no_grad():
        block.bn1.weight[c] = 0.0
        block.bn1.bias[c] = value


@pytest.mark.parametrize("value", [-1.0, 0.0])
def test_replacing_a_dead_channel_leaves_the_eval_output_exactly_unchanged(value):
    net, opt, gnt = _trained_net_and_gnt()
    b, c = 2, 3
    block = net.blocks[b]
    _train(net, opt, gnt, before_step=lambda: _pin_channel(block, c, value))
    _pin_channel(block, c, value)
    assert gnt.mean_activation(b)[c] == 0.0
    net.eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = net(x)
        block_in = net.blocks[b - 1](net.blocks[b - 2](torch.relu(net.bn1(net.conv1(x)))))
    old_w2 = block.conv2.weight.clone()
    running_mean2 = block.bn2.running_mean.clone()
    assert opt.state[block.conv1.weight]["momentum_buffer"][c].abs().sum() > 0
    expected_fresh = torch.empty_like(block.conv1.weight[c:c + 1]).normal_(
        0.0, math.sqrt(2.0 / (block.conv1.in_channels * 9)),
        generator=torch.Generator().manual_seed(7))
    gnt.replace(b, [c])
    with torch.no_grad():
        after = net(x)
    assert torch.equal(after, before)
    assert torch.equal(block.bn2.running_mean, running_mean2)
    # incoming weights fresh (the init distribution, from the gnt generator), outgoing zero
    assert torch.equal(block.conv1.weight[c:c + 1], expected_fresh)
    assert block.conv1.bias[c] == 0
    assert torch.all(block.conv2.weight[:, c] == 0)
    others = [i for i in range(block.conv2.in_channels) if i != c]
    assert torch.equal(block.conv2.weight[:, others], old_w2[:, others])
    # batch norm of the unit reset
    assert block.bn1.weight[c] == 1 and block.bn1.bias[c] == 0
    assert block.bn1.running_mean[c] == 0 and block.bn1.running_var[c] == 1
    # optimizer state of incoming and outgoing entries reset, other entries kept
    st = opt.state
    assert torch.all(st[block.conv1.weight]["momentum_buffer"][c] == 0)
    assert st[block.conv1.bias]["momentum_buffer"][c] == 0
    assert st[block.bn1.weight]["momentum_buffer"][c] == 0
    assert st[block.bn1.bias]["momentum_buffer"][c] == 0
    assert torch.all(st[block.conv2.weight]["momentum_buffer"][:, c] == 0)
    assert st[block.conv2.weight]["momentum_buffer"][:, others].abs().sum() > 0
    # statistics reset
    assert gnt.age[b][c] == 0 and gnt.utility[b][c] == 0 and gnt.mean_act[b][c] == 0
    assert gnt.num_replaced[b] == 1
    # the fresh unit adds nothing: the block's output does not depend on its activation
    with torch.no_grad():
        out1 = block(block_in)
        block.bn1.bias[c] = 5.0
        out2 = block(block_in)
    assert torch.equal(out1, out2)


def test_replacing_a_constant_channel_moves_its_contribution_into_bn2():
    net, opt, gnt = _trained_net_and_gnt()
    b, c = 3, 5
    block = net.blocks[b]
    _train(net, opt, gnt, steps=4, before_step=lambda: _pin_channel(block, c, 0.7))
    _pin_channel(block, c, 0.7)
    # bias-corrected running mean of a constant activation is the constant
    assert gnt.mean_activation(b)[c].item() == pytest.approx(0.7, rel=1e-5)
    net.eval()
    h = torch.randn(4, block.conv1.in_channels, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = block(h)
        gnt.replace(b, [c])
        after = block(h)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(after[inner], before[inner], rtol=1e-5, atol=1e-5)
    # at the border the 3x3 window reads zero padding: there the correction is not exact
    assert not torch.allclose(after, before, rtol=1e-5, atol=1e-5)
    # without the correction the interior would change too
    net2, opt2, gnt2 = _trained_net_and_gnt()
    _train(net2, opt2, gnt2, steps=4, before_step=lambda: _pin_channel(net2.blocks[b], c, 0.7))
    _pin_channel(net2.blocks[b], c, 0.7)
    net2.eval()
    with torch.no_grad():
        net2.blocks[b].conv2.weight[:, c] = 0.0
        uncorrected = net2.blocks[b](h)
    assert not torch.allclose(uncorrected[inner], before[inner], rtol=1e-3, atol=1e-3)


def test_step_replaces_only_mature_units_at_the_configured_rate():
    rate, maturity = 0.2, 3
    net, opt, gnt = _trained_net_and_gnt(rate=rate, maturity=maturity)
    channels = [blk.conv1.out_channels for blk in net.blocks]
    _train(net, opt, gnt, steps=3)
    assert gnt.num_replaced == [0] * 8  # nobody older than 3 yet
    assert all(torch.all(a == 3) for a in gnt.age)
    _train(net, opt, gnt, steps=3, seed=1)
    # steps 4-6: rate * eligible accumulates, its integer part is replaced; replaced units
    # are young again (not eligible) for the rest of the window
    for i, n in enumerate(channels):
        acc, eligible, total = 0.0, n, 0
        for _ in range(3):
            acc = acc + rate * eligible
            k = int(acc)
            acc -= k
            eligible -= k
            total += k
        assert gnt.num_replaced[i] == total > 0
        assert gnt.accumulated[i] == pytest.approx(acc)
        assert int((gnt.age[i] < 6).sum()) == total
    assert all(math.isfinite(float(u.sum())) for u in gnt.utility)


def test_utilities_are_contribution_averages():
    net, opt, gnt = _trained_net_and_gnt()
    feats = [torch.rand(2, blk.conv1.out_channels, 4, 4) for blk in net.blocks]
    gnt.step(feats)
    for i, blk in enumerate(net.blocks):
        expected = 0.01 * blk.conv2.weight.abs().mean(dim=(0, 2, 3)) * feats[i].abs().mean(dim=(0, 2, 3))
        torch.testing.assert_close(gnt.utility[i], expected)
        torch.testing.assert_close(gnt.mean_activation(i), feats[i].mean(dim=(0, 2, 3)))
    net2, opt2, gnt2 = _trained_net_and_gnt(utility="adaptable_contribution")
    gnt2.step(feats)
    assert all(torch.all(u >= 0) for u in gnt2.utility)


def test_gnt_state_roundtrip_continues_identically():
    net, opt, gnt = _trained_net_and_gnt(rate=0.02, maturity=2)
    _train(net, opt, gnt, steps=4)
    state = gnt.state_dict()
    net_state = {k: v.clone() for k, v in net.state_dict().items()}
    import copy

    opt_state = copy.deepcopy(opt.state_dict())
    gen_state = gnt.generator.get_state()
    _train(net, opt, gnt, steps=6, seed=3)
    ref = {k: v.clone() for k, v in net.state_dict().items()}

    net2, opt2, gnt2 = _trained_net_and_gnt(rate=0.02, maturity=2)
    net2.load_state_dict(net_state)
    opt2.load_state_dict(opt_state)
    gnt2.load_state_dict(state)
    gnt2.generator.set_state(gen_state)
    _train(net2, opt2, gnt2, steps=6, seed=3)
    assert gnt2.num_replaced == gnt.num_replaced and sum(gnt.num_replaced) > 0
    assert all(torch.equal(ref[k], v) for k, v in net2.state_dict().items())


# -- the paper's coverage: every conv outside the downsample shortcuts ----------------------
def test_channel_layers_follow_the_paper_codes_weight_layers():
    net = _net(width=0.125)
    b = net.blocks
    layers = net.channel_layers("all_convs")
    # res_gnt.py's get_weight_layers: stem, then conv1 and conv2 of each block; each next
    # listed layer reads the channels; the downsample shortcuts are skipped
    convs = [net.conv1] + [c for blk in b for c in (blk.conv1, blk.conv2)]
    assert [layer.conv for layer in layers] == convs
    assert [layer.next for layer in layers] == convs[1:] + [net.fc]
    assert [layer.bn for layer in layers] == [net.bn1] + [n for blk in b for n in (blk.bn1, blk.bn2)]
    assert [layer.next_bn for layer in layers[:-1]] == [layer.bn for layer in layers[1:]]
    assert layers[-1].next_bn is None
    downsample = {id(m) for blk in b if blk.downsample is not None for m in blk.downsample}
    assert downsample and not downsample & {id(x) for layer in layers for x in (layer.conv, layer.bn)}
    first = net.channel_layers("first_convs")
    assert [(x.conv, x.next) for x in first] == [(blk.conv1, blk.conv2) for blk in b]
    with pytest.raises(InvalidConfigError, match="coverage"):
        net.channel_layers("blocks")
    assert all(isinstance(x, ChannelLayer) for x in layers)


def test_all_convs_replace_stem_and_both_block_convs_with_their_batch_norms_reset():
    """The paper preset's coverage: channels of the stem and of both convolutions of a block
    are replaced, each with its batch norm's running statistics (and affine pair) reset."""
    net, opt, gnt = _trained_net_and_gnt(coverage="all_convs")
    _train(net, opt, gnt, steps=3)  # running statistics away from (0, 1)
    layers = gnt.layers
    b = net.blocks[1]
    picks = {0: net.conv1, 3: b.conv1, 4: b.conv2}  # stem; block 1's first and second conv
    for i, conv in picks.items():
        assert layers[i].conv is conv and conv.out_channels == 8
        bn = layers[i].bn
        assert (bn.running_mean != 0).all() and (bn.running_var != 1).all()
    with torch.no_grad():
        net.bn1.weight[1] = 0.3
        b.bn2.bias[1] = -0.2
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # One step in which only these layers have eligible units, one due in each (rate 1/8 of
    # 8 channels), channel 1 the lowest utility.
    state = gnt.state_dict()
    for i in range(len(layers)):
        state["birth"][i][0, :] = gnt.step_count - (20 if i in picks else 0)  # ages 20 or 0
        state["utility"][i].fill_(1.0)
        state["utility"][i][0, 1] = 0.0
    gnt.maturity_threshold, gnt.replacement_rate = 10, 1.0 / 8
    gnt.load_state_dict(state)  # (recounts the eligible units)
    net.eval()  # (a train-mode forward would move the running statistics)
    with torch.no_grad():
        feats = net.forward_with_features(torch.randn(2, 3, 16, 16), all_features=True)[1]
    gnt.step(feats)
    assert [gnt.num_replaced[i] for i in picks] == [1, 1, 1]
    assert sum(gnt.num_replaced) == 3
    for i in picks:
        layer = layers[i]
        assert gnt.age[i][1] == 0 and (gnt.age[i][[0, 2]] > 0).all()
        assert layer.bn.running_mean[1] == 0 and layer.bn.running_var[1] == 1
        assert layer.bn.weight[1] == 1 and layer.bn.bias[1] == 0 and layer.conv.bias[1] == 0
        # outgoing weights zeroed (but for block 1's conv2 row 1: it was replaced after)
        rows = [r for r in range(layer.next.weight.shape[0]) if not (i + 1 in picks and r == 1)]
        assert (layer.next.weight[rows, 1] == 0).all()
        name = next(k for k, m in net.named_modules() if m is layer.bn)
        assert torch.equal(layer.bn.running_var[2:], before[f"{name}.running_var"][2:])
    # the stem's fresh filter comes from the init distribution N(0, 2 / (3 * 9))
    assert not torch.equal(net.conv1.weight[1], before["conv1.weight"][1])


def test_replacing_a_block_output_channel_corrects_the_head_and_the_next_batch_norm():
    net, opt, gnt = _trained_net_and_gnt(coverage="all_convs")
    _train(net, opt, gnt, steps=3)
    layers = gnt.layers
    c = 2
    # the last block's output channel: read by the head through the pooling
    last = layers[-1]
    mean = gnt.mean_activation(16)[c]
    assert mean > 0
    fc_w, fc_b = net.fc.weight[:, c].clone(), net.fc.bias.clone()
    gnt.replace(16, [c])
    torch.testing.assert_close(net.fc.bias, fc_b + fc_w * mean)
    assert (net.fc.weight[:, c] == 0).all() and last.bn.running_var[c] == 1
    # a middle block's output channel: read by the next block's first conv through its bn1
    i = 4  # block 1's second conv, read by block 2's first conv
    layer = layers[i]
    mean = gnt.mean_activation(i)[c]
    sums = layer.next.weight[:, c].sum(dim=(1, 2)).clone()
    rm = layer.next_bn.running_mean.clone()
    gnt.replace(i, [c])
    torch.testing.assert_close(layer.next_bn.running_mean, rm - sums * mean)
    # the shortcut still reads the channel: the fresh unit reaches the output (not hidden)
    net.eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = net(x)
        layer.bn.bias[c] += 1.0
        assert not torch.allclose(net(x), out)


def test_steps_on_all_convs_keep_the_network_finite_and_the_same_from_a_checkpoint():
    net, opt, gnt = _trained_net_and_gnt(rate=0.05, maturity=2, coverage="all_convs")
    _train(net, opt, gnt, steps=8)
    assert all(n > 0 for n in gnt.num_replaced)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(ValueError, match="8 activations for 17 layers"):
        gnt.step(net.forward_with_features(torch.randn(2, 3, 16, 16), all_features=False)[1])
