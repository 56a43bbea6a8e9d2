"""Named model variants: ``vit_base_patch16_224`` = VisionTransformer with fixed sizes."""

import inspect

from ..registry import MODELS


def register_variant(registry_name, cls, info=None, **architecture):
    """Register a factory ``registry_name(**kwargs)`` building ``cls``.

    The architecture arguments become defaults (a config may still override
    them, e.g. ``img_size`` or ``num_classes``), and the factory carries
    ``cls``'s signature so the config builder can check argument names.
    ``info``: facts only this variant knows, added to the model's
    :class:`~ppuhd.contract.ModelInfo` (a function of the model, for facts
    that depend on its arguments, or a dict).
    """

    def factory(**kwargs):
        model = cls(**{**architecture, **kwargs})
        if info is not None:
            model.info = model.info.with_updates(**(info(model) if callable(info) else info))
        return model

    params = [
        p.replace(default=architecture[p.name]) if p.name in architecture else p
        for p in inspect.signature(cls).parameters.values()
    ]
    factory.__signature__ = inspect.Signature(params)
    factory.__name__ = factory.__qualname__ = registry_name
    factory.__doc__ = f"{cls.__name__} with {architecture}."
    return MODELS.register(factory, name=registry_name)
