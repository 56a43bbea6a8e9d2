"""The one base class of errors caused by what a user gave, not by a bug.

A config, a weights file, an image, a folder, or the machine itself (a loader
worker killed for memory). The tools catch :class:`UserError` and print its
message as one line instead of a traceback. Every subclass can be rebuilt from
its message alone, so it survives pickling (out of a worker process).
"""


class UserError(Exception):
    """Bad input; its message says what is wrong and, where it can, what to do."""
