"""Diffusion math against closed forms: schedules, posterior, respacing, hybrid loss, samplers, guidance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ffnet_generation.diffusion import (
    GaussianDiffusion,
    GuidedModel,
    create_diffusion,
    get_named_beta_schedule,
    mix_guidance,
    respaced_betas,
    space_timesteps,
)
from ffnet_generation.diffusion.likelihood import discretized_gaussian_log_likelihood, normal_kl
from metamixer.train.errors import FFNetError


def test_linear_schedule_endpoints_and_alpha_bar():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(betas), (0.02 - 1e-4) / 999)
    d = GaussianDiffusion(betas)
    # abar_T of DDPM's schedule is ~4e-5 (the chain ends close to pure noise)
    assert d.alphas_cumprod[-1] == pytest.approx(np.exp(np.sum(np.log1p(-betas))), rel=1e-12)
    assert 3e-5 < d.alphas_cumprod[-1] < 5e-5
    # 250-step linear schedule is the 1000-step one scaled by 4
    assert get_named_beta_schedule("linear", 250)[0] == pytest.approx(4e-4)


def test_cosine_schedule_matches_closed_form_alpha_bar():
    T, s = 1000, 0.008
    d = GaussianDiffusion(get_named_beta_schedule("cosine", T))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    # identical until the 0.999 beta cap kicks in at the very end
    assert np.allclose(d.alphas_cumprod[:-5], expected[:-5], rtol=1e-9)
    assert d.betas.max() <= 0.999


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1}|x_t,x_0) from precision form: 1/var = 1/(1-abar_{t-1}) + alpha_t/beta_t."""
    d = create_diffusion()
    t_idx = np.array([1, 10, 500, 999])
    betas, abar_prev = d.betas[t_idx], d.alphas_cumprod_prev[t_idx]
    alphas = 1 - betas
    var = 1.0 / (1.0 / (1.0 - abar_prev) + alphas / betas)
    assert np.allclose(d.posterior_variance[t_idx], var, rtol=1e-10)
    x0, xt = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    mean, variance, logvar = d.q_posterior_mean_variance(x0, xt, torch.tensor(t_idx))
    ref = var[:, None] * (np.sqrt(abar_prev)[:, None] * x0.numpy() / (1 - abar_prev)[:, None]
                          + np.sqrt(alphas)[:, None] * xt.numpy() / betas[:, None])
    assert np.allclose(mean.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert np.allclose(variance.squeeze(1).numpy(), var)
    assert np.allclose(logvar.squeeze(1).numpy(), np.log(var))  # clipped log equals the log for t >= 1
    assert d.posterior_variance[0] == 0.0 and d.posterior_log_variance_clipped[0] == pytest.approx(np.log(var[0]))


def test_q_sample_moments():
    d = create_diffusion()
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    t = torch.full((200_000,), 300)
    xt = d.q_sample(x0, t, torch.randn_like(x0, generator=None))
    abar = d.alphas_cumprod[300]
    assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=5e-3)
    assert xt.var().item() == pytest.approx(1 - abar, rel=2e-2)


def test_respacing_keeps_alpha_bar_and_maps_timesteps():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert space_timesteps(100, "10,10") == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49, 50, 55, 61, 66, 72, 77, 83, 88, 94, 99]
    base = create_diffusion()
    spaced = create_diffusion(250)
    assert spaced.num_timesteps == 250
    assert np.allclose(spaced.alphas_cumprod, base.alphas_cumprod[steps], rtol=1e-12)
    assert spaced.model_timesteps(torch.tensor([0, 249])).tolist() == [0, 999]
    assert np.allclose(np.cumprod(1 - respaced_betas(base.betas, steps)), base.alphas_cumprod[steps])


@pytest.mark.parametrize("bad", ["0", "ddim0", "abc", "2000", "ddim3000"])
def test_bad_step_counts_raise(bad):
    with pytest.raises(FFNetError):
        space_timesteps(1000, bad)


def test_discretized_likelihood_against_scipy_and_normalised():
    mean, log_scale = torch.tensor(0.1, dtype=torch.float64), torch.tensor(math.log(0.3), dtype=torch.float64)
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(levels, means=mean, log_scales=log_scale)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    x = levels[100].item()
    ref = stats.norm.cdf(x + 1 / 255, 0.1, 0.3) - stats.norm.cdf(x - 1 / 255, 0.1, 0.3)
    assert logp[100].exp().item() == pytest.approx(ref, rel=2e-3)  # tanh approximation of Phi
    # the outermost bin is open: P(x <= -1 + 1/255)
    edge = discretized_gaussian_log_likelihood(levels[:1], means=torch.tensor(-0.8, dtype=torch.float64),
                                               log_scales=log_scale)
    assert edge.exp().item() == pytest.approx(stats.norm.cdf(-1 + 1 / 255, -0.8, 0.3), rel=2e-3)


def test_normal_kl_closed_form():
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 2.0
    expected = math.log(math.sqrt(v2) / math.sqrt(v1)) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5
    kl = normal_kl(torch.tensor(m1), torch.tensor(math.log(v1)), torch.tensor(m2), torch.tensor(math.log(v2)))
    assert kl.item() == pytest.approx(expected, rel=1e-6)


class _ConstantOutput(torch.nn.Module):
    """A 'network' returning a fixed output, to evaluate the loss on known values."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, **kw):
        return self.out


def test_hybrid_loss_on_known_example():
    d = create_diffusion()
    torch.manual_seed(0)
    x0 = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 7, 600])
    # (a) exact epsilon and v=-1 (variance = true posterior variance): mse = 0 and KL = 0 for t > 0
    perfect = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    terms = d.training_losses(_ConstantOutput(perfect), x0, t, noise=noise)
    assert terms["mse"].abs().max().item() < 1e-20
    assert terms["vb"][1:].abs().max().item() < 1e-9
    assert terms["vb"][0].item() > 0  # t=0: decoder NLL in bits/dim is positive
    # (b) zero output: mse = mean(noise^2); KL against the mid-point log-variance, by hand
    zero = torch.zeros(3, 4, 4, 4, dtype=torch.float64)
    terms = d.training_losses(_ConstantOutput(zero), x0, t, noise=noise)
    assert torch.allclose(terms["mse"], (noise ** 2).mean(dim=(1, 2, 3)))
    i = 2
    ti = 600
    xt = math.sqrt(d.alphas_cumprod[ti]) * x0[i] + math.sqrt(1 - d.alphas_cumprod[ti]) * noise[i]
    pred_x0 = (xt / math.sqrt(d.alphas_cumprod[ti])).numpy()  # eps = 0
    true_mean = d.posterior_mean_coef1[ti] * x0[i].numpy() + d.posterior_mean_coef2[ti] * xt.numpy()
    model_mean = d.posterior_mean_coef1[ti] * pred_x0 + d.posterior_mean_coef2[ti] * xt.numpy()
    true_lv = math.log(d.posterior_variance[ti])
    model_lv = 0.5 * (math.log(d.betas[ti]) + true_lv)
    kl = 0.5 * (-1 + model_lv - true_lv + math.exp(true_lv - model_lv) + (true_mean - model_mean) ** 2 * math.exp(-model_lv))
    assert terms["vb"][i].item() == pytest.approx(kl.mean() / math.log(2), rel=1e-9)
    assert terms["loss"][i].item() == pytest.approx(terms["mse"][i].item() + terms["vb"][i].item())
    # the variational term must not push gradients into epsilon (it is detached)
    out = zero.clone().requires_grad_(True)
    d.training_losses(_ConstantOutput(out), x0, t, noise=noise)["vb"].sum().backward()
    assert out.grad[:, :2].abs().max().item() == 0 and out.grad[:, 2:].abs().max().item() > 0


class _GaussianOracle(torch.nn.Module):
    """Exact E[eps | x_t] for data ~ N(mu, s^2) per pixel: the optimal denoiser in closed form."""

    def __init__(self, diffusion, mu, s):
        super().__init__()
        self.abar = torch.from_numpy(np.cumprod(1 - create_diffusion(variance_type="fixed_small",
                                                                     loss_type="mse").betas))
        self.mu, self.s = mu, s

    def forward(self, x, t, **kw):
        abar = self.abar[t].to(x.dtype).view(-1, 1, 1, 1)
        return torch.sqrt(1 - abar) * (x - torch.sqrt(abar) * self.mu) / (abar * self.s ** 2 + 1 - abar)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_samplers_recover_gaussian_data_with_oracle_denoiser(method):
    # enough steps that discretisation error (fewer steps -> under-dispersed samples) stays < 3%
    d = create_diffusion(None if method == "ddpm" else "ddim250", variance_type="fixed_small", loss_type="mse")
    oracle = _GaussianOracle(d, mu=0.4, s=0.5)
    gen = torch.Generator().manual_seed(0)
    x = d.sample_loop(oracle, (4000, 1, 1, 1), method=method, clip_denoised=False, generator=gen,
                      noise=torch.randn(4000, 1, 1, 1, generator=gen, dtype=torch.float64))
    assert x.mean().item() == pytest.approx(0.4, abs=0.03)
    assert x.std().item() == pytest.approx(0.5, rel=0.05)


def test_ddim_is_deterministic_with_fixed_seed():
    d = create_diffusion("ddim10")
    net = torch.nn.Conv2d(2, 4, 3, padding=1).double()

    def model(x, t, y):
        return torch.tanh(net(x)) + 0.001 * t.view(-1, 1, 1, 1)

    def run(seed, eta=0.0):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64)
        return d.sample_loop(model, noise.shape, method="ddim", noise=noise, eta=eta, generator=g,
                             model_kwargs={"y": torch.zeros(2, dtype=torch.long)})

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))
    assert torch.equal(run(3, eta=1.0), run(3, eta=1.0))
    assert not torch.allclose(run(3, eta=1.0), run(3, eta=0.0))


def test_guidance_mixing_all_channels_and_dit_three_channel_variant():
    cond = torch.randn(2, 8, 4, 4)
    uncond = torch.randn(2, 8, 4, 4)
    out = mix_guidance(cond, uncond, 4.0, data_channels=4)
    assert torch.allclose(out[:, :4], uncond[:, :4] + 4.0 * (cond[:, :4] - uncond[:, :4]))
    assert torch.equal(out[:, 4:], cond[:, 4:])  # learned variance from the conditional pass
    dit = mix_guidance(cond, uncond, 4.0, data_channels=4, guided_channels=3)
    assert torch.allclose(dit[:, :3], out[:, :3]) and torch.equal(dit[:, 3:], cond[:, 3:])
    assert torch.allclose(mix_guidance(cond, uncond, 1.0, data_channels=4), cond)
    assert torch.allclose(mix_guidance(cond, uncond, 0.0, data_channels=4)[:, :4], uncond[:, :4])


def test_guided_model_runs_null_label_in_same_batch():
    calls = []

    def model(x, t, y):
        calls.append(y.tolist())
        return torch.cat([x + y.view(-1, 1, 1, 1).float(), torch.zeros_like(x)], dim=1)

    guided = GuidedModel(model, 2.0, null_label=10, data_channels=1)
    x = torch.zeros(2, 1, 2, 2)
    out = guided(x, torch.tensor([5, 5]), torch.tensor([3, 4]))
    assert calls == [[3, 4, 10, 10]]
    # eps_u + 2 (eps_c - eps_u) = 10 + 2 * (y - 10)
    assert out[:, 0, 0, 0].tolist() == [10 + 2 * (3 - 10), 10 + 2 * (4 - 10)]


@pytest.mark.parametrize("scale", [-1.0, 51.0, float("nan"), "1.5"])
def test_guidance_scale_out_of_range(scale):
    with pytest.raises(FFNetError, match="guidance scale"):
        GuidedModel(lambda x, t, y: x, scale, null_label=1, data_channels=1)
