"""The annotation app in a real headless browser (Debian's chromium driven by Playwright).

An annotator logs in, completes a pairwise study with the mouse and an absolute study with the keyboard;
the export holds exactly those votes. An answer carrying script payloads runs none of them and shows them
as text. A forged request from the annotator's own session, for an item given to someone else, is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lima_align.annotate import accounts, assignment, db, export, studies
from lima_align.annotate.client import free_port, start_server

CHROMIUM = Path("/usr/bin/chromium")
PW = "correct horse battery"
XSS = ("<script>window.__pwned=1;document.title='pwned'</script> "
       "<img src=x onerror=\"window.__pwned=2;document.title='pwned'\"> "
       "[click me](javascript:window.__pwned=3) <a href=\"javascript:window.__pwned=4\">or me</a>")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """Cheap argon2 parameters for the test accounts (the server reads the cost from each stored hash)."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(accounts, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def gens(path: Path, model: str, answers: list[str]) -> Path:
    with path.open("w") as f:
        for i, text in enumerate(answers):
            f.write(json.dumps({"id": f"{model}{i}", "prompt_id": f"q{i}", "model": model, "output": text,
                                "messages": [{"role": "user", "content": f"Prompt {i}: say something **useful**"}],
                                "finish_reason": "eot", "tokens": None, "decoding": {}, "created": 0}) + "\n")
    return path


@pytest.fixture
def server(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = db.connect(url)
    alice = accounts.create_user(engine, "alice", PW, "annotator")
    bob = accounts.create_user(engine, "bob", PW, "annotator")
    a = gens(tmp_path / "a.jsonl", "good", ["GOOD one", "GOOD two " + XSS, "GOOD three"])
    b = gens(tmp_path / "b.jsonl", "bad", ["weak one", "weak two", "weak three"])
    pair = studies.create_study(engine, "pair", "pairwise", overlap=1, a=a, b=b)
    absolute = studies.create_study(engine, "abs", "absolute", overlap=1, a=b)
    for sid in (pair, absolute):
        studies.add_member(engine, sid, alice)
        studies.add_member(engine, sid, bob)
    port = free_port()
    proc = start_server(url, port, log=tmp_path / "server.log")
    yield {"base": f"http://127.0.0.1:{port}", "engine": engine, "pair": pair, "abs": absolute, "bob": bob,
           "tmp": tmp_path}
    proc.kill()
    proc.wait()


def test_annotator_completes_studies_in_a_browser(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, engine, tmp = server["base"], server["engine"], server["tmp"]
    # bob holds the first absolute item, so alice's forged vote for it below targets someone else's item
    bobs = assignment.next_item(engine, studies.get_study(db.read(engine), sid=server["abs"]), server["bob"])["id"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/s/{server['pair']}")
        assert page.url.endswith("/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PW)
        page.click("#login")
        page.wait_for_url(f"{base}/")

        # pairwise, with the mouse: always the GOOD answer, wherever it is shown
        page.goto(f"{base}/s/{server['pair']}")
        clicked, saw_payload = [], False
        for _ in range(3):
            shown_a = page.inner_text("#answer-a")
            prompt = page.inner_text(".prompt")
            if "GOOD two" in shown_a + page.inner_text("#answer-b"):
                saw_payload = True
                xss_box = "#answer-a" if "GOOD two" in shown_a else "#answer-b"
                assert "<script>window.__pwned=1" in page.inner_text(xss_box)  # shown as text
                for text in ("click me", "or me"):
                    if page.locator(f"{xss_box} a", has_text=text).count():
                        page.locator(f"{xss_box} a", has_text=text).click()
                assert page.evaluate("window.__pwned") is None
                assert page.title() == "pair"
                assert page.locator(f"{xss_box} img, {xss_box} script").count() == 0
            choice = "A" if "GOOD" in shown_a else "B"
            clicked.append((prompt, choice))
            page.click(f"#choice-{choice}")
            page.wait_for_load_state()
        assert saw_payload and "Nothing left" in page.inner_text("main")

        # absolute, with the keyboard: 1 = fail, 2 = pass, 3 = excellent
        page.goto(f"{base}/s/{server['abs']}")
        keys = {}
        for key in ("3", "1"):
            answer = page.inner_text("#answer .md")
            keys[answer] = {"1": "fail", "2": "pass", "3": "excellent"}[key]
            with page.expect_navigation():
                page.keyboard.press(key)
        assert "Nothing left" in page.inner_text("main")

        # forged: alice's own cookies and CSRF token, bob's item
        page.goto(f"{base}/")
        token = page.get_attribute("input[name=csrf]", "value")
        r = page.request.post(f"{base}/s/{server['abs']}/vote", form={"csrf": token, "item": str(bobs),
                                                                       "choice": "pass"}, max_redirects=0)
        assert r.status == 403
        assert page.evaluate("window.__pwned") is None
        browser.close()

    export.export_study(engine, "pair", tmp / "pair.jsonl")
    pair = [json.loads(x) for x in (tmp / "pair.jsonl").read_text().splitlines()]
    assert len(pair) == 3 and all(r["verdict"] == "a" and r["judge"] == "human:alice" for r in pair)
    assert sorted(r["votes"][0]["raw"] for r in pair) == sorted(c for _, c in clicked)
    export.export_study(engine, "abs", tmp / "abs.jsonl")
    rated = {r["output"]: r["score"] for r in map(json.loads, (tmp / "abs.jsonl").read_text().splitlines())}
    assert rated == keys  # exactly the two answers alice rated, nothing of bob's
