"""The HTML report in real headless Chromium (Debian's `chromium`, driven by Python Playwright).

Loads the study page of a hand-written run folder (html_fixture.py) from disk and checks what a person would:
no console error and no request leaving the file, the table's rows, the sample count changing with each filter
and with the search, hostile text shown as text, the adapted-set browser; then saves screenshots (and the page)
in `$SFTADAPT_ARTIFACTS` or `test-artifacts/` for CI to keep.

Skipped, with the reason printed (`-rs`), when there is no Chromium or no Playwright; under CI (CI=true) their
absence is a failure instead, since `make setup` installs both there.
"""

import os
import shutil
from pathlib import Path

import html_fixture as fx
import pytest

REPO = Path(__file__).resolve().parent.parent
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("SFTADAPT_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test (make setup installs chromium and playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        _unavailable("no chromium binary (apt-get install chromium, or set SFTADAPT_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("python playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=exe, headless=True, args=FLAGS, env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")}
        )
        yield b
        b.close()


def _artifacts() -> Path:
    path = Path(os.environ.get("SFTADAPT_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_study_page_in_chromium(browser, tmp_path):
    study = fx.build(tmp_path)
    expected = fx.expected_counts(tmp_path)
    page_path = Path(study["html_path"])
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems, outside = [], []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def only_local(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(page_path.as_uri())
    count = page.locator("#sample-count")

    def shown() -> int:
        return int(count.inner_text())

    assert page.inner_text("#sample-total") == str(expected["total"])
    assert shown() == expected["total"]

    # the table: one row per arm, in order, with the Δ column
    assert page.locator("#study-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.arm)") == list(fx.ARMS)
    assert page.locator("#study-table thead th").last.inner_text().startswith("Δ mean vs base")
    assert page.locator("svg.chart").count() >= 9

    page.screenshot(path=str(_artifacts() / "report.png"))

    # a verdict filter: exactly the correct samples, and every card shown says so
    page.select_option("#f-verdict", "correct")
    assert shown() == expected["by_verdict"]["correct"] < expected["total"]
    assert set(page.locator("#sample-list .sample").evaluate_all("cs => cs.map(c => c.dataset.verdict)")) == {"correct"}
    page.select_option("#f-verdict", "timeout")
    assert shown() == expected["by_verdict"].get("timeout", 0)
    page.select_option("#f-verdict", "*")

    # an arm filter, then a benchmark filter on top of it
    page.select_option("#f-run", label="DR+SFT")
    assert shown() == expected["by_arm"]["dr_sft"]
    page.select_option("#f-bench", "synthetic_ood")
    assert shown() == fx.LIMIT * fx.N
    page.select_option("#f-run", "*")
    page.select_option("#f-bench", "*")
    assert shown() == expected["total"]

    # search: a problem id, then words that only the joined problem text holds
    first_id = "syn-test-k13-s1234-00003"
    page.fill("#f-search", first_id)
    assert shown() == len(fx.ARMS) * fx.N
    from sftadapt.data.sources import load_benchmark

    target = load_benchmark("synthetic_ood", fx.LIMIT)[2]
    words = target.problem[:40].lower()
    texts = [p.problem.lower() for b in fx.BENCHMARKS for p in load_benchmark(b, fx.LIMIT)]
    page.fill("#f-search", words)
    assert shown() == sum(words in t for t in texts) * len(fx.ARMS) * fx.N > 0
    card = page.locator("#sample-list .sample").first
    assert card.locator(".f-problem pre").inner_text() == target.problem
    assert card.locator(".f-gold span").last.inner_text() == target.answer

    # hostile text: found by search, shown literally, nothing executed or injected
    page.fill("#f-search", "onerror")
    assert shown() == 1
    assert fx.HOSTILE.split("\u2028")[0] in page.locator("#sample-list pre").nth(1).inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2
    page.fill("#f-search", "")
    assert shown() == expected["total"]

    # paging: 50 cards, then 50 more
    assert page.locator("#sample-list .sample").count() == 50
    page.click("#sample-more")
    assert page.locator("#sample-list .sample").count() == 100

    # the adapted-set browser
    assert page.inner_text("#adapted-total") == "12"
    page.select_option("#a-set", "rewrite")
    assert page.inner_text("#adapted-count") == "6"
    page.select_option("#a-origin", "self")
    assert page.inner_text("#adapted-count") == "2"
    row = page.locator("#adapted-list .adapted-row").first
    row.locator("details").evaluate("d => d.open = true")
    assert row.locator(".attempts tr").count() == 3  # header + its 2 attempts
    assert "verdict" in row.locator(".attempts tr").first.inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"

    page.select_option("#a-origin", "*")
    page.select_option("#f-run", label="DR+SFT")
    page.select_option("#f-verdict", "wrong")
    page.evaluate("document.getElementById('samples').scrollIntoView()")
    page.screenshot(path=str(_artifacts() / "report-samples.png"))  # the viewport: filters and the first cards
    shutil.copy(page_path, _artifacts() / "study.html")
    page.close()
    assert outside == [], f"the page asked the network for {outside}"
    assert problems == [], problems
