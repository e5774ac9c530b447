"""Which reading of "U-DiT with FFNified attention in the encoder/decoder" costs the paper's 19.6 G (U-FFNet-B)?

    python benchmarks/gen_ffnet_readings.py [--size b] [--output readings.json]

The FFNet paper (§4.4, Tab. 7) gives one sentence ("replace attention with FFNified attention in the
encoder/decoder, except for the bottleneck stage") and one number (U-FFNet-B 19.6 G FLOPs beside U-DiT-B 22.2 G).
This script builds every candidate reading on the meta device (no memory, no weights), in deploy form, on a
32x32x4 latent, and counts its MACs with core's ``count_macs`` (the counter that gives U-DiT-B 22.18 G, published
22.2 G). Readings 1-2 are the registered models; the others are built by swapping modules of the literal model,
so each row differs from the literal reading in exactly the stated way. The table goes to docs/generation.md.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ffnet_generation import create_model
from ffnet_generation.models.attention import DownsampledTokenAttention
from metamixer.nn.blocks import ConvFFN, FFNifiedAttention
from metamixer.nn.flops import count_macs
from metamixer.train.results import write_results

PUBLISHED = {"b": 19.6}
LEVELS = ("encoder1", "encoder2", "decoder2", "decoder1")


class _Downsampled(nn.Module):
    """U-DiT's token down-sampler kept in front of FFNified attention: x + DW5x5(x), then the mixer."""

    def __init__(self, dim: int, mixer: nn.Module) -> None:
        super().__init__()
        self.downsampler = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x + self.downsampler(x))


def _gmacs(model: nn.Module) -> float:
    fused = model.eval().fuse()
    args = (torch.empty(1, 4, 32, 32), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    return count_macs(fused, *args) / 1e9


def _blocks(model: nn.Module, levels=LEVELS):
    for level in levels:
        for i, block in enumerate(getattr(model, level)):
            yield level, i, block


def readings(size: str) -> list[dict]:
    """(reading, how it differs from the literal one, GMACs deploy) for every candidate."""
    rows = []
    with torch.device("meta"):
        udit = create_model(f"u_dit_{size}")
        heads = udit.bottleneck[0].token_mixer.attn.num_heads

        def literal() -> nn.Module:
            return create_model(f"u_ffnet_{size}_literal")

        def add(name: str, note: str, model: nn.Module) -> None:
            rows.append({"reading": name, "note": note, "gmacs_deploy": _gmacs(model)})

        add("u_dit", "all attention (the baseline)", udit)
        add("literal", "FFNified attention (1x1+BN, DW7 (7+3), GELU, DW7 (7+3)) for every enc/dec attention; "
            "U-DiT's FFN kept", literal())
        m = literal()
        for _, _, b in _blocks(m):
            b.token_mixer = _Downsampled(b.token_mixer[0].c.in_channels, b.token_mixer)
        add("literal + DW5 down-sampler", "U-DiT's x + DW5(x) low-pass kept in front of FFNified attention", m)
        m = literal()
        for _, _, b in _blocks(m):
            dim = b.token_mixer[0].c.in_channels
            b.token_mixer = nn.Sequential(b.token_mixer, nn.Conv2d(dim, dim, 1))
        add("literal + output projection", "attention's output 1x1 projection kept after FFNified attention", m)
        m = literal()
        for _, _, b in _blocks(m, ("encoder1", "decoder1")):
            dim = b.token_mixer[0].c.in_channels
            b.token_mixer = FFNifiedAttention(dim, 3, ndim=2, rep_kernels=None, fc_norm=True, conv_norm=False)
        add("literal, kernel 3 at 32x32", "FFNet-3's per-resolution kernels: plain DW3 at 32x32, 7+3 at 16x16", m)
        m = literal()
        for _, i, b in _blocks(m):
            if i % 2:
                dim = b.token_mixer[0].c.in_channels
                b.token_mixer = DownsampledTokenAttention(dim, heads)
        add("one of two sub-blocks", "only the first (mixer + FFN) pair of each U-DiT block uses FFNified "
            "attention (no basis in the paper)", m)
        m = create_model(f"u_dit_{size}")
        for _, _, b in _blocks(m, ("decoder1",)):
            dim = b.token_mixer.attn.qkv.in_features
            b.token_mixer = FFNifiedAttention(dim, 7, ndim=2, rep_kernels=(3,), fc_norm=True)
        add("decoder 1 only", "FFNified attention only at decoder 1 (no basis in the paper)", m)
        add("FFNet blocks (default)", "enc/dec sub-blocks are FFNet blocks: FFNified attention + FFNet's "
            "channel mixer (DW7 (7+3)+BN, 1x1 to 3C, GELU, 1x1); bottleneck U-DiT", create_model(f"u_ffnet_{size}"))
        m = create_model(f"u_ffnet_{size}")
        for _, _, b in _blocks(m, ("encoder1", "decoder1")):
            dim = b.token_mixer[0].c.in_channels
            b.token_mixer = FFNifiedAttention(dim, 3, ndim=2, rep_kernels=None, fc_norm=True, conv_norm=False)
        add("FFNet blocks, kernel 3 at 32x32", "as the default, token-mixer kernels per resolution as FFNet-3", m)
        m = create_model(f"u_ffnet_{size}")
        for _, _, b in _blocks(m):
            b.channel_mixer = ConvFFN(b.channel_mixer[1].in_channels, 7, 4.0, ndim=2, rep_kernels=(3,))
        add("FFNet blocks, expansion 4", "channel-mixer expansion 4 (ConvNeXt's) instead of FFNet's 3", m)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="b", choices=("s", "b", "l"))
    p.add_argument("--output", default=None, help="write the rows as a results.json")
    a = p.parse_args()
    rows = readings(a.size)
    ref = PUBLISHED.get(a.size)
    print(f"| reading (U-FFNet-{a.size.upper()}) | differs from the literal reading by | GMACs deploy |"
          + (" vs published |" if ref else ""))
    print("|---|---|---|" + ("---|" if ref else ""))
    for r in rows:
        extra = f" {100 * (r['gmacs_deploy'] / ref - 1):+.1f} % |" if ref else ""
        print(f"| {r['reading']} | {r['note']} | {r['gmacs_deploy']:.2f} |{extra}")
    if a.output:
        write_results(a.output, metrics={r["reading"]: r["gmacs_deploy"] for r in rows},
                      protocol={"input": "4x32x32 latent, deploy form, meta device", "size": a.size}, rows=rows)


if __name__ == "__main__":
    main()
