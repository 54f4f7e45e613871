import json

import pytest

from sftadapt.data.store import ShardStore, StoreError, run_sharded


def test_resume_skips_done_shards_and_output_equals_uninterrupted(tmp_path):
    items = list(range(10))
    calls = []

    def work(chunk):
        calls.append(list(chunk))
        return [{"x": i, "sq": i * i} for i in chunk]

    full = ShardStore(tmp_path / "full", "h1")
    run_sharded(full, items, 3, work, progress=False)
    full.finalize(tmp_path / "full.jsonl", expected_shards=4)

    # a "killed" run: two shards done and a half-written temp file of the third
    part = ShardStore(tmp_path / "part", "h1")
    part.write(0, work(items[0:3]))
    part.write(1, work(items[3:6]))
    (tmp_path / "part" / "shard-00002.jsonl.tmp").write_text('{"x": 6, "sq"')
    calls.clear()
    resumed = ShardStore(tmp_path / "part", "h1")
    run_sharded(resumed, items, 3, work, progress=False)
    assert calls == [[6, 7, 8], [9]]  # only the missing shards ran
    resumed.finalize(tmp_path / "part.jsonl", expected_shards=4)
    assert (tmp_path / "part.jsonl").read_bytes() == (tmp_path / "full.jsonl").read_bytes()
    assert json.loads((tmp_path / "part" / "manifest.json").read_text())["rows"] == 10


def test_changed_config_refuses_unless_forced(tmp_path):
    store = ShardStore(tmp_path / "s", "aaa", {"k": 4})
    store.write(0, [{"x": 1}])
    with pytest.raises(StoreError, match="another config"):
        ShardStore(tmp_path / "s", "bbb", {"k": 8})
    forced = ShardStore(tmp_path / "s", "bbb", {"k": 8}, force=True)
    assert forced.shard_indices() == []
    assert list(tmp_path.glob("s.old-*/shard-00000.jsonl"))  # old work set aside, not deleted


def test_finalize_refuses_missing_shards(tmp_path):
    store = ShardStore(tmp_path / "s", "h")
    store.write(0, [{"x": 1}])
    store.write(2, [{"x": 3}])
    with pytest.raises(StoreError, match=r"shards \[1\] are missing"):
        store.finalize(tmp_path / "out.jsonl", expected_shards=3)
