"""Build components from ``type:``-keyed config dicts, recursively.

``{"type": "VisionTransformer", "embed_dim": 192}`` becomes
``VisionTransformer(embed_dim=192)``. Any nested dict carrying a ``type`` key
(inside argument values, dicts or lists) is built first. It is looked up in
the kind its argument names (``backbone:`` -> backbones, ``head:`` -> heads,
``transforms:`` -> transforms, ...) or the component declared for it when it
was registered (DeiT's ``teacher:`` -> models), otherwise across all
registries; write ``type: kind.Name`` to choose a kind explicitly.

Arguments are checked against the callable's signature before anything is
constructed, so a misspelt key fails with the component, the key, a
suggestion and the accepted keys, before any training starts.
"""

import inspect

from .registry import ALL_REGISTRIES, ConfigError, suggest

# An argument named like a kind ('head', 'transforms', ...) holds components of that kind.
_REGISTRY_BY_ARGUMENT = {
    **{registry.kind: registry for registry in ALL_REGISTRIES.values()},
    **{registry.singular: registry for registry in ALL_REGISTRIES.values()},
}


def _resolve(type_name, registry, where):
    """Find the class or function for ``type_name``; return (kind, name, obj)."""
    if not isinstance(type_name, str):
        raise ConfigError(f"{where}.type must be a string, got {type_name!r}")
    if "." in type_name:
        kind, name = type_name.split(".", 1)
        if kind not in ALL_REGISTRIES:
            raise ConfigError(
                f"{where}.type {type_name!r}: unknown kind {kind!r}.{suggest(kind, ALL_REGISTRIES)}"
                f" Kinds: {', '.join(ALL_REGISTRIES)}."
            )
        return kind, name, ALL_REGISTRIES[kind].get(name)
    if registry is not None:
        try:
            return registry.kind, type_name, registry.get(type_name)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    kinds = [kind for kind, reg in ALL_REGISTRIES.items() if type_name in reg]
    if len(kinds) == 1:
        return kinds[0], type_name, ALL_REGISTRIES[kinds[0]].get(type_name)
    if len(kinds) > 1:
        raise ConfigError(
            f"{where}.type {type_name!r} is registered as {', '.join(kinds)}; "
            f"write e.g. '{kinds[0]}.{type_name}' to choose."
        )
    every_name = [n for reg in ALL_REGISTRIES.values() for n in reg.names()]
    raise ConfigError(f"{where}: unknown type {type_name!r}.{suggest(type_name, every_name)}")


def accepted_arguments(obj):
    """Names ``obj`` accepts as keywords, or None when it takes ``**kwargs``."""
    params = inspect.signature(obj).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _required_arguments(obj):
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _check_arguments(cfg, kind, obj, provided, where):
    given = [k for k in cfg if k != "type"]
    accepted = accepted_arguments(obj)
    if accepted is not None:
        user_keys = [a for a in accepted if a not in provided]
        for key in given:
            if key not in accepted or key in provided:
                raise ConfigError(
                    f"{where}: {kind} {cfg['type']!r} has no argument {key!r}.{suggest(key, user_keys)}"
                    f" Accepted: {', '.join(user_keys) or '(none)'}."
                )
    missing = [a for a in _required_arguments(obj) if a not in given and a not in provided]
    if missing:
        raise ConfigError(f"{where}: {kind} {cfg['type']!r} needs {', '.join(map(repr, missing))}.")


def is_component(value):
    return isinstance(value, dict) and "type" in value


def _argument_registry(kind, name, argument):
    """The registry a nested component of ``argument`` comes from (None: search all)."""
    declared = ALL_REGISTRIES[kind].argument_kinds(name).get(argument)
    return ALL_REGISTRIES[declared] if declared else _REGISTRY_BY_ARGUMENT.get(argument)


def validate(cfg, registry=None, where="config", provided=()):
    """Check a component config (and nested ones) without constructing anything."""
    kind, name, obj = _resolve(cfg.get("type"), registry, where)
    _check_arguments(cfg, kind, obj, provided, where)
    for key, value in cfg.items():
        if key != "type":
            _walk_nested(value, f"{where}.{key}", _argument_registry(kind, name, key), validate)


def _walk_nested(value, where, registry, handle):
    """Apply ``handle`` (validate or build) to every component inside ``value``."""
    if is_component(value):
        return handle(value, registry, where)
    if isinstance(value, dict):
        return {
            key: _walk_nested(item, f"{where}.{key}", _REGISTRY_BY_ARGUMENT.get(key, registry), handle)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_walk_nested(item, f"{where}.{i}", registry, handle) for i, item in enumerate(value)]
    return value


def build(cfg, registry=None, where="config", **provided):
    """Construct the component described by ``cfg``.

    ``registry`` is the kind expected at this place (None: search all kinds).
    ``provided`` are arguments the caller supplies at run time (a model's
    parameters for an optimizer, say); a config may not set them.
    """
    if not is_component(cfg):
        raise ConfigError(f"{where} must be a mapping with a 'type' key, got {cfg!r}")
    kind, name, obj = _resolve(cfg["type"], registry, where)
    _check_arguments(cfg, kind, obj, provided, where)
    kwargs = {
        key: _walk_nested(value, f"{where}.{key}", _argument_registry(kind, name, key), build)
        for key, value in cfg.items()
        if key != "type"
    }
    try:
        return obj(**kwargs, **provided)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{where}: building {kind} {cfg['type']!r} failed: {type(err).__name__}: {err}") from err
