"""The review page in a real headless browser: Debian's Chromium (system-packages.txt) driven by
Playwright. A person's walk through a classification and a detection manifest: corrections by key, by
click and by dragging boxes, an accept, a reject, a reload that resumes at the first undecided record with
the decisions shown, and the output manifest that results. Screenshots for docs/labelling-review.md."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from review_fixtures import classification_manifest, detection_manifest, read_lines

from pipelines.labelling.review import start_review_server

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests may run as root in a container, where Chromium's sandbox cannot start. The rest
# keep the browser from reaching beyond 127.0.0.1 on its own (updates, sync, field trials).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000  # a 2-core machine shared with other test runs: generous waits, never a timed assertion
# docs/images/review-*.png are this test's: `UPDATE_DOCS_IMAGES=1 pytest tests/code/test_review_page.py`
# writes them there; otherwise they go to the test's folder, so that a test run leaves the checkout as it was.
DOCS_IMAGES = REPO / "docs" / "images"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make system` (installs system-packages.txt, chromium among them)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: `make venv` installs the dev extras (setup.py)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """A page at 1280x800 that may reach 127.0.0.1 only; what it tried elsewhere and every script error
    are checked when the test ends."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    outside: list[str] = []
    errors: list[str] = []

    def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1" or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.expected_errors = []  # type: ignore[attr-defined]  # what a test provokes on purpose
    yield page
    context.close()
    assert outside == [], "the page asked for something beyond 127.0.0.1 (no external assets allowed)"
    assert errors == page.expected_errors  # type: ignore[attr-defined]


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    folder = DOCS_IMAGES if os.environ.get("UPDATE_DOCS_IMAGES") else tmp_path
    page.screenshot(path=str(folder / name))
    assert (folder / name).read_bytes().startswith(b"\x89PNG")


def expect_record(page: Any, number: int, total: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#photo")).to_have_attribute("alt", re.compile(rf"^Image {number} of {total}: "))


def expect_saved(page: Any, journal: Path, decisions: int) -> None:
    """The page says "saved" and the journal (the truth) holds ``decisions`` lines."""
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_have_attribute("data-state", "saved")
    for _ in range(WAIT_MS // 50):
        if journal.exists() and len(journal.read_text().splitlines()) == decisions:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"the journal has not {decisions} decisions: {journal.read_text()}")


def test_classification_review_corrects_accepts_rejects_and_resumes(open_page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = open_page
    # pre-labels: cat dog bird cat dog
    manifest = classification_manifest(tmp_path / "cls", count=5, size=(320, 240))
    output = tmp_path / "reviewed.manifest"
    journal = Path(f"{output}.journal")
    with start_review_server(manifest, output) as server:
        page.goto(server.url)
        expect_record(page, 1, 5)
        expect(page.locator("#progress-text")).to_have_text("0 of 5 decided")
        expect(page.locator("#prelabel")).to_have_text("cat (confidence 0.30)")
        page.keyboard.press("2")  # a correction by key: dog
        expect_saved(page, journal, 1)
        expect_record(page, 2, 5)
        page.get_by_role("button", name=re.compile("bird")).click()  # a correction by click
        expect_saved(page, journal, 2)
        expect_record(page, 3, 5)
        page.keyboard.press("Enter")  # accept bird
        expect_saved(page, journal, 3)
        expect_record(page, 4, 5)
        page.get_by_label("Why reject (optional)").fill("blurred")
        page.get_by_role("button", name=re.compile("^Reject")).click()
        expect_saved(page, journal, 4)
        expect_record(page, 5, 5)
        expect(page.locator("#progress-text")).to_have_text("4 of 5 decided")
        assert page.locator("#progress-bar").evaluate("bar => [bar.value, bar.max]") == [4, 5]

        # A refusal is shown and nothing moves on; the output is untouched.
        saved = output.read_bytes()
        page.route(
            "**/api/decision",
            lambda route: route.fulfill(
                status=500, content_type="application/json", body='{"error": "disk full"}'
            ),
        )
        page.expected_errors.append(
            "Failed to load resource: the server responded with a status of 500 (Internal Server Error)"
        )
        page.keyboard.press("a")
        expect(page.locator("#error")).to_contain_text("disk full")
        expect(page.locator("#status")).to_have_attribute("data-state", "error")
        expect_record(page, 5, 5)
        page.unroute("**/api/decision")
        assert output.read_bytes() == saved

        page.reload()  # resumes at the first undecided record, the decisions shown
        expect_record(page, 5, 5)
        expect(page.locator("#progress-text")).to_have_text("4 of 5 decided")
        expect(page.locator("#decision")).to_have_text("Not decided yet")
        page.keyboard.press("ArrowLeft")
        expect_record(page, 4, 5)
        expect(page.locator("#decision")).to_have_text("Decided: rejected (blurred)")
        expect(page.get_by_label("Why reject (optional)")).to_have_value("blurred")
        page.keyboard.press("k")
        page.keyboard.press("k")
        expect_record(page, 2, 5)
        expect(page.locator("#decision")).to_have_text("Decided: corrected to bird")
        expect(page.get_by_role("button", name=re.compile("bird"))).to_have_attribute("aria-pressed", "true")
        page.keyboard.press("k")
        expect(page.locator("#decision")).to_have_text("Decided: corrected to dog")
        page.keyboard.press("j")
        expect_record(page, 2, 5)
        screenshot(page, tmp_path, "review-classification.png")
        check_layout_and_accessibility(page)

    reviewed = read_lines(output)
    inputs = read_lines(manifest)
    assert [r["source-ref"] for r in reviewed] == [inputs[i]["source-ref"] for i in (0, 1, 2)]
    metadata = [r["prelabel-adjusted-metadata"] for r in reviewed]
    summary = [
        (m["class-name"], r["prelabel-adjusted"], m["adjustment-status"], m["human-annotated"])
        for r, m in zip(reviewed, metadata, strict=True)
    ]
    assert summary == [
        ("dog", 1, "adjusted", "yes"),
        ("bird", 2, "adjusted", "yes"),
        ("bird", 2, "unadjusted", "yes"),
    ]
    assert [{k: r[k] for k in inputs[0]} for r in reviewed] == [inputs[0], inputs[1], inputs[2]]
    assert read_lines(Path(f"{output}.rejected")) == [{**inputs[3], "rejected-reason": "blurred"}]


def check_layout_and_accessibility(page: Any) -> None:
    """At 1280x800 the panel is beside the image and the actions fit the window; in a narrow window it
    goes under the image, which fits the width. Buttons are buttons, the image has alt text, focus shows."""
    accept = page.locator("#accept").bounding_box()
    frame = page.locator("#frame").bounding_box()
    panel = page.locator(".panel").bounding_box()
    assert panel["x"] >= frame["x"] + frame["width"] and accept["y"] + accept["height"] <= 800
    assert page.locator("#photo").get_attribute("alt").startswith("Image ")
    assert page.locator("[onclick], a:not([href]), div[role=button]").count() == 0
    page.locator("#next").focus()
    page.keyboard.press("Shift+Tab")  # keyboard focus: :focus-visible
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.set_viewport_size({"width": 400, "height": 800})
    page.wait_for_function(  # the panel has moved under, and the image has been fitted again
        "() => document.querySelector('.panel').getBoundingClientRect().left < 100"
        " && document.querySelector('#frame').getBoundingClientRect().right <= 400"
    )
    frame = page.locator("#frame").bounding_box()
    panel = page.locator(".panel").bounding_box()
    assert panel["y"] >= frame["y"] + frame["height"] and frame["x"] + frame["width"] <= 400
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 400
    page.set_viewport_size({"width": 1280, "height": 800})


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()


def test_detection_review_moves_resizes_draws_and_resumes(open_page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = open_page
    manifest = detection_manifest(tmp_path / "det")  # 320x240 photos
    output = tmp_path / "reviewed.manifest"
    journal = Path(f"{output}.journal")
    with start_review_server(manifest, output) as server:
        page.goto(server.url)
        expect_record(page, 1, 5)
        expect(page.locator("#prelabel")).to_have_text("1 box: cone 0.42")
        expect(page.locator("#overlay text")).to_have_text(["cone 0.42"])
        layer = page.locator("#overlay").bounding_box()
        scale = layer["width"] / 320

        def screen(x: float, y: float) -> tuple[float, float]:
            return layer["x"] + x * scale, layer["y"] + y * scale

        drag(page, screen(70, 55), screen(90, 65))  # move the cone (40,30 60x50) by (+20, +10)
        expect_saved(page, journal, 1)
        drag(page, screen(120, 90), screen(130, 100))  # its south-east corner by (+10, +10)
        expect_saved(page, journal, 2)
        page.keyboard.press("Escape")
        page.keyboard.press("2")  # the next box drawn is a car
        drag(page, screen(200, 150), screen(260, 200))  # a new box on empty space
        expect_saved(page, journal, 3)
        expect(page.locator("#overlay text")).to_have_text(["cone", "car"])
        expect(page.locator("#accept")).to_contain_text("Keep these boxes")
        page.keyboard.press("Enter")  # keeps the corrections, goes on
        expect_saved(page, journal, 4)

        expect_record(page, 2, 5)
        page.locator("#overlay rect.outline").first.click()  # select the car 0.55
        expect(page.locator("#box-list button").first).to_have_attribute("aria-pressed", "true")
        screenshot(page, tmp_path, "review-detection.png")
        page.keyboard.press("1")  # its class: cone
        expect_saved(page, journal, 5)
        page.get_by_role("button", name=re.compile("^cone 0.90")).click()  # select the other one
        page.keyboard.press("Delete")
        expect_saved(page, journal, 6)
        expect(page.locator("#box-list button")).to_have_text(["cone at 150,60 80×60"])
        page.get_by_role("button", name=re.compile("^Keep these boxes")).click()
        expect_saved(page, journal, 7)

        expect_record(page, 3, 5)
        expect(page.locator("#prelabel")).to_have_text("no box found")
        page.keyboard.press("a")  # nothing to detect: accepted as a negative
        expect_saved(page, journal, 8)
        expect_record(page, 4, 5)
        page.keyboard.press("x")
        expect_saved(page, journal, 9)
        expect_record(page, 5, 5)

        page.reload()  # resumes at the first undecided record, the decisions shown
        expect_record(page, 5, 5)
        expect(page.locator("#progress-text")).to_have_text("4 of 5 decided")
        expect(page.locator("#overlay text")).to_have_text(["cone 0.20", "car 0.61"])
        for _ in range(4):
            page.keyboard.press("ArrowLeft")
        expect_record(page, 1, 5)
        expect(page.locator("#decision")).to_have_text("Decided: corrected: 2 boxes")
        expect(page.locator("#overlay text")).to_have_text(["cone", "car"])

    first, second, negative = read_lines(output)
    boxes = [
        (a["class_id"], a["left"], a["top"], a["width"], a["height"])
        for a in first["prelabel-adjusted"]["annotations"]
    ]
    wanted = [(0, 60, 40, 70, 60), (1, 200, 150, 60, 50)]
    assert len(boxes) == 2 and all(
        b[0] == w[0] and max(abs(p - q) for p, q in zip(b[1:], w[1:], strict=True)) <= 1
        for b, w in zip(boxes, wanted, strict=True)
    ), boxes  # a mouse moves in whole screen pixels: at most a pixel of the image off
    meta = first["prelabel-adjusted-metadata"]
    assert (meta["adjustment-status"], meta["human-annotated"], meta["objects"]) == (
        "adjusted", "yes", [{"confidence": 1.0}, {"confidence": 1.0}],
    )  # fmt: skip
    assert second["prelabel-adjusted"]["annotations"] == [
        {"class_id": 0, "left": 150, "top": 60, "width": 80, "height": 60}
    ]
    assert second["prelabel-adjusted-metadata"]["adjustment-status"] == "adjusted"
    assert negative["prelabel-adjusted"]["annotations"] == []
    assert negative["prelabel-adjusted-metadata"]["adjustment-status"] == "unadjusted"
    rejected = read_lines(Path(f"{output}.rejected"))
    assert [r["source-ref"] for r in rejected] == [read_lines(manifest)[3]["source-ref"]]
    assert rejected[0]["rejected-reason"] == "rejected by the reviewer"
