"""Component registries: the names a config's ``type:`` key can refer to.

Each kind of component (models, losses, datasets, ...) has its own registry.
Components register themselves with a decorator::

    @MODELS.register()
    class VisionTransformer(nn.Layer): ...

    @MODELS.register(name="vit_tiny_patch16_224")
    def vit_tiny(**kwargs): ...

Registering a name twice is an error, and asking for an unknown name lists
the closest registered ones, so a typo in a config is caught at once.
"""

import difflib

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config names something that does not exist or cannot be built."""


def suggest(name, candidates, n=3):
    """A ' Did you mean ...?' hint listing the closest candidates, or ''."""
    close = difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Registry:
    """A name -> class/function table for one kind of component."""

    def __init__(self, kind, singular):
        self.kind = kind  # plural, as in messages: "unknown models type ..."
        self.singular = singular  # a config argument of this name holds one of these
        self._entries = {}
        self._argument_kinds = {}

    def register(self, obj=None, *, name=None, argument_kinds=None):
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Usable as ``@REG.register()``, ``@REG.register(name="x")`` or
        ``REG.register(obj, name="x")``. ``argument_kinds`` names the kind of
        component an argument holds when its name does not say it, e.g.
        ``{"teacher": "models"}``: a nested ``type:`` there is looked up in
        that registry first.
        """
        if obj is None:
            return lambda target: self.register(target, name=name, argument_kinds=argument_kinds)
        key = name or obj.__name__
        if key in self._entries:
            raise KeyError(
                f"{self.kind} registry: {key!r} is already registered "
                f"(by {self._entries[key].__module__}); choose another name."
            )
        self._entries[key] = obj
        self._argument_kinds[key] = dict(argument_kinds or {})
        return obj

    def argument_kinds(self, name):
        """``{argument: kind}`` declared when ``name`` was registered."""
        return self._argument_kinds[name]

    def get(self, name):
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} type {name!r}.{suggest(name, self._entries)}"
                f" Registered {self.kind}: {', '.join(sorted(self._entries)) or '(none)'}."
            ) from None

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}, {len(self)} entries)"


MODELS = Registry("models", "model")
BACKBONES = Registry("backbones", "backbone")
HEADS = Registry("heads", "head")
LOSSES = Registry("losses", "loss")
DATASETS = Registry("datasets", "dataset")
TRANSFORMS = Registry("transforms", "transform")
METRICS = Registry("metrics", "metric")
OPTIMIZERS = Registry("optimizers", "optimizer")
LR_SCHEDULERS = Registry("lr_schedulers", "lr_scheduler")

ALL_REGISTRIES = {
    r.kind: r
    for r in (MODELS, BACKBONES, HEADS, LOSSES, DATASETS, TRANSFORMS, METRICS, OPTIMIZERS, LR_SCHEDULERS)
}
