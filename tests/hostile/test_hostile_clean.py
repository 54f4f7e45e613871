"""`sftadapt clean` and the stages delete only what sftadapt recorded it wrote: folders of the user's named
`*.old-*`, links, a user's file inside a set-aside stage folder and a user's `checkpoint-*` all survive."""

import json
import os

import pytest
from typer.testing import CliRunner

from sftadapt.cli import app
from sftadapt.pipeline import Stages
from sftadapt.runtime import owned
from sftadapt.runtime.outdir import OutDirError, claim

runner = CliRunner()


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    text = result.output.strip()
    assert text.count("\n") == 0 and text.startswith("error:"), text
    for word in words:
        assert word in text, text


def _work(folder):
    (folder / "summary.json").write_text("{}")
    (folder / "shards").mkdir(exist_ok=True)
    (folder / "shards" / "shard-0.jsonl").write_text("{}\n" * 1000)
    return {"ok": True}


def _stage(root, value, keep=1):
    return Stages(root, progress=False, keep_superseded=keep).run("rewrite", {"lr": value}, [], _work)


def _run_folder(tmp_path):
    root = tmp_path / "run"
    claim(root, "run")
    return root


def test_clean_refuses_a_folder_that_no_run_made_and_deletes_nothing(tmp_path):
    user = tmp_path / "U"
    (user / "photos.old-2020").mkdir(parents=True)
    (user / "photos.old-2020" / "a.jpg").write_bytes(b"jpg")
    (user / "deep" / "x" / "thesis.old-final").mkdir(parents=True)
    result = runner.invoke(app, ["clean", str(user), "-y"])
    _one_line_error(result, "not a folder that `sftadapt run` made", "nothing was removed")
    assert (user / "photos.old-2020" / "a.jpg").exists() and (user / "deep" / "x" / "thesis.old-final").is_dir()


def test_clean_in_a_run_folder_leaves_the_users_own_old_folders_and_links(tmp_path):
    root = _run_folder(tmp_path)
    (root / "photos.old-2020").mkdir()
    (root / "photos.old-2020" / "a.jpg").write_bytes(b"jpg")
    (root / "seed-0" / "notes" / "thesis.old-final").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (root / "link.old-1").symlink_to(elsewhere, target_is_directory=True)
    (root / "seed-1").symlink_to(elsewhere, target_is_directory=True)  # a link where a seed folder would be
    result = runner.invoke(app, ["clean", str(root), "-y"])
    assert result.exit_code == 0 and "nothing set aside to free" in result.output, result.output
    assert (root / "photos.old-2020" / "a.jpg").exists() and (root / "seed-0" / "notes" / "thesis.old-final").is_dir()
    assert (root / "link.old-1").is_symlink() and (elsewhere / "precious.txt").read_text() == "keep"


def test_clean_refuses_a_link_to_a_run_folder(tmp_path):
    root = _run_folder(tmp_path)
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    _one_line_error(runner.invoke(app, ["clean", str(tmp_path / "alias"), "-y"]), "symbolic link")


def test_clean_lists_then_frees_what_the_run_set_aside_and_keeps_the_users_file_in_it(tmp_path):
    root = _run_folder(tmp_path)
    _stage(root, 1)
    (root / "rewrite" / "my-notes.txt").write_text("mine")  # the user's, dropped into a stage folder
    _stage(root, 2)
    (aside,) = root.glob("rewrite.old-*")
    assert json.loads((aside / owned.SET_ASIDE).read_text())["entries"] == ["shards", "stage.json", "summary.json"]
    shown = runner.invoke(app, ["clean", str(root)], input="n\n")
    assert shown.exit_code == 0 and "nothing freed" in shown.output and "my-notes.txt" in shown.output
    assert (aside / "shards").is_dir()
    freed = runner.invoke(app, ["clean", str(root), "--yes"])
    assert freed.exit_code == 0 and "freed" in freed.output and "1 folders kept" in freed.output, freed.output
    assert (aside / "my-notes.txt").read_text() == "mine"  # the user's file stays where it was
    assert sorted(p.name for p in aside.iterdir()) == ["my-notes.txt"]
    assert (root / "rewrite" / "summary.json").exists()  # the current output is never touched


def test_clean_removes_a_set_aside_folder_whole_when_it_holds_only_sftadapt_files(tmp_path):
    root = _run_folder(tmp_path)
    seed = root / "seed-3"
    _stage(seed, 1)
    _stage(seed, 2)
    (aside,) = seed.glob("rewrite.old-*")
    freed = runner.invoke(app, ["clean", str(root), "-y"])
    assert freed.exit_code == 0 and "kept" not in freed.output, freed.output
    assert not aside.exists() and (seed / "rewrite" / "shards").is_dir()


def test_keep_superseded_zero_keeps_a_users_file_of_the_set_aside_folder(tmp_path):
    root = _run_folder(tmp_path)
    _stage(root, 1, keep=0)
    (root / "rewrite" / "my-notes.txt").write_text("mine")
    _stage(root, 2, keep=0)
    (aside,) = root.glob("rewrite.old-*")  # kept: the user's file is in it
    assert sorted(p.name for p in aside.iterdir()) == ["my-notes.txt"]
    _stage(root, 3, keep=0)  # the next change removes its own set-aside folder whole
    assert [p.name for p in root.glob("rewrite.old-*")] == [aside.name]


def test_a_folder_named_like_a_set_aside_one_is_not_superseded_without_the_record(tmp_path):
    root = _run_folder(tmp_path)
    (root / "rewrite.old-20200101-000000").mkdir()
    (root / "rewrite.old-20200101-000000" / "thesis.tex").write_text("mine")
    _stage(root, 1, keep=0)
    _stage(root, 2, keep=0)
    assert (root / "rewrite.old-20200101-000000" / "thesis.tex").read_text() == "mine"


def test_a_users_checkpoint_is_refused_before_training_and_never_deleted(tmp_path):
    out = tmp_path / "train"
    claim(out, "train")
    owned.open_checkpoints(out)  # a new folder: an empty record
    (out / "checkpoint-500").mkdir()
    (out / "checkpoint-500" / "trainer_state.json").write_text("{}")
    with pytest.raises(OutDirError, match="checkpoint-500.*did not write"):
        owned.open_checkpoints(out)
    assert owned.drop_checkpoints(out) == [] and (out / "checkpoint-500").is_dir()


def test_recorded_checkpoints_are_the_only_ones_dropped(tmp_path):
    from types import SimpleNamespace

    out = tmp_path / "train"
    out.mkdir()
    owned.open_checkpoints(out)
    recorder = owned.checkpoint_recorder(out)
    state = SimpleNamespace(global_step=4, is_world_process_zero=True)
    recorder.on_step_end(None, state, SimpleNamespace(should_save=False))
    assert owned.recorded_checkpoints(out) == set()
    recorder.on_step_end(None, state, SimpleNamespace(should_save=True))  # recorded before the Trainer writes
    assert owned.recorded_checkpoints(out) == {"checkpoint-4"}
    (out / "checkpoint-4").mkdir()
    owned.open_checkpoints(out)  # ours: accepted on resume
    (out / "checkpoint-9").mkdir()  # not recorded: someone else's
    assert owned.drop_checkpoints(out) == ["checkpoint-4"]
    assert not (out / "checkpoint-4").exists() and (out / "checkpoint-9").is_dir()


def test_a_folder_trained_before_the_record_existed_keeps_resuming(tmp_path):
    out = tmp_path / "train"
    (out / "checkpoint-2").mkdir(parents=True)
    owned.open_checkpoints(out)  # adopted once
    assert owned.recorded_checkpoints(out) == {"checkpoint-2"}
    owned.open_checkpoints(out)


def test_a_link_named_like_a_checkpoint_is_refused_and_its_target_kept(tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    target = tmp_path / "mine"
    target.mkdir()
    (target / "weights").write_text("w")
    os.symlink(target, out / "checkpoint-1")
    with pytest.raises(OutDirError, match="checkpoint-1"):
        owned.open_checkpoints(out)
    assert owned.drop_checkpoints(out) == [] and (target / "weights").exists()


def test_a_finished_run_stage_drops_its_own_checkpoints_only(tmp_path):
    """A stage re-run in place (resumed after a kill): the user's checkpoint-* in the stage folder survives the
    checkpoint drop that follows a finished stage; the one the stage's Trainer recorded goes."""

    def killed(folder):
        (folder / "checkpoint-7").mkdir()  # the user's, put there while the stage was down
        raise KeyboardInterrupt

    def trained(folder):
        owned._write_checkpoints(folder, {"checkpoint-2"})  # as the Trainer's recorder does before it saves
        (folder / "checkpoint-2").mkdir()
        return {"ok": True}

    with pytest.raises(KeyboardInterrupt):
        Stages(tmp_path, progress=False).run("train_sft", {"lr": 1}, [], killed)
    Stages(tmp_path, progress=False).run("train_sft", {"lr": 1}, [], trained)
    assert (tmp_path / "train_sft" / "checkpoint-7").is_dir() and not (tmp_path / "train_sft" / "checkpoint-2").exists()
