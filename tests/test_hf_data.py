"""Datasets by name: `hf:ORG/NAME[:SPLIT]` and `datasets.save_to_disk` folders, read through `datasets`
with the same format readers and checks as a JSONL file; a clear error without network."""

from __future__ import annotations

import json
import sys

import pytest

from lima_align.errors import LimaError
from lima_align.dataset_specs import load_dataset

datasets = pytest.importorskip("datasets")


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def saved(tmp_path, examples_file):
    """The test examples saved twice: as one Dataset, and as a DatasetDict with train and test splits."""
    ds = datasets.Dataset.from_list(rows_of(examples_file))
    ds.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(str(tmp_path / "dict"))
    return tmp_path


def test_a_saved_dataset_reads_like_its_jsonl_file(saved, examples_file):
    from_file = load_dataset(str(examples_file), purpose="train")
    from_disk = load_dataset(str(saved / "single"), purpose="train")
    assert [c.to_dict() for c in from_disk] == [c.to_dict() for c in from_file]


def test_a_saved_dataset_dict_gives_train_or_the_named_split(saved):
    assert len(load_dataset(str(saved / "dict"))) == 8
    assert [c.id for c in load_dataset(f"{saved / 'dict'}:test")] == ["ex-0", "ex-1", "ex-2"]
    with pytest.raises(LimaError) as e:
        load_dataset(f"{saved / 'dict'}:validation")
    assert "no split 'validation' (it has train, test)" in str(e.value)
    with pytest.raises(LimaError, match="a single split"):
        load_dataset(f"{saved / 'single'}:train")


def test_other_formats_and_ids_from_row_numbers(tmp_path):
    datasets.Dataset.from_list([{"instruction": "Add 2 and 2.", "input": "", "output": "4"},
                                {"instruction": "Name a colour.", "input": "", "output": "Blue."}]
                               ).save_to_disk(str(tmp_path / "alpaca"))
    convs = load_dataset(str(tmp_path / "alpaca"), purpose="train")
    assert [c.id for c in convs] == ["alpaca-0", "alpaca-1"]
    assert [m.to_dict() for m in convs[0].messages] == [{"role": "user", "content": "Add 2 and 2."},
                                                          {"role": "assistant", "content": "4"}]


def test_rows_are_validated_with_every_problem_and_its_row(tmp_path):
    good = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    rows = [{"id": "a", "messages": good},
            {"id": "b", "messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "again"}]},
            {"id": "a", "messages": good}]
    folder = tmp_path / "bad"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    with pytest.raises(LimaError) as e:
        load_dataset(str(folder), purpose="train")
    where = [p.where for p in e.value.problems]
    assert f"{folder}[1] messages[1].role" in where
    assert f"{folder}[2] id" in where
    # the same rows are fine as prompts-to-be-answered only where they end with a user turn
    with pytest.raises(LimaError, match="a prompt must end with a user turn"):
        load_dataset(str(folder), purpose="prompt")


def test_hub_without_network_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    # What HF_HUB_OFFLINE=1 sets at import time (the variable itself is read only then).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LimaError) as e:
        load_dataset("hf:lima-align-tests/no-such-dataset:dev", purpose="train")
    p = e.value.problems[0]
    assert p.where == "hf:lima-align-tests/no-such-dataset:dev"
    assert "cannot load 'lima-align-tests/no-such-dataset' (split 'dev') from the Hugging Face hub" in p.what
    assert "HF_HUB_OFFLINE is set" in p.fix and "save_to_disk" in p.fix


def test_missing_datasets_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(LimaError) as e:
        load_dataset("hf:org/name")
    assert e.value.problems[0].fix == "pip install datasets"
    with pytest.raises(LimaError, match="no dataset name"):
        load_dataset("hf:")


def test_train_on_a_saved_dataset_and_answer_prompts_from_one(saved, tiny_gemma, tmp_path):
    from lima_align.config import load_recipe
    from lima_align.train import train

    recipe = load_recipe(None, [f"model.name={tiny_gemma}", f"data.train=[{saved / 'dict'}]",
                                f"data.mix=[{{dataset: '{saved / 'dict'}:test', count: 2}}]",
                                f"train.output_dir={tmp_path / 'run'}", "train.batch_size=5", "train.epochs=1",
                                "train.save_from_epoch=1", "train.save_to_epoch=1", "train.precision=fp32"])
    run = train(recipe, log=lambda *_: None)
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["mixture"] == {str(saved / "dict"): {"drawn": 8, "trained": 8},
                                       f"{saved / 'dict'}:test": {"drawn": 2, "trained": 2}}
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    prompts = tmp_path / "prompts"
    datasets.Dataset.from_list([{"id": "p1", "messages": [{"role": "user", "content": "Name a colour."}]}]
                               ).save_to_disk(str(prompts))
    assert [c.prompt for c in load_dataset(str(prompts), purpose="prompt")] == ["Name a colour."]
