"""Training and evaluation engine, in small files by role."""

from .trainer import Trainer

__all__ = ["Trainer", "train"]


def train(cfg, resume=None, overwrite=False):
    """Train from a validated config dict; returns the run summary (paths, best metric)."""
    return Trainer(cfg, resume, overwrite).run()
