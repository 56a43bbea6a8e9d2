"""Make ``import ppuhd`` work when a tool runs from a clone without installing."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# Paddle's C++ core logs INFO lines (executor start-up, pass lists) to stderr;
# keep them out of the tools' output unless the user asked for them.
os.environ.setdefault("GLOG_minloglevel", "2")

import warnings  # noqa: E402

# Printed at every Paddle import on machines without ccache; irrelevant here.
warnings.filterwarnings("ignore", message="No ccache found")
# Printed while tracing models for export; says nothing about the result.
warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
