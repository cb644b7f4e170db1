"""Saving a module's hyperparameters so that its checkpoints load again, through the CLI or directly."""

from __future__ import annotations

import inspect

from lightning.pytorch import LightningModule


def save_own_hyperparameters(module: LightningModule, ignore: tuple[str, ...] = ()) -> None:
    """``module.save_hyperparameters`` from the caller's ``__init__``, keeping only that ``__init__``'s arguments.

    Hack: LightningCLI records in the hyperparameters every data-to-model link it applied, also links to arguments
    the model does not take (``input_shape`` for an MLP on the digits). Reloading such a checkpoint, with
    ``--ckpt_path`` or ``load_from_checkpoint``, then passes that unknown argument and fails; so it is dropped here.
    """
    module.save_hyperparameters(ignore=list(ignore), frame=inspect.currentframe().f_back)
    accepted = set(inspect.signature(type(module).__init__).parameters)
    for hparams in (module._hparams, module._hparams_initial):
        for key in [key for key in hparams if not key.startswith("_") and key not in accepted]:
            del hparams[key]
