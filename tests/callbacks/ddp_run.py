"""Run by test_ddp.py in a subprocess: ``python ddp_run.py OUT_DIR PROBE_SIZE [PRECISION]``.

Trains an MLP with ``strategy="ddp"`` on two CPU processes with the AGOP monitor; rank zero saves what the test
compares against a single-process computation.
"""

import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from agoplight.callbacks import AGOPMonitor
from agoplight.data import LowRankDataModule
from agoplight.models import MLP

if __name__ == "__main__":
    out, probe_size = Path(sys.argv[1]), int(sys.argv[2])
    precision = sys.argv[3] if len(sys.argv) > 3 else "32-true"
    seed_everything(0)
    dm = LowRankDataModule(d=6, n_train=160, n_val=32, n_test=32, batch_size=16)
    net = MLP(input_dim=6, output_dim=1, depth=2, width=16, loss="mse")
    monitor = AGOPMonitor(layers=["net.0", "net.2"], every_n_train_steps=2, probe_size=probe_size, probe_batch_size=16)
    trainer = Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=4,
        precision=precision,
        callbacks=[monitor],
        logger=CSVLogger(out, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(net, dm)
    if trainer.is_global_zero:
        torch.save(
            {
                "indices": monitor._probe_indices,
                "matrices": monitor.last_matrices,
                "history": monitor.history,
                "state_dict": net.state_dict(),
                "world_size": trainer.world_size,
            },
            out / "result.pt",
        )
