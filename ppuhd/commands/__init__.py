"""The commands, run as ``ppuhd <command>`` (or ``python tools/<tool>.py`` in a clone).

Each module has ``add_arguments(parser)``, ``run(args)`` and ``main(argv=None)``.
"""

# command name -> module of this package
COMMANDS = {
    "train": "train",
    "eval": "eval",
    "export": "export",
    "infer": "infer",
    "convert": "convert",
    "compare": "compare",
    "benchmark": "benchmark",
    "prepare-patches": "prepare_patches",
    "app": "app",
}
