"""docs/recipes.md: every ```python block runs, in a fresh folder, as a user would paste it (the
ones that import torch are skipped where torch is not installed)."""

import importlib.util
import os
import re

import pytest

RECIPES = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "recipes.md")


def blocks():
    with open(RECIPES, encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)
    assert len(found) >= 4, "docs/recipes.md lost its code blocks"
    return found


@pytest.mark.parametrize("code", blocks(), ids=lambda code: code.splitlines()[-1][:40])
def test_the_recipe_runs(code, tmp_path, monkeypatch, capsys):
    if (
        re.search(r"^import torch|^from torch", code, flags=re.M)
        and importlib.util.find_spec("torch") is None
    ):
        pytest.skip("torch is not installed (pip install torch)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, RECIPES, "exec"), {"__name__": "__recipe__"})
