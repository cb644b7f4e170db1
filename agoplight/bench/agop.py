"""What one AGOP measurement costs, side by side with training and with the references, in one run.

``python -m agoplight.bench.agop`` prints, for an MLP 784-1024-1024-10 on a probe of 4096 inputs:

- one training step (forward, backward and Adam on a batch of the probe's size);
- the exact AGOP of all three layers, and the sketch with ``k`` projections;
- the lower bound of the exact AGOP: one forward pass, ``c = 10`` input-gradient backward passes and the
  outer products of the per-sample input gradients of every layer, each timed alone and added up;
- the lower bound of the sketch: one forward pass and ``k`` backward passes;
- ``torch.func.vmap(jacrev)`` per-sample Jacobians w.r.t. all three layers' inputs with their outer products,
  and a Python loop of the same per-sample ``jacrev`` (timed on ``--loop-samples`` samples, scaled);

and the same measurement-versus-training ratios for the digits convnet and the tiny GPT of
``configs/gpt_bytes.yaml``. Every figure is the median of ``--repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import jacrev, vmap

from agoplight.features import agop, gram


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One Adam step on cross-entropy; logits of shape ``(B, T, V)`` are flattened over tokens."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def mlp_rows(repeats: int, n: int, k: int, loop_samples: int) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    x = torch.randn(n, 784)
    y = torch.randint(0, 10, (n,))
    c = 10
    rows = [(f"training step (batch {n})", timed(training_step(model, x, y), repeats))]

    rows.append(("exact AGOP, all 3 layers", timed(lambda: agop(model, x, chunk_size=c), repeats)))
    generator = torch.Generator().manual_seed(0)
    rows.append(
        (
            f"sketch AGOP, k={k}, all 3 layers",
            timed(
                lambda: agop(model, x, estimator="sketch", num_projections=k, chunk_size=k, generator=generator),
                repeats,
            ),
        )
    )

    # Lower bounds, each part timed alone.
    with torch.no_grad():
        forward = timed(lambda: model(x), repeats)
    xg = x.clone().requires_grad_()
    out = model(xg)
    backward = timed(lambda: torch.autograd.grad(out[:, 0].sum(), xg, retain_graph=True), repeats)
    sketch_backward = timed(lambda: torch.autograd.grad(out, xg, torch.randn_like(out), retain_graph=True), repeats)
    widths = [784, 1024, 1024]
    grads = [torch.randn(c * n, d) for d in widths]
    outer = timed(lambda: [gram(g) for g in grads], repeats)  # the same symmetric product the measurement uses
    rows.append(("  lower bound, exact: forward + 10 backward + outer products", forward + c * backward + outer))
    rows.append((f"  lower bound, sketch: forward + {k} backward", forward + k * sketch_backward))

    # References: per-sample Jacobians w.r.t. every layer's input, written as zero perturbations e1, e2 added to
    # the hidden layers' inputs so that one jacrev gives all three.
    l0, l1, l2 = model[0], model[2], model[4]

    def outputs(v: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return l2(torch.relu(l1(torch.relu(l0(v)) + e1)) + e2)

    def outer_products(jacobians: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        flat = [j.reshape(-1, j.shape[-1]) for j in jacobians]  # (samples * c, d) per layer
        return [f.T @ f for f in flat]

    zeros = torch.zeros(n, 1024)
    per_sample = jacrev(outputs, argnums=(0, 1, 2))
    rows.append(
        ("vmap(jacrev), all 3 layers", timed(lambda: outer_products(vmap(per_sample)(x, zeros, zeros)), repeats))
    )

    def loop() -> None:
        for i in range(loop_samples):
            outer_products(per_sample(x[i], zeros[i], zeros[i]))

    loop_time = timed(loop, 1) * n / loop_samples
    rows.append((f"Python loop of per-sample jacrev ({loop_samples} timed, scaled to {n})", loop_time))
    return rows


def convnet_rows(repeats: int) -> list[tuple[str, float]]:
    from agoplight.data import DigitsDataModule
    from agoplight.models import ConvNet

    dm = DigitsDataModule(as_images=True)
    dm.setup()
    x, y = dm.train_set.tensors
    torch.manual_seed(0)
    model = ConvNet(channels=[32, 64])
    probe = x[:512]
    batch = torch.randint(0, len(x), (64,))
    rows = [("digits convnet: training step (batch 64)", timed(training_step(model, x[batch], y[batch]), repeats))]
    layers = ["features.*"]
    rows.append(
        ("digits convnet: exact AGOP, 2 conv layers, probe 512", timed(lambda: agop(model, probe, layers), repeats))
    )
    generator = torch.Generator().manual_seed(0)
    sketch = lambda: agop(model, probe, layers, estimator="sketch", num_projections=4, generator=generator)  # noqa: E731
    rows.append(("digits convnet: sketch AGOP (k=4), probe 512", timed(sketch, repeats)))
    return rows


def gpt_rows(repeats: int) -> list[tuple[str, float]]:
    """The model of ``configs/gpt_bytes.yaml`` (``python -m agoplight.bench.lm`` has the memory and the monitor)."""
    from agoplight.bench.lm import SIZES, batches
    from agoplight.models import CausalLM

    sizes = dict(SIZES["gpt_bytes"])
    batch_size = sizes.pop("batch_size")
    torch.manual_seed(0)
    model = CausalLM(**sizes)
    [(x, y)] = batches("gpt_bytes", sizes["vocab_size"], sizes["block_size"], batch_size, batch_size)
    layers = ["net.transformer.h.*"]
    generator = torch.Generator().manual_seed(0)

    def sketch() -> None:
        agop(model, x, layers, estimator="sketch", num_projections=16, chunk_size=4, generator=generator)

    tokens = f"{batch_size} x {sizes['block_size']} tokens"
    return [
        (f"tiny GPT: training step ({tokens})", timed(training_step(model, x, y), repeats)),
        (f"tiny GPT: sketch AGOP (k=16), 24 projections, probe {tokens}", timed(sketch, repeats)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe", type=int, default=4096, help="probe size of the MLP measurement")
    parser.add_argument("--k", type=int, default=16, help="projections of the sketch")
    parser.add_argument("--loop-samples", type=int, default=512, help="samples timed in the Python-loop reference")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    rows = mlp_rows(args.repeats, args.probe, args.k, args.loop_samples)
    table = dict(rows)
    step = rows[0][1]
    width = max(len(name) for name, _ in rows) + 2
    print(f"{'MLP 784-1024-1024-10, probe ' + str(args.probe):<{width}} {'seconds':>9} {'x step':>8}")
    for name, seconds in rows:
        print(f"{name:<{width}} {seconds:9.3f} {seconds / step:8.2f}")

    exact = table["exact AGOP, all 3 layers"]
    sketch = table[f"sketch AGOP, k={args.k}, all 3 layers"]
    bound = table["  lower bound, exact: forward + 10 backward + outer products"]
    sketch_bound = table[f"  lower bound, sketch: forward + {args.k} backward"]
    jac = table["vmap(jacrev), all 3 layers"]
    loop = [s for name, s in rows if name.startswith("Python loop")][0]
    print("\nratios")
    print(f"  exact / its lower bound          {exact / bound:6.2f}   (target <= 1.5)")
    print(f"  exact / vmap(jacrev)             {exact / jac:6.2f}   (target <= 1.0)")
    print(f"  Python loop / exact              {loop / exact:6.1f}   (target >= 5)")
    print(f"  sketch / its lower bound         {sketch / sketch_bound:6.2f}   (target <= 1.5)")

    for other in (convnet_rows(args.repeats), gpt_rows(args.repeats)):
        print()
        step = other[0][1]
        for name, seconds in other:
            print(f"{name:<{width}} {seconds:9.3f} {seconds / step:8.2f}")


if __name__ == "__main__":
    main()
