"""Installing never replaces the user's Paddle, and a missing Paddle says what to run."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PADDLE_WHEEL = re.compile(r"^\s*['\"]?paddlepaddle", re.IGNORECASE)


def requirement_lines():
    for name in sorted(os.listdir(REPO)):
        if name.startswith("requirements") and name.endswith(".txt"):
            with open(os.path.join(REPO, name)) as f:
                yield from ((name, line) for line in f if not line.lstrip().startswith("#"))
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        text = f.read()
    dependencies = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    yield from (("pyproject.toml", item.strip()) for item in dependencies.split(","))


def test_no_requirements_file_names_a_paddle_wheel():
    lines = list(requirement_lines())
    assert any(name == "pyproject.toml" for name, _ in lines) and any("numpy" in line for _, line in lines)
    named = [(name, line.strip()) for name, line in lines if PADDLE_WHEEL.match(line)]
    assert named == []


def test_importing_without_paddle_says_how_to_install_it():
    code = "import sys; sys.modules['paddle'] = None; import ppuhd"  # as if Paddle were not installed
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ppuhd needs PaddlePaddle 3" in result.stderr and "pip install paddlepaddle==3.3.1" in result.stderr
    assert "paddlepaddle-gpu" in result.stderr


def test_ci_runs_exactly_the_readmes_test_command():
    with open(os.path.join(REPO, "README.md")) as f:
        commands = re.findall(r"```bash\n(.*?)\n```", f.read(), re.S)
    install_and_demo, install_and_test = commands[0], next(c for c in commands if "pytest" in c)
    assert install_and_demo.startswith("pip install paddlepaddle==3.3.1 -r requirements.txt && ")
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert f.read().strip().splitlines()[-1] == install_and_test
