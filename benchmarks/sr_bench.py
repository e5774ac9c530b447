"""FFNetSR speed/memory benchmark for a 1280x720 output (both variants, x2/x4, eager vs compiled, fp32/bf16,
tiled vs whole, bicubic peers). Thin wrapper around ``ffnet_sr.bench`` (also the ``ffnet-sr-bench`` command):

    python benchmarks/sr_bench.py --threads 2 --output docs/sr_bench_cpu.json
    python benchmarks/sr_bench.py --device cuda --repeats 20 --warmup 5
"""

from ffnet_sr.bench import cli

if __name__ == "__main__":
    raise SystemExit(cli())
