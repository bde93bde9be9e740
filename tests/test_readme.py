"""The README's examples run, and its test command is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write runs/ where they run
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    namespace: dict = {}  # the blocks read as one session, each continuing the last
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_scripts_parse():
    """The shell scripts and benchmarks are read whole before they run: a syntax error found on a
    device machine would cost a call of its few minutes."""
    import subprocess

    shell = sorted((ROOT / "scripts").glob("*.sh")) + sorted((ROOT / "benchmarks").glob("*.sh")) + [ROOT / ".ci/run"]
    assert len(shell) > 5
    for script in shell:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script.name, done.stderr)
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        compile(script.read_text(), str(script), "exec")
