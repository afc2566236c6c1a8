"""The curation recipe: which dumps to read, LIMA's per-record rules, dedup, selection and outputs.

Loaded like every recipe: `config.load_recipe(path, overrides, cls=CurateRecipe)`. Every rule has a
name (the `se_*`, `wh_*`, `rd_*` keys in the manifest) and each is switched or tuned here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from ..config import setting
from ..errors import ProblemList
from ..recipe_loading import range_of
from .dedup import DedupConfig
from .select import SelectConfig

# Sites counted as STEM when `stackexchange.stem_sites` is not set. Names are the site part of the
# dump's name ("physics" for physics.stackexchange.com, "stackoverflow" for stackoverflow.com).
DEFAULT_STEM_SITES = [
    "ai", "arduino", "askubuntu", "astronomy", "bioinformatics", "biology", "chemistry", "codereview",
    "computergraphics", "crypto", "cs", "cseducators", "cstheory", "datascience", "dba", "dsp", "earthscience",
    "electronics", "engineering", "gamedev", "gis", "hsm", "mathematica", "matheducators", "math", "mathoverflow",
    "mechanics", "networkengineering", "or", "physics", "quant", "quantumcomputing", "raspberrypi", "reverseengineering",
    "robotics", "scicomp", "security", "serverfault", "softwareengineering", "space", "stackoverflow", "stats",
    "superuser", "tex", "unix", "webmasters",
]

# A title that points at something outside itself ("Why does this fail?") is not a self-contained prompt.
DEFAULT_TITLE_REFERENCES = ["this", "these", "those", "above", "below", "following", "attached", "pictured",
                            "shown", "here"]
DEFAULT_FIRST_PERSON = ["I", "my", "I'm", "me", "I've", "I'd", "I'll", "mine", "myself"]
DEFAULT_REFERS_TO_OTHERS = [
    "as mentioned", "as others have", "as others said", "other answers", "another answer", "answer above",
    "answer below", "above answer", "previous answer", "accepted answer", "the other answer", "stack exchange",
    "stackexchange", "this site", "this question", "edit:", "update:", "upvote", "downvote", "in the comments",
    "see comment", "op's", "the op ",
]
DEFAULT_WIKIHOW_BOILERPLATE = ["Tips", "Warnings", "Things You'll Need", "References", "Related wikiHows",
                               "Sources and Citations", "Video", "Community Q&A", "Ingredients"]


@dataclass
class TitleRules:
    require_question_mark: bool = setting(True, "the title must end with '?'")
    min_chars: int = setting(15, "shortest accepted title", at_least=0)
    max_chars: int = setting(150, "longest accepted title", at_least=0)
    references: list[str] = setting(DEFAULT_TITLE_REFERENCES, "words (matched as whole words, any case) that make a "
                                    "title point outside itself, so it is not self-contained")


@dataclass
class StackExchangeConfig:
    paths: list[str] = setting([], "Posts.xml files, site .7z archives, or folders of them (one site per archive "
                               "or subfolder, e.g. cooking.stackexchange.com.7z)")
    stem_sites: list[str] = setting(DEFAULT_STEM_SITES, "sites tagged domain 'stem'; every other site is 'other'")
    top_questions_per_site: int = setting(1000, "keep the N highest-scoring self-contained questions of each site "
                                          "(bounds memory too)", above=0)
    title: TitleRules = field(default_factory=TitleRules, metadata={"help": "rule se_title_not_self_contained"})
    min_answer_score: int = setting(10, "the top answer must score at least this (LIMA: 10)")
    min_answer_chars: int = setting(1200, "shortest answer, in characters of cleaned Markdown (LIMA: 1,200)",
                                    at_least=0)
    max_answer_chars: int = setting(4096, "longest answer (LIMA: 4,096)", at_least=0)
    first_person_words: list[str] = setting(DEFAULT_FIRST_PERSON, "answers using any of these words are dropped "
                                            "(outside code); [] disables the rule")
    refers_to_others: list[str] = setting(DEFAULT_REFERS_TO_OTHERS, "answers containing any of these phrases "
                                          "(as whole words, any case, outside code) are dropped; [] disables the rule")
    edit_notes: bool = setting(True, "rule se_refers_to_other_answers also drops edit and update notes written bold "
                               "or as headings ('**Edit**:', '**EDIT**', '## Update')")
    removed_image_rule: bool = setting(True, "rule se_refers_to_removed_image: drop records whose prompt or answer "
                                       "points at an image that was removed ('like this:', 'see the screenshot')")
    strikethrough: Literal["drop", "mark"] = setting("drop", "struck-out text (<s>, <del>, <strike>): dropped with "
                                                     "its text, or kept as ~~text~~")
    include_meta: bool = setting(False, "mine meta sites too (meta.stackexchange.com, <site>.meta.stackexchange.com); "
                                 "left out by default, they are about the site, not its subject")
    prompt_from: Literal["random", "title", "body"] = setting(
        "random", "prompt text: the title, the question body, or either at random (LIMA; stable per record)")
    license: str = setting("auto", "licence in each record: 'auto' = per post, the row's ContentLicense, else from "
                           "its date (CC BY-SA 2.5 before 2011-04-08, 3.0 before 2018-05-02, then 4.0); any other "
                           "value is written into every record")


@dataclass
class WikiHowConfig:
    paths: list[str] = setting([], "wikiHow dumps: CSV or JSONL with title, headline/summary and text/body "
                               "(category optional)")
    min_chars: int = setting(500, "shortest response kept (rule wh_too_short)", at_least=0)
    max_chars: int = setting(8000, "longest response kept (rule wh_too_long)", at_least=0)
    boilerplate_sections: list[str] = setting(DEFAULT_WIKIHOW_BOILERPLATE, "section headings pruned with their content")
    license: str = setting("CC BY-NC-SA 3.0", "licence written into every record")


@dataclass
class RedditConfig:
    paths: list[str] = setting([], "Pushshift NDJSON files (.zst too) of submissions, comments, or both")
    answer_subreddits: list[str] = setting(["WritingPrompts"], "subreddits whose submissions become training pairs "
                                           "(prompt = title without its [tag], response = top comment)")
    eval_subreddits: list[str] = setting(["AskReddit"], "subreddits whose self-contained titles become evaluation "
                                         "prompts (eval_prompts.jsonl)")
    top_submissions_per_subreddit: int = setting(1000, "keep the N highest-scoring submissions of each subreddit",
                                                 above=0)
    skip_tags: list[str] = setting(["OT", "MP", "META"], "title tags of off-topic / meta posts (rule rd_meta_post)")
    min_comment_score: int = setting(10, "the top comment must score at least this")
    min_chars: int = setting(500, "shortest response kept", at_least=0)
    max_chars: int = setting(4096, "longest response kept", at_least=0)
    title: TitleRules = field(default_factory=TitleRules, metadata={"help": "self-contained rule for eval prompts"})
    license: str = setting("Reddit user content (Pushshift dump); check the terms before redistributing",
                           "licence written into every record")


@dataclass
class DatasetsConfig:
    paths: list[str] = setting([], "datasets in any supported format (ours, LIMA, Alpaca, ShareGPT) or seed splits")
    hub: list[str] = setting([], "Hugging Face dataset names (needs the hub; rows in a supported format)")
    hub_split: str = setting("train", "split read from each hub dataset")
    license: str = setting("as in the source dataset", "licence written into records that carry none")


@dataclass
class CurateRecipe:
    output_dir: str = setting("runs/curate", "folder for candidates.jsonl, selected.jsonl, manifest.json, report.html")
    seed: int = setting(0, "seed for every random choice (prompt from title or body, selection)", at_least=0)
    on_error: Literal["skip", "fail"] = setting("skip", "bad rows: skip and record them in the manifest, or stop")
    max_bad_fraction: float = setting(0.01, "with on_error=skip, stop anyway when more than this share of a file's "
                                      "rows is bad", at_least=0, at_most=1)
    max_bad_rows: int = setting(10, "this many bad rows per file are always tolerated (small files)", at_least=0)
    stackexchange: StackExchangeConfig = field(default_factory=StackExchangeConfig,
                                               metadata={"help": "StackExchange dumps"})
    wikihow: WikiHowConfig = field(default_factory=WikiHowConfig, metadata={"help": "wikiHow dumps"})
    reddit: RedditConfig = field(default_factory=RedditConfig, metadata={"help": "Reddit Pushshift dumps"})
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig, metadata={"help": "existing datasets"})
    dedup: DedupConfig = field(default_factory=DedupConfig, metadata={"help": "exact and near-duplicate removal"})
    select: SelectConfig = field(default_factory=SelectConfig, metadata={"help": "selection strategy"})
    report: bool = setting(True, "write report.html and charts")

    def check(self, problems: ProblemList) -> None:
        se, wh, rd = self.stackexchange, self.wikihow, self.reddit
        if not (se.paths or wh.paths or rd.paths or self.datasets.paths or self.datasets.hub):
            problems.add("stackexchange.paths", "no input: every source's paths are empty",
                         "set stackexchange.paths, wikihow.paths, reddit.paths or datasets.paths")
        # Loading checks each number against its range; a recipe built in Python skips loading, and
        # comparisons like `v <= 0` let NaN through, so the ranges are checked here again (NaN fails).
        for prefix, section in (("", self), ("stackexchange.", se), ("stackexchange.title.", se.title),
                                ("wikihow.", wh), ("reddit.", rd), ("reddit.title.", rd.title)):
            _check_ranges(section, prefix, problems)
        for where, lo, hi in (("stackexchange.min_answer_chars", se.min_answer_chars, se.max_answer_chars),
                              ("wikihow.min_chars", wh.min_chars, wh.max_chars),
                              ("reddit.min_chars", rd.min_chars, rd.max_chars),
                              ("stackexchange.title.min_chars", se.title.min_chars, se.title.max_chars)):
            if lo > hi:
                problems.add(where, f"({lo}) is above the maximum ({hi})", "swap the two values")
        self.dedup.check(problems, "dedup.")
        self.select.check(problems, "select.")


def _check_ranges(section: object, prefix: str, problems: ProblemList) -> None:
    """The section's own numbers (not its subsections) outside their declared range, NaN included."""
    for f in dataclasses.fields(section):
        v, rng = getattr(section, f.name), range_of(f)
        if rng is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and v not in rng:
            problems.add(f"{prefix}{f.name}", f"must be {rng}, got {v}", f"use a value {rng}")
