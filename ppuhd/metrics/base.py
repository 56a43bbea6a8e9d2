"""The metric interface: additive sums per process, combined at the end."""


class Metric:
    """Accumulates additive statistics over batches.

    ``update`` adds a batch; ``sums`` returns the statistics as a dict of
    numbers, which the evaluator adds up across processes before calling
    ``compute(sums)`` for the final values. Additive sums make the result
    independent of how the data was split between processes.
    """

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
