"""Fixture generators that write real TensorBoard logs the way each VAE logging lineage writes them.

Each ``write_<lineage>(root, **knobs) -> Truth`` writes one run and returns the ground truth a correct
diagnosis must recover. See README.md for the table of lineages, tags and arithmetic.
"""

from ._common import Truth
from .antixk import write_antixk
from .exports import write_wandb_export
from .hf_trainer import write_hf_trainer
from .latent_diffusion import write_latent_diffusion
from .lightning_generic import write_lightning
from .pl_bolts import write_pl_bolts
from .plain_loop import write_plain_loop
from .vqvae import write_vqvae

__all__ = [
    "Truth",
    "write_antixk",
    "write_wandb_export",
    "write_hf_trainer",
    "write_latent_diffusion",
    "write_lightning",
    "write_pl_bolts",
    "write_plain_loop",
    "write_vqvae",
]
