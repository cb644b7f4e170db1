"""Train a model with LightningCLI: ``python train.py fit --config configs/mlp_digits.yaml``."""

from agoplight.cli import train

if __name__ == "__main__":
    train()
