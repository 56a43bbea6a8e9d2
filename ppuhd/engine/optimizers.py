"""Optimizers with weight-decay parameter groups.

By default norms, biases (every 1-D parameter) and the names a model lists in
``no_weight_decay_names()`` (ViT: ``pos_embed``, ``cls_token``) get no weight
decay, as in timm and the DeiT recipe. A config can replace the name list
(``no_weight_decay``: regular expressions searched in parameter names) and
switch the 1-D rule off (``no_weight_decay_1d: false``).

The engine supplies ``model`` and ``learning_rate`` (the lr schedule).
"""

import logging
import re

import paddle

from ..registry import OPTIMIZERS

logger = logging.getLogger(__name__)


def param_groups(model, weight_decay, no_weight_decay=None, no_weight_decay_1d=True):
    """Two groups of trainable parameters: with and without weight decay."""
    if no_weight_decay is None:
        names = getattr(model, "no_weight_decay_names", lambda: set())()
        patterns = [re.compile(rf"(^|\.){re.escape(n)}$") for n in names]
    else:
        patterns = [re.compile(p) for p in no_weight_decay]
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.stop_gradient:
            continue
        exempt = (no_weight_decay_1d and param.ndim <= 1) or any(p.search(name) for p in patterns)
        (no_decay if exempt else decay).append(param)
    logger.debug("weight decay on %d tensors, none on %d", len(decay), len(no_decay))
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class GlobalNormClip(paddle.nn.ClipGradByGlobalNorm):
    """Scale gradients by ``clip_norm / max(norm, clip_norm)``, the norm taken over every parameter.

    Paddle 3.3.1 applies an optimizer's ``grad_clip`` to each parameter group
    on its own, so ``ClipGradByGlobalNorm`` with weight-decay groups clips each
    group by that group's norm. This one measures the norm over all the
    parameters it is given (every group's), as ``torch.nn.utils.clip_grad_norm_``
    and vit_jax's ``clip_by_global_norm`` do; a parameter group only picks up its
    own gradients, scaled.
    """

    def __init__(self, clip_norm, parameters):
        super().__init__(clip_norm)
        self.parameters = list(parameters)

    def _dygraph_clip(self, params_grads):
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if not grads:
            return params_grads
        norm = paddle.sqrt(paddle.add_n([paddle.sum(g.astype("float32") ** 2) for g in grads]))
        scale = self.clip_norm / paddle.maximum(norm, paddle.to_tensor(self.clip_norm, dtype="float32"))
        return [(p, None if g is None else g * scale.astype(g.dtype)) for p, g in params_grads]


def _common(model, weight_decay, no_weight_decay, no_weight_decay_1d, grad_clip_norm):
    """The arguments every optimizer takes: parameter groups and gradient clipping."""
    groups = param_groups(model, weight_decay, no_weight_decay, no_weight_decay_1d)
    clip = GlobalNormClip(grad_clip_norm, [p for g in groups for p in g["params"]]) if grad_clip_norm else None
    return {"parameters": groups, "grad_clip": clip}


@OPTIMIZERS.register()
def AdamW(model, learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, no_weight_decay=None,
          no_weight_decay_1d=True, grad_clip_norm=None):
    """AdamW (decoupled weight decay, as PyTorch's). ``grad_clip_norm``: clip the global gradient norm."""
    return paddle.optimizer.AdamW(
        learning_rate=learning_rate,
        beta1=betas[0],
        beta2=betas[1],
        epsilon=eps,
        weight_decay=weight_decay,
        **_common(model, weight_decay, no_weight_decay, no_weight_decay_1d, grad_clip_norm),
    )


@OPTIMIZERS.register()
def Adam(model, learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, no_weight_decay=None,
         no_weight_decay_1d=True, grad_clip_norm=None):
    """Adam; weight decay, if any, is L2 added to the gradient (as PyTorch's Adam)."""
    return paddle.optimizer.Adam(
        learning_rate=learning_rate,
        beta1=betas[0],
        beta2=betas[1],
        epsilon=eps,
        **_common(model, weight_decay, no_weight_decay, no_weight_decay_1d, grad_clip_norm),
    )


@OPTIMIZERS.register()
def SGD(model, learning_rate, momentum=0.9, nesterov=False, weight_decay=0.0, no_weight_decay=None,
        no_weight_decay_1d=True, grad_clip_norm=None):
    """SGD with momentum (PyTorch's formulation: v = m*v + g; p -= lr*v)."""
    return paddle.optimizer.Momentum(
        learning_rate=learning_rate,
        momentum=momentum,
        use_nesterov=nesterov,
        **_common(model, weight_decay, no_weight_decay, no_weight_decay_1d, grad_clip_norm),
    )
