"""Run a tool from a clone without installing: ppuhd importable, the process set up as the ppuhd command's."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import ppuhd_command  # noqa: E402

ppuhd_command.prepare_process()  # before Paddle is imported
