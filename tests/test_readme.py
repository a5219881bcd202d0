"""Every Python example in the README runs as written (each in a fresh interpreter)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, f"README example {index + 1} failed:\n{done.stderr}"
