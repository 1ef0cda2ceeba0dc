"""The one recipe runner with real stages that write files: chaining, reuse, resume of a
running stage, refusal of a changed stage naming the keys, --redo from the first change.
(`gecko distill` and multi-stage `gecko train` run on it: test_distill.py,
test_experiment.py.)"""

import json

import pytest

from gecko_jax.errors import GeckoError
from gecko_jax.recipes import runner


class Crash(Exception):
    pass


def _recipe(calls, conf_a=1, conf_b=2, crash_b=False):
    """a writes numbers, b sums a's file (resuming its own partial work), c reads b."""

    def a(stage_dir, done):
        calls.append("a")
        (stage_dir / "nums.txt").write_text(" ".join(str(i) for i in range(conf_a + 3)))
        return {"count": conf_a + 3}

    def b(stage_dir, done):
        calls.append("b")
        partial = stage_dir / "partial.txt"
        resumed = partial.is_file()
        partial.write_text("half")
        if crash_b:
            raise Crash("killed mid-stage")
        nums = [int(x) for x in (stage_dir.parent / "a" / "nums.txt").read_text().split()]
        return {"sum": sum(nums) * conf_b, "resumed_own_work": resumed,
                "a_count": done["a"]["summary"]["count"]}

    def c(stage_dir, done):
        calls.append("c")
        return {"double": 2 * done["b"]["summary"]["sum"]}

    return [runner.Stage("a", {"n": conf_a}, a), runner.Stage("b", {"k": conf_b}, b, ("a",)),
            runner.Stage("c", {}, c, ("b",))]


def test_runs_chains_and_reuses(tmp_path):
    calls = []
    first = runner.run_recipe(tmp_path, _recipe(calls), progress=False, derived=("report.md",))
    assert first["ran"] == ["a", "b", "c"] and calls == ["a", "b", "c"]
    assert first["stages"]["c"]["summary"] == {"double": 2 * 2 * sum(range(4))}
    marker = json.loads((tmp_path / "b" / runner.MARKER).read_text())
    assert marker["status"] == "done" and marker["config"]["inputs"]["a"] == \
        runner.config_hash({"n": 1})
    assert marker["config_hash"] == runner.config_hash(marker["config"])
    calls.clear()
    second = runner.run_recipe(tmp_path, _recipe(calls), progress=False)
    assert second["ran"] == [] and calls == []
    assert second["stages"] == first["stages"]


def test_a_stage_killed_midway_resumes(tmp_path):
    calls = []
    with pytest.raises(Crash):
        runner.run_recipe(tmp_path, _recipe(calls, crash_b=True), progress=False)
    assert json.loads((tmp_path / "b" / runner.MARKER).read_text())["status"] == "running"
    calls.clear()
    out = runner.run_recipe(tmp_path, _recipe(calls), progress=False)
    assert out["ran"] == ["b", "c"] and calls == ["b", "c"]     # a reused
    b = out["stages"]["b"]
    assert b["resumed"] is True and b["summary"]["resumed_own_work"] is True


def test_changed_stage_is_refused_naming_keys_then_redone(tmp_path):
    calls = []
    runner.run_recipe(tmp_path, _recipe(calls), progress=False, derived=("report.md",))
    (tmp_path / "report.md").write_text("old report")
    with pytest.raises(GeckoError, match=r"b: k: 2 -> 5") as err:
        runner.run_recipe(tmp_path, _recipe(calls, conf_b=5), progress=False)
    assert "c: inputs" in str(err.value)          # the change reaches c through its input
    calls.clear()
    out = runner.run_recipe(tmp_path, _recipe(calls, conf_b=5), redo=True, progress=False,
                            derived=("report.md",))
    assert out["ran"] == ["b", "c"] and calls == ["b", "c"]
    assert out["stages"]["b"]["summary"]["sum"] == 5 * sum(range(4))
    assert not (tmp_path / "report.md").exists()   # derived outputs are removed on redo
    # A change at the top reruns everything below it.
    calls.clear()
    out = runner.run_recipe(tmp_path, _recipe(calls, conf_a=2, conf_b=5), redo=True,
                            progress=False)
    assert out["ran"] == ["a", "b", "c"]


def test_bad_recipes_are_refused(tmp_path):
    noop = lambda stage_dir, done: {}  # noqa: E731
    with pytest.raises(GeckoError, match="distinct"):
        runner.run_recipe(tmp_path, [runner.Stage("a", {}, noop), runner.Stage("a", {}, noop)],
                          progress=False)
    with pytest.raises(GeckoError, match="not earlier stages"):
        runner.run_recipe(tmp_path, [runner.Stage("a", {}, noop, ("b",)),
                                     runner.Stage("b", {}, noop)], progress=False)
