"""Every `lima-align` subcommand against the inputs users get wrong: a missing file, a folder, an empty
file, a broken line in the middle, a file of another record kind, CSV, bytes that are not UTF-8, an
output that cannot be written, numbers that are not finite or out of range, an unreachable database.

Each row expects exit 2, `error: WHERE: WHAT` and `fix: ...` on stderr, no traceback, and every file
that existed before untouched. The rows are keyed by subcommand and the subcommands are read from the
parser, so a new subcommand without a row fails `test_every_subcommand_has_rows`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_examples
from lima_align.cli import main, make_parser

PG_DOWN = "postgresql://user:pw@127.0.0.1:1/none"  # port 1: refused at once, no waiting
SQLITE_IMPOSSIBLE = "sqlite:///{ws}/a-file/study.db"  # its folder is a file


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += leaf_commands(sub, (*prefix, name)) or [" ".join((*prefix, name))]
    return out


def gens(model: str, n: int = 3) -> str:
    return "".join(json.dumps({"id": f"{model}:p{i}", "prompt_id": f"p{i}", "model": model,
                               "messages": [{"role": "user", "content": f"Question {i}?"}],
                               "output": "answer " * (i + 1), "finish_reason": "eot", "tokens": None,
                               "decoding": {}}) + "\n" for i in range(n))


def broken(text: str) -> str:
    """The same records with a malformed line in the middle."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[:1] + ['{"id": "x", "messages": [\n'] + lines[1:])


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """Inputs shared by all rows (never changed by a row: checked after each)."""
    d = tmp_path_factory.mktemp("inputs")
    write_examples(d / "dataset.jsonl")
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "messages": [
        {"role": "user", "content": f"Question {i}?"}]}) + "\n" for i in range(3)))
    (d / "gens_a.jsonl").write_text(gens("base"))
    (d / "gens_b.jsonl").write_text(gens("aligned"))
    assert main(["judge", "pairwise", str(d / "gens_a.jsonl"), str(d / "gens_b.jsonl"), "--judge", "longest",
                 "--output", str(d / "judgments.jsonl"), "--cache", str(d / "cache.sqlite")]) == 0
    (d / "cache.sqlite").unlink()
    (d / "empty.jsonl").write_text("")
    (d / "folder").mkdir()
    (d / "data.csv").write_text("instruction,output\nSay hi,Hi\nSay bye,Bye\n")
    (d / "latin.jsonl").write_bytes(b'{"id": "q1", "messages": [{"role": "user", "content": "caf\xe9?"}]}\n')
    (d / "latin.yaml").write_bytes(b"train:\n  epochs: 1 # caf\xe9\n")
    (d / "bad.yaml").write_text("train:\n  epochs: [1,\n")
    (d / "broken_data.jsonl").write_text(broken((d / "dataset.jsonl").read_text()))
    (d / "broken_gens.jsonl").write_text(broken(gens("base")))
    (d / "broken_judgments.jsonl").write_text(broken((d / "judgments.jsonl").read_text()))
    (d / "questions.jsonl").write_text(json.dumps({"question_id": 81, "category": "writing",
                                                   "turns": ["Write a poem."]}) + "\n")
    (d / "alpaca_eval.json").write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi!",
                                                     "generator": "m", "dataset": "test"}]))
    (d / "a-file").write_text("a file, so nothing can be written below it\n")
    return d


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


# (subcommand, case, argv, substrings stderr must hold). {ws}: the inputs folder, {out}: a fresh empty
# folder for this row's outputs, {model}: a tiny Llama. rc 2 unless the row says otherwise.
ROWS: list[tuple[str, str, str, tuple[str, ...]]] = [
    # training and generation
    ("train", "missing recipe", "train {ws}/nope.yaml", ("nope.yaml",)),
    ("train", "data missing", "train lima --data {ws}/nope.jsonl model.name={model} train.output_dir={out}/run",
     ("nope.jsonl: file not found",)),
    ("train", "data folder", "train lima --data {ws}/folder model.name={model} train.output_dir={out}/run",
     ("folder: is a folder",)),
    ("train", "data empty", "train lima --data {ws}/empty.jsonl model.name={model} train.output_dir={out}/run",
     ("empty.jsonl: holds no records",)),
    ("train", "data broken line", "train lima --data {ws}/broken_data.jsonl model.name={model} "
     "train.output_dir={out}/run", ("broken_data.jsonl:2: not valid JSON",)),
    ("train", "data csv", "train lima --data {ws}/data.csv model.name={model} train.output_dir={out}/run",
     ("data.csv: not a JSON Lines file", "CSV")),
    ("train", "data not UTF-8", "train lima --data {ws}/latin.jsonl model.name={model} train.output_dir={out}/run",
     ("latin.jsonl:1: not UTF-8",)),
    ("train", "data of another kind", "train lima --data {ws}/gens_a.jsonl model.name={model} "
     "train.output_dir={out}/run", ("gens_a.jsonl:1", "assistant")),
    ("train", "lr not finite", "train lima model.name={model} train.output_dir={out}/run train.lr=nan",
     ("train.lr",)),
    ("train", "epochs out of range", "train lima model.name={model} train.output_dir={out}/run train.epochs=-1",
     ("train.epochs",)),
    ("train", "output under a file", "train lima --data {ws}/dataset.jsonl model.name={model} "
     "train.output_dir={ws}/a-file/run", ("a-file",)),
    ("generate", "prompts missing", "generate --model {model} --prompts {ws}/nope.jsonl --output {out}/g.jsonl",
     ("nope.jsonl: file not found",)),
    ("generate", "prompts folder", "generate --model {model} --prompts {ws}/folder --output {out}/g.jsonl",
     ("folder: is a folder",)),
    ("generate", "prompts empty", "generate --model {model} --prompts {ws}/empty.jsonl --output {out}/g.jsonl",
     ("empty.jsonl: holds no records",)),
    ("generate", "prompts broken line", "generate --model {model} --prompts {ws}/broken_data.jsonl "
     "--output {out}/g.jsonl", ("broken_data.jsonl:2: not valid JSON",)),
    ("generate", "prompts csv", "generate --model {model} --prompts {ws}/data.csv --output {out}/g.jsonl",
     ("data.csv: not a JSON Lines file",)),
    ("generate", "prompts not UTF-8", "generate --model {model} --prompts {ws}/latin.jsonl --output {out}/g.jsonl",
     ("latin.jsonl:1: not UTF-8",)),
    ("generate", "prompts of another kind", "generate --model {model} --prompts {ws}/dataset.jsonl "
     "--output {out}/g.jsonl", ("dataset.jsonl:1", "user turn")),
    ("generate", "output folder", "generate --model {model} --prompts {ws}/prompts.jsonl --output {ws}/folder",
     ("folder: is a folder",)),
    ("generate", "output under a file", "generate --model {model} --prompts {ws}/prompts.jsonl "
     "--output {ws}/a-file/g.jsonl", ("a-file/g.jsonl", "a-file is a file")),
    ("generate", "output with a broken line", "generate --model {model} --prompts {ws}/prompts.jsonl "
     "--output {ws}/broken_gens.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("generate", "no requests in flight", "generate --api-base http://127.0.0.1:1/v1 --api-model m "
     "--prompts {ws}/prompts.jsonl --output {out}/g.jsonl --concurrency 0", ("--concurrency",)),
    ("generate", "temperature not finite", "generate --model {model} --prompts {ws}/prompts.jsonl "
     "--output {out}/g.jsonl generate.temperature=nan", ("generate.temperature",)),
    ("generate", "top_p out of range", "generate --model {model} --prompts {ws}/prompts.jsonl "
     "--output {out}/g.jsonl generate.top_p=2", ("generate.top_p",)),
    ("chat", "model missing", "chat --model {ws}/nope-model", ("nope-model",)),
    ("chat", "recipe missing", "chat --recipe {ws}/nope.yaml", ("nope.yaml",)),
    ("serve", "port out of range", "serve --model {model} --port 70000", ("--port",)),
    ("serve", "model missing", "serve --model {ws}/nope-model", ("nope-model",)),
    ("serve", "recipe is a folder", "serve --recipe {ws}/folder", ("folder",)),
    # judging
    ("judge pairwise", "a missing", "judge pairwise {ws}/nope.jsonl {ws}/gens_b.jsonl --judge longest "
     "--output {out}/j.jsonl", ("nope.jsonl: file not found",)),
    ("judge pairwise", "a folder", "judge pairwise {ws}/folder {ws}/gens_b.jsonl --judge longest "
     "--output {out}/j.jsonl", ("folder: is a folder",)),
    ("judge pairwise", "a empty", "judge pairwise {ws}/empty.jsonl {ws}/gens_b.jsonl --judge longest "
     "--output {out}/j.jsonl", ("empty.jsonl",)),
    ("judge pairwise", "b broken line", "judge pairwise {ws}/gens_a.jsonl {ws}/broken_gens.jsonl --judge longest "
     "--output {out}/j.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("judge pairwise", "b csv", "judge pairwise {ws}/gens_a.jsonl {ws}/data.csv --judge longest "
     "--output {out}/j.jsonl", ("data.csv: not a JSON Lines file",)),
    ("judge pairwise", "b not UTF-8", "judge pairwise {ws}/gens_a.jsonl {ws}/latin.jsonl --judge longest "
     "--output {out}/j.jsonl", ("latin.jsonl:1: not UTF-8",)),
    ("judge pairwise", "a of another kind", "judge pairwise {ws}/judgments.jsonl {ws}/gens_b.jsonl "
     "--judge longest --output {out}/j.jsonl", ("judgments.jsonl:1",)),
    ("judge pairwise", "output folder", "judge pairwise {ws}/gens_a.jsonl {ws}/gens_b.jsonl --judge longest "
     "--output {ws}/folder", ("folder: is a folder",)),
    ("judge pairwise", "output under a file", "judge pairwise {ws}/gens_a.jsonl {ws}/gens_b.jsonl --judge longest "
     "--output {ws}/a-file/j.jsonl --cache {out}/c.sqlite", ("a-file is a file",)),
    ("judge pairwise", "output with a broken line", "judge pairwise {ws}/gens_a.jsonl {ws}/gens_b.jsonl "
     "--judge longest --output {ws}/broken_judgments.jsonl --cache {out}/c.sqlite",
     ("broken_judgments.jsonl:2: not valid JSON",)),
    ("judge pairwise", "cache under a file", "judge pairwise {ws}/gens_a.jsonl {ws}/gens_b.jsonl --judge longest "
     "--output {out}/j.jsonl --cache {ws}/a-file/c.sqlite", ("c.sqlite",)),
    ("judge pairwise", "instructions missing", "judge pairwise {ws}/gens_a.jsonl {ws}/gens_b.jsonl "
     "--judge longest --output {out}/j.jsonl --instructions {ws}/nope.txt", ("nope.txt: instruction file not found",)),
    ("judge absolute", "generations missing", "judge absolute {ws}/nope.jsonl --api-base http://127.0.0.1:1/v1 "
     "--api-model m --output {out}/j.jsonl", ("nope.jsonl: file not found",)),
    ("judge absolute", "generations broken line", "judge absolute {ws}/broken_gens.jsonl --api-base "
     "http://127.0.0.1:1/v1 --api-model m --output {out}/j.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("judge absolute", "generations empty", "judge absolute {ws}/empty.jsonl --api-base http://127.0.0.1:1/v1 "
     "--api-model m --output {out}/j.jsonl", ("empty.jsonl",)),
    ("judge absolute", "price not finite", "judge absolute {ws}/gens_a.jsonl --api-base http://127.0.0.1:1/v1 "
     "--api-model m --output {out}/j.jsonl --price-in nan --price-out 1", ("--price-in",)),
    ("judge turns", "conversations missing", "judge turns {ws}/nope.jsonl --api-base http://127.0.0.1:1/v1 --api-model m "
     "--output {out}/j.jsonl",
     ("nope.jsonl: file not found",)),
    ("judge turns", "conversations empty", "judge turns {ws}/empty.jsonl --api-base http://127.0.0.1:1/v1 "
     "--api-model m --output {out}/j.jsonl", ("empty.jsonl",)),
    ("judge turns", "conversations broken line", "judge turns {ws}/broken_gens.jsonl --api-base "
     "http://127.0.0.1:1/v1 --api-model m --output {out}/j.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("judge turns", "generations instead", "judge turns {ws}/gens_a.jsonl --api-base http://127.0.0.1:1/v1 "
     "--api-model m --output {out}/j.jsonl", ("gens_a.jsonl:1",)),
    ("judge conversations", "a missing", "judge conversations {ws}/nope.jsonl {ws}/gens_b.jsonl --judge longest "
     "--output {out}/j.jsonl", ("nope.jsonl: file not found",)),
    ("judge conversations", "a folder", "judge conversations {ws}/folder {ws}/gens_b.jsonl --judge longest "
     "--output {out}/j.jsonl", ("folder: is a folder",)),
    ("judge conversations", "generations instead", "judge conversations {ws}/gens_a.jsonl {ws}/gens_b.jsonl "
     "--judge longest --output {out}/j.jsonl", ("gens_a.jsonl:1",)),
    # statistics and pages
    ("stats", "missing", "stats {ws}/nope.jsonl", ("nope.jsonl: file not found",)),
    ("stats", "folder", "stats {ws}/folder", ("folder: is a folder",)),
    ("stats", "empty", "stats {ws}/empty.jsonl", ("empty.jsonl: holds no judgment records",)),
    ("stats", "broken line", "stats {ws}/broken_judgments.jsonl", ("broken_judgments.jsonl:2: not valid JSON",)),
    ("stats", "csv", "stats {ws}/data.csv", ("data.csv: not a JSON Lines file",)),
    ("stats", "not UTF-8", "stats {ws}/latin.jsonl", ("latin.jsonl:1: not UTF-8",)),
    ("stats", "generations instead", "stats {ws}/gens_a.jsonl", ("gens_a.jsonl:1 type",)),
    ("stats", "negative bootstrap resamples", "stats {ws}/judgments.jsonl --n-boot -5", ("--n-boot",)),
    ("report", "negative bootstrap resamples", "report {ws}/judgments.jsonl --n-boot -5 --output {out}/rep",
     ("--n-boot",)),
    ("report", "missing", "report {ws}/nope.jsonl --output {out}/rep", ("nope.jsonl: file not found",)),
    ("report", "empty", "report {ws}/empty.jsonl --output {out}/rep", ("empty.jsonl: holds no judgment records",)),
    ("report", "broken line", "report {ws}/broken_judgments.jsonl --output {out}/rep",
     ("broken_judgments.jsonl:2: not valid JSON",)),
    ("report", "generations instead", "report {ws}/gens_a.jsonl --output {out}/rep", ("gens_a.jsonl:1 type",)),
    ("report", "output is a file", "report {ws}/judgments.jsonl --output {ws}/a-file", ("a-file",)),
    ("report", "output under a file", "report {ws}/judgments.jsonl --output {ws}/a-file/rep", ("a-file",)),
    ("answers", "missing", "answers {ws}/nope.jsonl", ("nope.jsonl: file not found",)),
    ("answers", "folder", "answers {ws}/folder", ("folder: is a folder",)),
    ("answers", "empty", "answers {ws}/empty.jsonl", ("empty.jsonl",)),
    ("answers", "broken line", "answers {ws}/broken_gens.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("answers", "csv", "answers {ws}/data.csv", ("data.csv: not a JSON Lines file",)),
    ("answers", "judgments instead", "answers {ws}/judgments.jsonl", ("judgments.jsonl:1",)),
    ("answers", "json output under a file", "answers {ws}/gens_a.jsonl --json {ws}/a-file/s.json", ("a-file",)),
    ("import", "missing", "import alpaca_eval {ws}/nope.json --output {out}/g.jsonl", ("nope.json: file not found",)),
    ("import", "folder", "import alpaca_eval {ws}/folder --output {out}/g.jsonl", ("folder: is a folder",)),
    ("import", "not UTF-8", "import alpaca_eval {ws}/latin.jsonl --output {out}/g.jsonl", ("latin.jsonl:1: not UTF-8",)),
    ("import", "csv", "import alpaca_eval {ws}/data.csv --output {out}/g.jsonl", ("data.csv",)),
    ("import", "fastchat broken line", "import fastchat {ws}/broken_gens.jsonl --questions {ws}/questions.jsonl "
     "--output {out}/g.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("import", "output under a file", "import alpaca_eval {ws}/alpaca_eval.json --output {ws}/a-file/g.jsonl",
     ("a-file is a file",)),
    ("import", "output folder", "import alpaca_eval {ws}/alpaca_eval.json --output {ws}/folder",
     ("folder: is a folder",)),
    # recipes and configuration
    ("quickstart", "recipe missing", "quickstart --recipe {ws}/nope.yaml", ("nope.yaml",)),
    ("quickstart", "epochs out of range", "quickstart train.epochs=-1", ("train.epochs",)),
    ("config show", "missing", "config show {ws}/nope.yaml", ("nope.yaml",)),
    ("config show", "folder", "config show {ws}/folder", ("folder",)),
    ("config show", "YAML syntax", "config show {ws}/bad.yaml", ("bad.yaml",)),
    ("config show", "not UTF-8", "config show {ws}/latin.yaml", ("latin.yaml",)),
    ("config show", "lr not finite", "config show lima train.lr=nan", ("train.lr",)),
    ("config show", "lr infinite", "config show lima train.lr=inf", ("train.lr",)),
    ("config show", "epochs out of range", "config show lima train.epochs=0", ("train.epochs",)),
    ("config accelerate", "no GPUs", "config accelerate --kind ddp --gpus 0", ("--gpus",)),
    ("config accelerate", "output folder", "config accelerate --kind ddp --output {ws}/folder", ("folder",)),
    ("config accelerate", "output under a file", "config accelerate --kind ddp --output {ws}/a-file/acc.yaml",
     ("a-file",)),
    ("config memory", "params not finite", "config memory --params-b nan", ("--params-b",)),
    ("config memory", "params negative", "config memory --params-b -7", ("--params-b",)),
    # datasets
    ("data convert", "missing", "data convert {ws}/nope.jsonl {out}/c.jsonl", ("nope.jsonl: file not found",)),
    ("data convert", "folder", "data convert {ws}/folder {out}/c.jsonl", ("folder: is a folder",)),
    ("data convert", "empty", "data convert {ws}/empty.jsonl {out}/c.jsonl", ("empty.jsonl: holds no records",)),
    ("data convert", "broken line", "data convert {ws}/broken_data.jsonl {out}/c.jsonl",
     ("broken_data.jsonl:2: not valid JSON",)),
    ("data convert", "csv", "data convert {ws}/data.csv {out}/c.jsonl", ("data.csv: not a JSON Lines file",)),
    ("data convert", "not UTF-8", "data convert {ws}/latin.jsonl {out}/c.jsonl", ("latin.jsonl:1: not UTF-8",)),
    ("data convert", "output folder", "data convert {ws}/dataset.jsonl {ws}/folder", ("folder: is a folder",)),
    ("data convert", "output under a file", "data convert {ws}/dataset.jsonl {ws}/a-file/c.jsonl",
     ("a-file is a file",)),
    ("data convert", "not convertible", "data convert {ws}/broken_data.jsonl {out}/c.jsonl --to alpaca",
     ("broken_data.jsonl:2",)),
    ("data validate", "missing", "data validate {ws}/nope.jsonl", ("nope.jsonl: file not found",)),
    ("data validate", "folder", "data validate {ws}/folder", ("folder: is a folder",)),
    ("data validate", "empty", "data validate {ws}/empty.jsonl", ("empty.jsonl: holds no records",)),
    ("data validate", "broken line", "data validate {ws}/broken_data.jsonl", ("broken_data.jsonl:2: not valid JSON",)),
    ("data validate", "csv", "data validate {ws}/data.csv", ("data.csv: not a JSON Lines file", "JSON Lines")),
    ("data validate", "not UTF-8", "data validate {ws}/latin.jsonl", ("latin.jsonl:1: not UTF-8 text (byte 0xe9",)),
    ("data validate", "generations instead", "data validate {ws}/gens_a.jsonl", ("gens_a.jsonl:1",)),
    ("data stats", "missing", "data stats {ws}/nope.jsonl", ("nope.jsonl: file not found",)),
    ("data stats", "empty", "data stats {ws}/empty.jsonl", ("empty.jsonl: holds no records",)),
    ("data stats", "csv", "data stats {ws}/data.csv", ("data.csv: not a JSON Lines file",)),
    ("data stats", "tokenizer missing", "data stats {ws}/dataset.jsonl --tokenizer {ws}/nope-model", ("nope-model",)),
    ("data show-mask", "missing", "data show-mask {ws}/nope.jsonl --model {model}", ("nope.jsonl: file not found",)),
    ("data show-mask", "broken line", "data show-mask {ws}/broken_data.jsonl --model {model}",
     ("broken_data.jsonl:2: not valid JSON",)),
    ("data show-mask", "index out of range", "data show-mask {ws}/dataset.jsonl --model {model} --index 99",
     ("--index",)),
    ("data show-mask", "model missing", "data show-mask {ws}/dataset.jsonl --model {ws}/nope-model", ("nope-model",)),
    ("models prepare", "cache under a file", "models prepare --cache-dir {ws}/a-file/cache", ("a-file",)),
    ("models list", "cache is a file", "models list --cache-dir {ws}/a-file", ("a-file",)),
    # curation
    ("curate run", "recipe missing", "curate run {ws}/nope.yaml", ("nope.yaml",)),
    ("curate run", "recipe YAML syntax", "curate run {ws}/bad.yaml", ("bad.yaml",)),
    ("curate run", "recipe not UTF-8", "curate run {ws}/latin.yaml", ("latin.yaml",)),
    ("curate select", "pool missing", "curate select {ws}/nope.jsonl --output {out}/s.jsonl",
     ("nope.jsonl: file not found",)),
    ("curate select", "pool empty", "curate select {ws}/empty.jsonl --output {out}/s.jsonl", ("empty.jsonl",)),
    ("curate select", "pool broken line", "curate select {ws}/broken_data.jsonl --output {out}/s.jsonl",
     ("broken_data.jsonl:2: not valid JSON",)),
    ("curate select", "pool csv", "curate select {ws}/data.csv --output {out}/s.jsonl", ("data.csv",)),
    ("curate select", "temperature not finite", "curate select {ws}/dataset.jsonl --n 2 --strategy random "
     "--temperature nan --output {out}/s.jsonl", ("temperature",)),
    ("curate select", "n out of range", "curate select {ws}/dataset.jsonl --n -1 --output {out}/s.jsonl", ("n=-1",)),
    ("curate select", "output folder", "curate select {ws}/dataset.jsonl --n 2 --output {ws}/folder",
     ("folder",)),
    ("curate review", "selection missing", "curate review {ws}/nope.jsonl --decisions {out}/d.jsonl",
     ("nope.jsonl: file not found",)),
    ("curate review", "decisions folder", "curate review {ws}/dataset.jsonl --decisions {ws}/folder",
     ("folder",)),
    ("curate apply-review", "decisions missing", "curate apply-review {ws}/dataset.jsonl --decisions "
     "{ws}/nope.jsonl --output {out}/r.jsonl", ("nope.jsonl: decisions file not found",)),
    ("curate apply-review", "decisions broken line", "curate apply-review {ws}/dataset.jsonl --decisions "
     "{ws}/broken_gens.jsonl --output {out}/r.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    # annotation (CLI-level inputs only: the server itself is tested in test_annotate_*)
    ("annotate create-admin", "database unreachable", "annotate create-admin --db " + PG_DOWN +
     " --username root --password-env LIMA_TEST_PW", ("127.0.0.1",)),
    ("annotate set-password", "database impossible", "annotate set-password --db " + SQLITE_IMPOSSIBLE +
     " --username root --password-env LIMA_TEST_PW", ("study.db",)),
    ("annotate set-role", "database unreachable", "annotate set-role --db " + PG_DOWN + " --username root "
     "--role admin", ("127.0.0.1",)),
    ("annotate remove-user", "database impossible", "annotate remove-user --db " + SQLITE_IMPOSSIBLE +
     " --username root", ("study.db",)),
    ("annotate unlock", "database unreachable", "annotate unlock --db " + PG_DOWN + " --all", ("127.0.0.1",)),
    ("annotate create-study", "answers missing", "annotate create-study --db sqlite:///{out}/s.db --name s "
     "--kind absolute --a {ws}/nope.jsonl", ("nope.jsonl: file not found",)),
    ("annotate create-study", "answers broken line", "annotate create-study --db sqlite:///{out}/s.db --name s "
     "--kind absolute --a {ws}/broken_gens.jsonl", ("broken_gens.jsonl:2: not valid JSON",)),
    ("annotate create-study", "guidelines missing", "annotate create-study --db sqlite:///{out}/s.db --name s "
     "--kind absolute --a {ws}/gens_a.jsonl --guidelines {ws}/nope.md", ("nope.md",)),
    ("annotate invite", "database unreachable", "annotate invite --db " + PG_DOWN + " --study s", ("127.0.0.1",)),
    ("annotate export", "database impossible", "annotate export --db " + SQLITE_IMPOSSIBLE +
     " --study s --output {out}/e", ("study.db",)),
    ("annotate progress", "database unreachable", "annotate progress --db " + PG_DOWN, ("127.0.0.1",)),
    ("annotate progress", "database impossible", "annotate progress --db " + SQLITE_IMPOSSIBLE, ("study.db",)),
    # analysis
    ("analyze shift", "base missing", "analyze shift --base {ws}/nope-model --aligned {ws}/gens_a.jsonl "
     "--output {out}/s", ("nope-model",)),
    ("analyze shift", "aligned broken line", "analyze shift --base {model} --aligned {ws}/broken_gens.jsonl "
     "--output {out}/s", ("broken_gens.jsonl:2: not valid JSON",)),
    ("analyze shift", "aligned of another kind", "analyze shift --base {model} --aligned {ws}/judgments.jsonl "
     "--output {out}/s", ("judgments.jsonl:1",)),
    ("analyze retention", "aligned missing", "analyze retention --base {model} --aligned {ws}/nope-model "
     "--output {out}/r", ("nope-model",)),
    ("analyze retention", "output under a file", "analyze retention --base {model} --aligned {model} "
     "--output {ws}/a-file/r.json", ("a-file is a file",)),
    ("analyze retention", "texts missing", "analyze retention --base {model} --aligned {model} "
     "--texts {ws}/nope.txt --output {out}/r", ("nope.txt: file not found",)),
    ("ablate", "recipe missing", "ablate {ws}/nope.yaml", ("nope.yaml",)),
    ("ablate", "recipe YAML syntax", "ablate {ws}/bad.yaml", ("bad.yaml",)),
    ("select", "run missing", "select {ws}/nope-run --output {out}/s", ("nope-run",)),
    ("select", "run is a file", "select {ws}/a-file --output {out}/s", ("a-file",)),
    # dialogue
    ("converse", "script missing", "converse --model {model} --script {ws}/nope.jsonl --output {out}/c.jsonl",
     ("nope.jsonl: script file not found",)),
    ("converse", "script empty", "converse --model {model} --script {ws}/empty.jsonl --output {out}/c.jsonl",
     ("empty.jsonl",)),
    ("converse", "script broken line", "converse --model {model} --script {ws}/broken_data.jsonl "
     "--output {out}/c.jsonl", ("broken_data.jsonl:2: not valid JSON",)),
    ("converse", "output folder", "converse --model {model} --script {ws}/dataset.jsonl --output {ws}/folder",
     ("folder",)),
    ("dialogue train", "epochs out of range", "dialogue train --runs {out}/runs model.name={model} train.epochs=-1", ("train.epochs",)),
    ("dialogue train", "runs under a file", "dialogue train --runs {ws}/a-file/runs model.name={model} train.epochs=1",
     ("a-file",)),
    ("dialogue eval", "models missing", "dialogue eval --models {ws}/nope-a {ws}/nope-b --judge longest "
     "--output {out}/e", ("nope-a",)),
    ("dialogue eval", "script missing", "dialogue eval --models {model} {model} --labels a b "
     "--script {ws}/nope.jsonl --judge longest --output {out}/e", ("nope.jsonl",)),
    ("dialogue eval", "output under a file", "dialogue eval --models {model} {model} --labels a b "
     "--script {ws}/dataset.jsonl --judge longest --output {ws}/a-file/e", ("a-file",)),
    ("dialogue report", "judgments missing", "dialogue report {ws}/nope.jsonl --output {out}/r",
     ("nope.jsonl: file not found",)),
    ("dialogue report", "judgments empty", "dialogue report {ws}/empty.jsonl --output {out}/r", ("empty.jsonl",)),
    ("dialogue report", "conversations broken line", "dialogue report --conversations {ws}/broken_gens.jsonl "
     "--output {out}/r", ("broken_gens.jsonl:2: not valid JSON",)),
    ("dialogue report", "output under a file", "dialogue report {ws}/judgments.jsonl --output {ws}/a-file/r",
     ("a-file",)),
    ("export", "not a checkpoint", "export {model} --output {out}/m", ("not a lima-align checkpoint",)),
    ("export", "checkpoint missing", "export {ws}/nope-ckpt --output {out}/m", ("nope-ckpt",)),
]

# Through a real process, with a timeout: these start servers if the bad input slips through.
PROCESS_ROWS = [
    ("annotate serve", "database unreachable", "annotate serve --port 0 --db " + PG_DOWN, ("127.0.0.1",)),
    ("annotate serve", "database impossible", "annotate serve --port 0 --db " + SQLITE_IMPOSSIBLE, ("study.db",)),
]


def test_every_subcommand_has_rows():
    covered = {row[0] for row in ROWS + PROCESS_ROWS}
    assert sorted(set(leaf_commands(make_parser())) - covered) == []
    assert sorted(covered - set(leaf_commands(make_parser()))) == []


def expand(argv: str, ws: Path, out: Path, request: pytest.FixtureRequest) -> list[str]:
    model = str(request.getfixturevalue("tiny_llama")) if "{model}" in argv else ""
    return [w.format(ws=ws, out=out, model=model) for w in argv.split()]


# What a failing row may leave in its own output folder: create-study opens (creates) the database before
# it reads the answer files, so an empty study database may be left.
MAY_LEAVE = {"annotate create-study": {"s.db", "s.db-wal", "s.db-shm"}}


def check(rc: int, err: str, expect: tuple[str, ...], before: dict[str, str], ws: Path, out: Path,
          may_leave: set[str] = frozenset()) -> None:
    assert "Traceback" not in err and rc == 2, err
    start = err.find("error: ")  # progress bars may come first
    assert start >= 0 and (start == 0 or err[start - 1] in "\r\n"), err
    message = err[start:]
    assert "fix: " in message, err
    for s in expect:
        assert s in err, err
    assert snapshot(ws) == before  # nothing already there was changed, nothing written among the inputs
    written = [p for p in out.rglob("*") if p.is_file() and p.name not in may_leave]
    assert written == [], written


@pytest.mark.parametrize("command,case,argv,expect", ROWS, ids=[f"{r[0]}: {r[1]}" for r in ROWS])
def test_bad_input_is_a_clear_error(command, case, argv, expect, ws, tmp_path, request, capsys, monkeypatch):
    monkeypatch.setenv("LIMA_ALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIMA_TEST_PW", "a long enough password 123")
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked for input"))
    out = tmp_path / "out"
    out.mkdir()
    argv_ = expand(argv, ws, out, request)
    before = snapshot(ws)
    capsys.readouterr()
    rc = main(argv_)
    check(rc, capsys.readouterr().err, expect, before, ws, out, MAY_LEAVE.get(command, set()))


@pytest.mark.parametrize("command,case,argv,expect", PROCESS_ROWS, ids=[f"{r[0]}: {r[1]}" for r in PROCESS_ROWS])
def test_bad_input_is_a_clear_error_in_a_process(command, case, argv, expect, ws, tmp_path, request):
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(ws)
    p = subprocess.run([sys.executable, "-m", "lima_align", *expand(argv, ws, out, request)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "LIMA_ALIGN_CACHE": str(tmp_path / "cache")})
    check(p.returncode, p.stderr, expect, before, ws, out)


def test_an_unforeseen_exception_is_one_line_and_a_log(tmp_path, capsys, monkeypatch, ws):
    monkeypatch.setenv("LIMA_ALIGN_CACHE", str(tmp_path / "cache"))

    def boom(*a, **k):
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr("lima_align.stats.summarize_files", boom)
    assert main(["stats", str(ws / "judgments.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected ZeroDivisionError: boom\n") and "Traceback" not in err
    (log,) = (tmp_path / "cache" / "logs").iterdir()
    assert str(log) in err
    text = log.read_text()
    assert "Traceback" in text and "in boom" in text and "second line" in text and "command: lima-align stats" in text

    # a broken pipe that is not standard output's (a socket, a child process) is a failure too, not a quiet end
    monkeypatch.setattr("lima_align.stats.summarize_files", lambda *a, **k: (_ for _ in ()).throw(BrokenPipeError()))
    assert main(["stats", str(ws / "judgments.jsonl")]) == 1
    assert "unexpected BrokenPipeError" in capsys.readouterr().err

    monkeypatch.setattr("lima_align.stats.summarize_files", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["stats", str(ws / "judgments.jsonl")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_command_quietly(ws, tmp_path):
    """`lima-align stats J | head -1`: the pipe's reader is gone before the first line is written."""
    p = subprocess.Popen([sys.executable, "-m", "lima_align", "stats", str(ws / "judgments.jsonl"), "--n-boot", "10"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "LIMA_ALIGN_CACHE": str(tmp_path / "cache")})
    p.stdout.close()  # before the process has imported anything, let alone printed
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == ""
    assert not (tmp_path / "cache" / "logs").exists()


def test_a_half_written_last_line_is_repaired_on_every_start(ws, tmp_path, tiny_llama, capsys):
    """Also when nothing is left to do, so the next stage never reads the broken line."""
    judgments = tmp_path / "j.jsonl"
    judge = ["judge", "pairwise", str(ws / "gens_a.jsonl"), str(ws / "gens_b.jsonl"), "--judge", "longest",
             "--output", str(judgments), "--cache", str(tmp_path / "c.sqlite")]
    assert main(judge) == 0
    whole = judgments.read_bytes()
    judgments.write_bytes(whole + b'{"id": "half a rec')
    assert main(judge) == 0  # every judgment is there already: nothing to do
    assert judgments.read_bytes() == whole
    assert main(["stats", str(judgments), "--n-boot", "10"]) == 0

    gens = tmp_path / "g.jsonl"
    generate = ["generate", "--model", str(tiny_llama), "--prompts", str(ws / "prompts.jsonl"), "--output",
                str(gens), "generate.max_new_tokens=2"]
    assert main(generate) == 0
    whole = gens.read_bytes()
    gens.write_bytes(whole + b'{"id": "half')
    assert main(generate) == 0
    assert gens.read_bytes() == whole
    capsys.readouterr()
    assert main(["answers", str(gens)]) == 0
