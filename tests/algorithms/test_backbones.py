import pytest
import torch

from meta_bench.algorithms.backbones import BackboneConfig, build_model, conv4, mlp


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_conv4_omniglot_parameter_count_matches_finn_et_al():
    # 4 x [3x3 conv, 64 filters + BatchNorm(gamma, beta)], then a 64 -> 5 linear head
    expected = (1 * 64 * 9 + 64) + 3 * (64 * 64 * 9 + 64) + 4 * 2 * 64 + (64 * 5 + 5)
    assert expected == 112_261
    assert count(conv4((1, 28, 28), 5, 64, BackboneConfig(pooling="max"))) == expected
    assert count(conv4((1, 28, 28), 5, 64, BackboneConfig(pooling="stride"))) == expected  # Finn's strided variant: same weights


def test_conv4_miniimagenet_parameter_count_matches_finn_et_al():
    # 32 filters, 84x84 RGB -> 5x5x32 = 800 features after four 2x2 max-pools
    expected = (3 * 32 * 9 + 32) + 3 * (32 * 32 * 9 + 32) + 4 * 2 * 32 + (800 * 5 + 5)
    assert expected == 32_901
    assert count(conv4((3, 84, 84), 5, 32, BackboneConfig(pooling="max"))) == expected


def test_sinusoid_mlp_has_two_hidden_layers_of_40():
    assert count(mlp((1,), 1, 40)) == (1 * 40 + 40) + (40 * 40 + 40) + (40 + 1) == 1761


def test_batchnorm_uses_batch_statistics_in_train_and_eval_alike():
    model = conv4((1, 28, 28), 5, 8, BackboneConfig(pooling="max"))
    assert not list(model.buffers())  # no running statistics kept
    x = torch.rand(10, 1, 28, 28)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    assert torch.allclose(train_out, eval_out)
    # and the statistics are the batch's: a sample's output depends on the rest of its batch
    assert not torch.allclose(model(x[:5]), model(x)[:5])


def test_same_seed_same_initial_weights():
    a = build_model("conv4", (1, 28, 28), 5, BackboneConfig(), 64, seed=3)
    b = build_model("conv4", (1, 28, 28), 5, BackboneConfig(), 64, seed=3)
    c = build_model("conv4", (1, 28, 28), 5, BackboneConfig(), 64, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_finns_truncated_normal_init_draws_linear_weights_within_two_std_and_zero_biases():
    default = build_model("mlp", (1,), 1, BackboneConfig(), 0, seed=3)
    finn = build_model("mlp", (1,), 1, BackboneConfig(linear_init="truncated_normal"), 0, seed=3)
    again = build_model("mlp", (1,), 1, BackboneConfig(linear_init="truncated_normal"), 0, seed=3)
    linears = [m for m in finn.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert float(weights.abs().max()) <= 0.02 and 0.006 < float(weights.std()) < 0.01  # truncation shrinks the std
    assert all(float(m.bias.abs().max()) == 0 for m in linears)
    assert all(torch.equal(a, b) for a, b in zip(finn.parameters(), again.parameters()))  # seeded
    assert float(torch.cat([p.flatten() for p in default.parameters()]).abs().max()) > 0.1  # the default is untouched
    with pytest.raises(ValueError, match="linear_init_std"):
        BackboneConfig(linear_init_std=0)
