"""Exponential moving average of model weights (timm's ModelEma, as DeiT uses)."""

import paddle


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    ``model`` is a separate copy of the network (built from the same config)
    that holds the averaged weights; it is evaluated and saved alongside the
    raw weights. Floating-point buffers are averaged too, others copied.
    """

    def __init__(self, ema_model, source_model, decay):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = ema_model
        self.decay = decay
        self.model.set_state_dict(source_model.state_dict())
        self.model.eval()
        for param in self.model.parameters():
            param.stop_gradient = True

    @paddle.no_grad()
    def update(self, source_model):
        source = source_model.state_dict()
        for name, ema_value in self.model.state_dict().items():
            value = source[name]
            if paddle.is_floating_point(ema_value):
                paddle.assign(ema_value * self.decay + value.astype(ema_value.dtype) * (1.0 - self.decay), ema_value)
            else:
                paddle.assign(value, ema_value)
