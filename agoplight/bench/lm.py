"""What one AGOP measurement of every block of a causal language model costs, next to one training step.

``python -m agoplight.bench.lm`` prints, for the model of ``configs/gpt_bytes.yaml`` (GPT-2, 4 blocks, width 128,
byte-level vocabulary of 257, batches of 16 x 64 tokens, probe of 16 x 64 tokens, sketch with k = 16):

- one training step: forward, backward and AdamW on one batch;
- the AGOP of every projection of every block, ``agop_sums`` over the probe (forward, k backward passes, sums);
- one measurement as ``AGOPMonitor`` makes it during training: the same AGOP, then the NFM and the NFA metrics
  (correlations, effective rank, eigenvalues);
- the ratio measurement / training step, and for each the rise of resident memory above its start and the peak.

``--size gpt2`` does the same for a model of GPT-2's size (12 blocks, width 768, 12 heads, GPT-2's vocabulary of
50257 tokens) on a probe of 16 x 256 tokens, 4 sequences per forward pass and one projection per backward pass
(the measurement holds every block's output gradients for one chunk of directions, and the directions themselves
are logit-sized, so these two bound its memory); its batches are random token ids, since the cost does not depend
on the text. Times are medians over ``--repeats`` runs (single runs at GPT-2 size); the machine's load average is
printed with them, since a shared CPU makes them noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally; never ask the hub

import torch
from lightning.pytorch import Trainer

from agoplight.callbacks import AGOPMonitor
from agoplight.features import agop_sums, find_views
from agoplight.models import CausalLM

SIZES = {
    "gpt_bytes": dict(vocab_size=257, n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=16),
    "gpt2": dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, block_size=256, batch_size=16),
}
# Memory bounds of the measurement: probe sequences per forward pass, and projections per backward pass.
BOUNDS = {"gpt_bytes": dict(probe_batch_size=16, chunk_size=4), "gpt2": dict(probe_batch_size=4, chunk_size=1)}


class PeakMemory:
    """Peak resident memory of this process while a block runs, sampled every millisecond from ``/proc``."""

    def __init__(self) -> None:
        self.peak = self.start = _resident()

    @contextmanager
    def watch(self) -> Iterator[PeakMemory]:
        self.peak = self.start = _resident()
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.001):
                self.peak = max(self.peak, _resident())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            self.peak = max(self.peak, _resident())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _resident() -> int:
    """Resident set size in bytes (0 where ``/proc`` does not exist)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """Median wall time of ``fn`` over ``repeats`` runs after a warm-up (none when ``repeats`` is 1), the largest
    rise of resident memory during a run above its start, and the highest resident memory, both in MB."""
    if repeats > 1:
        fn()
    times, rise, peak = [], 0.0, 0.0
    memory = PeakMemory()
    for _ in range(repeats):
        with memory.watch():
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rise, peak = max(rise, memory.extra_mb), max(peak, memory.peak / 2**20)
    return statistics.median(times), rise, peak


def batches(size: str, vocab_size: int, block_size: int, n: int, batch_size: int) -> list[tuple[Any, Any]]:
    """``(x, y)`` batches of ``n`` sequences: the bundled text for the byte model, random ids otherwise."""
    if size == "gpt_bytes":
        from agoplight.data import TextDataModule

        dm = TextDataModule(block_size=block_size, batch_size=batch_size, seed=0)
        dm.setup()
        x, y = dm.train_set.tensors
        x, y = x[:n], y[:n]
    else:
        tokens = torch.randint(0, vocab_size, (n, block_size + 1), generator=torch.Generator().manual_seed(0))
        x, y = tokens[:, :-1], tokens[:, 1:]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="gpt_bytes")
    parser.add_argument("--family", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--attn-implementation", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--probe-size", type=int, default=16, help="probe sequences")
    parser.add_argument("--probe-batch-size", type=int, help="probe sequences per forward pass (default: 16, 4)")
    parser.add_argument("--num-projections", type=int, default=16, help="k of the sketch")
    parser.add_argument("--chunk-size", type=int, help="projections per batched backward pass (default: 4, 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5, or 1 at GPT-2 size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.size == "gpt2" else 5)
    sizes = dict(SIZES[args.size])
    args.probe_batch_size = args.probe_batch_size or BOUNDS[args.size]["probe_batch_size"]
    args.chunk_size = args.chunk_size or BOUNDS[args.size]["chunk_size"]
    batch_size = sizes.pop("batch_size")

    torch.manual_seed(0)
    model = CausalLM(family=args.family, attn_implementation=args.attn_implementation, **sizes)
    layers = ["net.transformer.h.*"] if args.family == "gpt2" else ["net.model.layers.*"]
    views = find_views(model, layers)
    block = sizes["block_size"]
    weights = sum(p.numel() for p in model.parameters())
    print(
        f"{args.family}: {sizes['n_layer']} blocks, width {sizes['n_embd']}, vocabulary {sizes['vocab_size']}, "
        f"{weights / 1e6:.1f}M weights, {args.attn_implementation} attention; {len(views)} views (every projection "
        f"of every block); torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    (train_x, train_y), *_ = batches(args.size, sizes["vocab_size"], block, batch_size, batch_size)
    probe = batches(args.size, sizes["vocab_size"], block, args.probe_size, args.probe_batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        loss = model.loss(model(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    sketch = dict(estimator="sketch", num_projections=args.num_projections, chunk_size=args.chunk_size)
    generator = torch.Generator().manual_seed(0)

    def gradients() -> None:
        for batch in probe:
            agop_sums(model, batch, views, generator=generator, **sketch)

    monitor = AGOPMonitor(layers=layers, probe_batch_size=args.probe_batch_size, **sketch)
    with tempfile.TemporaryDirectory() as root:  # nothing is written there: measure() logs and saves nothing
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, default_root_dir=root)
        monitor.setup(trainer, model, "fit")

    def measurement() -> None:
        monitor.measure(model, probe)

    probe_tokens = f"{args.probe_size} x {block} tokens"
    print(f"resident memory with the model built: {_resident() / 2**20:.0f} MB")
    named = [  # the measurement first: the training step's freed memory would stay resident and hide its rise
        (f"AGOP, sketch k={args.num_projections} ({probe_tokens}, chunks of {args.chunk_size})", gradients),
        ("AGOPMonitor measurement (the AGOP, then NFM and NFA metrics)", measurement),
        (f"training step ({batch_size} x {block} tokens, AdamW)", train_step),
    ]
    rows = [(name, *timed(fn, repeats)) for name, fn in named]

    width = max(len(name) for name, *_ in rows) + 2
    print(f"\n{'':<{width}} {'seconds':>9} {'x step':>7} {'MB rise':>8} {'MB peak':>8}")
    step = rows[2][1]
    for name, seconds, rise, peak in rows:
        print(f"{name:<{width}} {seconds:9.3f} {seconds / step:7.1f} {rise:8.0f} {peak:8.0f}")
    print(f"\nmeasurement / training step: {rows[1][1] / step:.1f}   (load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
