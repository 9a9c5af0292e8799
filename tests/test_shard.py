"""--shard i/n and merge: the merged case set equals an unsharded run's; bad parts are refused."""
import pytest

from celora_bench import cli, results, runner
from celora_bench.merge import MergeError, merge
from celora_bench.suite import Options

OPTS = Options(model="tiny")
K = ["tiny/q_proj+", "tiny/gate_proj+", "tiny/down_proj/"]    # the tiny model's three shapes


def test_shards_partition_the_plan_by_group():
    todo = runner.plan(["backward-breakdown"], OPTS, K)
    parts = [runner.shard_of(todo, i, 3) for i in (1, 2, 3)]
    ids = [c.id for p in parts for _, c in p]
    assert sorted(ids) == sorted(c.id for _, c in todo) and len(set(ids)) == len(ids)
    assert parts, 'nothing to check: the loop below would pass vacuously'
    for p in parts:                 # each layer's providers stay in one part
        assert len({c.layer for _, c in p}) == 1


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    out = []
    for i in (1, 2):
        path = str(d / f"part{i}.json")
        assert cli.main(["run", "backward-breakdown", "--model", "tiny", "-k", K[0], "-k", K[1],
                         "--shard", f"{i}/2", "--out", path]) == 0
        out.append(path)
    return out


def test_merge_joins_parts_into_the_unsharded_case_set(parts, tmp_path):
    merged = str(tmp_path / "merged.json")
    assert cli.main(["merge", *parts, "--out", merged]) == 0
    run = results.load(merged)
    want = {c.id for _, c in runner.plan(["backward-breakdown"], OPTS, K[:2])}
    assert run.done_case_ids() == want and run.status == "complete"
    assert run.verdicts["backward-breakdown"]


def test_merge_refuses_missing_overlapping_and_unsharded(parts, tmp_path):
    loaded = [results.load(p) for p in parts]
    with pytest.raises(MergeError, match="shard 2/2 is missing"):
        merge(loaded[:1], str(tmp_path / "m.json"))
    with pytest.raises(MergeError, match="given twice"):
        merge([loaded[0], loaded[0]], str(tmp_path / "m.json"))
    plain = results.Run(path=str(tmp_path / "p.json"), run={"suites": ["backward-breakdown"]})
    with pytest.raises(MergeError, match="not a sharded run"):
        merge([plain], str(tmp_path / "m.json"))


@pytest.mark.parametrize("spec", ["0/2", "3/2", "1-2", "a/b"])
def test_bad_shard_spec_is_one_line(spec, capsys):
    assert cli.main(["run", "backward-breakdown", "--shard", spec]) == 2
    assert "--shard" in capsys.readouterr().err
