"""The reproduction ladder: each rung compares this project with the official code.

See :mod:`tests.alignment.ladder`; ``tools/check_alignment.py`` prints it and
``tests/test_alignment.py`` asserts it.
"""
