"""The metric interface: additive sums per process, combined at the end."""

from ..contract import select_output


class Metric:
    """Accumulates additive statistics over batches.

    ``update`` adds a batch; ``sums`` returns the statistics as a dict of
    numbers, which the evaluator adds up across processes before calling
    ``compute(sums)`` for the final values. Additive sums make the result
    independent of how the data was split between processes.

    Args:
        output_index: for models with several outputs (a tuple), which one
            is scored (e.g. DeiT with ``eval_head: all``: 0 average, 1 class
            head, 2 distillation head).
        prefix: put before the reported names (``cls_`` -> ``cls_top1``).
        source: 'output' scores the model's output; 'input' scores the
            model's input against the target instead, a baseline (how far a
            low-light input is from its reference, before enhancement).
    """

    def __init__(self, output_index=0, prefix="", source="output"):
        if source not in ("output", "input"):
            raise ValueError(f"source must be 'output' or 'input', got {source!r}")
        self.output_index = output_index
        self.prefix = prefix
        self.source = source

    def select(self, outputs):
        return select_output(outputs, self.output_index)

    @property
    def names(self):
        """The keys ``compute`` returns (known before any data is seen)."""
        raise NotImplementedError

    def reset(self):
        raise NotImplementedError

    def update(self, outputs, target):
        raise NotImplementedError

    def sums(self):
        raise NotImplementedError

    def compute(self, sums):
        raise NotImplementedError

    def per_image(self):
        """``[{name: value}]`` per evaluated sample, in order, for metrics that score each image; else None."""
        return None
