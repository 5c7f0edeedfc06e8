"""The web page in a real browser: Playwright driving Debian's Chromium, headless.

Chromium comes from `apt-get install chromium` (see .ci/run); `playwright install` is
never used. The story: a cat photo is outvoted by two coffee exemplars; the page says
removing the nearer coffee would make it cat, and blocking it from the page does.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import serving
from PIL import Image

from vismem import Memory

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-token-42"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                 reason="needs Debian's chromium: apt-get install chromium")]
skimage_data = pytest.importorskip("skimage.data")


def jpeg(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos shipped with scikit-image, as JPEG files."""
    root = tmp_path_factory.mktemp("photos")
    cat, coffee = skimage_data.chelsea(), skimage_data.coffee()
    files = {
        "cat.jpg": jpeg(cat),
        "coffee.jpg": jpeg(coffee),
        "coffee-mirrored.jpg": jpeg(coffee[:, ::-1].copy()),
        "query-cat.jpg": jpeg(cat[20:280, 30:420].copy()),  # a different crop of the cat
        "astronaut.jpg": jpeg(skimage_data.astronaut()),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, photos):
    """The service with the real EfficientNet-Lite0, on a memory of three photos."""
    memdir = tmp_path_factory.mktemp("browser") / "mem"
    memory = Memory.create(memdir, encoder="efficientnet_lite0")
    memory.add_images([photos / "cat.jpg"], label="cat", source="photos")
    memory.add_images([photos / "coffee.jpg", photos / "coffee-mirrored.jpg"], label="coffee",
                      source="photos")
    with serving(memory, TOKEN) as address:
        yield address, memory


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (a launch takes ~1 s); each test gets a page in a
    context of its own (`page`): its own storage, cookies and cache, as a fresh profile."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(server, browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # console errors include Content-Security-Policy violations; a refused edit's 4xx is expected
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "status of 40" not in msg.text else None)
    yield page
    context.close()
    assert not errors, f"errors on the page: {errors}"


def wait_for_thumbnails(page, timeout: float = 30.0) -> None:
    """Wait until every thumbnail in the grid was fetched and decoded.

    Polls with `page.evaluate` (DevTools protocol) rather than `wait_for_function`,
    whose in-page polling evaluates a string and is rightly refused by the page's CSP.
    """
    loaded = "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
    deadline = time.time() + timeout
    while not page.evaluate(loaded):
        assert time.time() < deadline, "thumbnails did not load"
        page.wait_for_timeout(50)


def shot_dir(tmp_path: Path) -> Path:
    """Screenshots go to $VISMEM_SCREENSHOTS when set (to keep them), else the test's tmp dir."""
    folder = Path(os.environ.get("VISMEM_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def full_page_shot(page, path: Path) -> None:
    """The whole page, in a window as tall as it: the status line, sticky at the window's
    foot, then sits where it belongs (under the last box) rather than over the cards."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"],
                            "height": page.evaluate("document.documentElement.scrollHeight")})
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def open_with_token(page, address: str) -> None:
    """Open a page of the service and enter the edit token, as a user does."""
    page.goto(address)
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")


def test_block_a_neighbour_and_the_decision_changes(server, page, photos, tmp_path):
    url, memory = server
    expect = pytest.importorskip("playwright.sync_api").expect
    open_with_token(page, url + "/")
    page.set_input_files("#file", str(photos / "query-cat.jpg"))

    # the first query also warms the encoder up: give it time on a busy machine
    expect(page.locator("#label")).to_have_text("coffee", timeout=60_000)  # two coffees outvote one cat
    cards = page.locator("#grid .card")
    expect(cards).to_have_count(3)
    expect(cards.first.locator(".title")).to_contain_text("cat")  # yet the nearest is the cat
    expect(page.locator(".bar")).to_have_count(2)
    wait_for_thumbnails(page)
    full_page_shot(page, shot_dir(tmp_path) / "classify-before.png")

    # the page says what would change the decision: remove one coffee (the nearest), and it is cat
    coffee_card = page.locator("#grid .card", has_text="coffee").first
    coffee_id = int(coffee_card.get_attribute("data-id"))
    expect(page.locator("#whatif")).to_contain_text(f"removing 1 item (#{coffee_id}) would make it 'cat'")
    cat_id = int(cards.first.get_attribute("data-id"))
    expect(page.locator("#whatif")).to_contain_text(f"nearest 'cat': #{cat_id}")
    coffee_card.locator("button.block").click()

    expect(page.locator("#label")).to_have_text("cat")
    expect(page.locator("#change")).to_contain_text("after your edit the decision changed: coffee")
    expect(page.locator("#change")).to_contain_text("→ cat")
    expect(page.locator(f"#grid .card[data-id='{coffee_id}']")).to_have_class("card blocked")
    expect(page.locator("#whatif")).to_contain_text("would make it 'coffee'")  # and back again
    wait_for_thumbnails(page)
    full_page_shot(page, shot_dir(tmp_path) / "classify-after-block.png")
    assert memory.items([coffee_id])[0].weight == 0.0  # the edit reached the store

    page.locator(f"#grid .card[data-id='{coffee_id}'] button.block").click()  # unblock
    expect(page.locator("#label")).to_have_text("coffee")


def test_edit_without_token_says_so(server, page, photos):
    url, memory = server
    expect = pytest.importorskip("playwright.sync_api").expect
    page.goto(url + "/")
    page.evaluate("localStorage.clear()")
    page.set_input_files("#file", str(photos / "query-cat.jpg"))
    expect(page.locator("#grid .card")).to_have_count(3)
    page.locator("#grid .card button.block").first.click()
    expect(page.locator("#status")).to_contain_text("token")
    assert all(item.weight == 1.0 for item in memory.items(memory.ids()))


def test_browse_by_label_and_add_a_new_label(server, page, photos, tmp_path):
    url, memory = server
    expect = pytest.importorskip("playwright.sync_api").expect
    open_with_token(page, url + "/browse")
    expect(page.locator("#labels button")).to_have_count(2)
    expect(page.locator("#labels button[data-label='coffee']")).to_have_text("coffee · 2")

    page.fill("#add-label", "astronaut")
    page.set_input_files("#add-files", [str(photos / "astronaut.jpg"), str(photos / "cat.jpg")])
    page.click("#add button[type=submit]")
    expect(page.locator("#status")).to_contain_text("added 1")
    expect(page.locator("#status")).to_contain_text("duplicate")  # the cat is already there
    expect(page.locator("#labels button[data-label='astronaut']")).to_have_text("astronaut · 1")
    expect(page.locator("#grid .card")).to_have_count(1)
    wait_for_thumbnails(page)
    full_page_shot(page, shot_dir(tmp_path) / "browse.png")
    assert memory.class_counts()["astronaut"] == 1

    page.locator("#labels button[data-label='cat']").click()
    expect(page.locator("#items-title")).to_contain_text("cat")
    expect(page.locator("#grid .card")).to_have_count(1)


def test_api_docs_render_offline(server, page):
    url, _ = server
    page.goto(url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)  # Swagger UI read the OpenAPI 3.1 schema
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/classify", "/items", "/stats", "/healthz"} <= {p.strip() for p in paths}


def test_pages_load_without_a_failed_request(server, page):
    """Not even the favicon: every request a page load makes succeeds (issue 10, item 11)."""
    url, _ = server
    failed: list[tuple[str, int]] = []
    page.on("response", lambda r: failed.append((r.url, r.status)) if r.status >= 400 else None)
    for path in ("/", "/browse"):
        page.goto(url + path)
        page.wait_for_load_state("networkidle")
    assert not failed
    assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200


def test_an_item_without_a_thumbnail_gets_a_tile_that_says_so(server, page):
    """An item added as a vector (or imported from an export made without --thumbnails)
    has no thumbnail: its card shows a plain tile saying so, not a broken image."""
    url, memory = server
    expect = pytest.importorskip("playwright.sync_api").expect
    vector = np.random.default_rng(3).standard_normal((1, memory.dim))
    [item] = memory.add_vectors(vector, ["vector-only"])
    try:
        page.goto(url + "/browse")
        page.locator("#labels button[data-label='vector-only']").click()
        card = page.locator(f"#grid .card[data-id='{item}']")
        expect(card.locator(".nothumb")).to_have_text("no thumbnail")
        expect(card.locator("img")).to_have_count(0)
    finally:
        memory.remove([item], purge=True)


def test_a_memory_of_vectors_is_queried_with_a_pasted_vector(tmp_path, page):
    """A memory with no encoder cannot take an image: the page says so up front and offers
    a box for a vector (JSON), whose decision it shows as for an image; /browse shows no
    image form, and says how vectors are added."""
    expect = pytest.importorskip("playwright.sync_api").expect
    vectors = np.random.default_rng(5).standard_normal((40, 8)).astype(np.float32)
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    memory.add_vectors(vectors, ["a" if i < 20 else "b" for i in range(40)])
    failed: list[str] = []  # (the page fixture lets a 4xx pass: an edit may be refused)
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    with serving(memory, TOKEN) as url:
        page.goto(url + "/")
        expect(page.locator("#vector-query")).to_be_visible()
        expect(page.locator("#drop")).to_be_hidden()
        expect(page.locator("#dim")).to_have_text("8")
        page.fill("#vector", str(vectors[25].tolist()))  # item 26 itself, labelled b
        page.click("#classify-vector")
        expect(page.locator("#label")).to_have_text("b")
        expect(page.locator("#status")).to_contain_text("classified the vector against 10 neighbours")
        expect(page.locator("#grid .card").first.locator(".nothumb")).to_have_text("no thumbnail")
        expect(page.locator("#grid .card .nothumb")).to_have_count(10)
        page.fill("#vector", "[1, 2]")
        page.click("#classify-vector")
        expect(page.locator("#status")).to_contain_text("a JSON array of 8 numbers")
        # the last decision was not this query's: it goes, and its cards with it
        expect(page.locator("#decision")).to_be_hidden()
        expect(page.locator("#neighbours")).to_be_hidden()
        assert [u for u in failed if "/classify" not in u] == []  # no thumbnail asked of a memory of vectors
        page.goto(url + "/browse")  # no image form either: it says how vectors are added
        expect(page.locator("#summary")).to_have_text("(40 items in 2 labels, no encoder: precomputed 8-d vectors)")
        expect(page.locator("#add")).to_be_hidden()
        expect(page.locator("#add-vectors")).to_contain_text("vismem add-vectors")


def test_under_the_prototype_vote_a_neighbour_is_blocked_only_when_it_is(tmp_path, page):
    """Under the prototype vote no neighbour's vote carries weight (the class prototypes
    vote): the page showed every card as blocked, with an Unblock that changed nothing,
    and no way to block one. A label of 200 letters wraps instead of widening the page."""
    expect = pytest.importorskip("playwright.sync_api").expect
    vectors = np.random.default_rng(6).standard_normal((12, 8)).astype(np.float32)
    long_label = "x" * 200
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    ids = memory.add_vectors(vectors, ["a"] * 6 + [long_label] * 6)
    memory.update_settings(vote={"vote": "prototype"})
    with serving(memory, TOKEN) as url:
        open_with_token(page, url + "/")
        page.fill("#vector", str(vectors[0].tolist()))
        page.click("#classify-vector")
        expect(page.locator("#label")).to_have_text("a")
        cards = page.locator("#grid .card")
        expect(cards).to_have_count(10)
        expect(page.locator("#grid .card.blocked")).to_have_count(0)
        expect(cards.first.locator("button.block")).to_have_text("Block")
        nearest = int(cards.first.get_attribute("data-id"))
        cards.first.locator("button.block").click()
        expect(page.locator(f"#grid .card[data-id='{nearest}']")).to_have_class("card blocked")
        assert memory.items([nearest])[0].weight == 0.0 and nearest == ids[0]
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.goto(url + "/browse")
        page.locator(f"#labels button[data-label='{long_label}']").click()
        expect(page.locator("#grid .card")).to_have_count(6)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_browse_pages_through_a_label_and_an_edit_keeps_the_page(tmp_path, page):
    """/browse showed only a label's first 200 items: item 201 on could not be seen, blocked,
    relabelled or deleted from the page. Now it pages (100 a page); an edit keeps the page,
    and deleting the last item of the last page steps back one."""
    expect = pytest.importorskip("playwright.sync_api").expect
    vectors = np.random.default_rng(7).standard_normal((268, 8)).astype(np.float32)
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    # every fourth item is another label's: a page's ids are the label's 101st to 200th, not ids 101-200
    ids = memory.add_vectors(vectors, ["few" if i % 4 == 0 else "many" for i in range(268)])
    many = [item for i, item in enumerate(ids) if i % 4]
    assert len(many) == 201
    page.on("dialog", lambda dialog: dialog.accept())  # Delete asks to confirm
    shown = "[...document.querySelectorAll('#grid .card')].map(c => Number(c.dataset.id))"
    with serving(memory, TOKEN) as url:
        open_with_token(page, url + "/browse")
        page.locator("#labels button[data-label='many']").click()
        expect(page.locator("#pager .range")).to_have_text("items 1–100 of 201")
        expect(page.locator("#pager button[data-go='prev']")).to_be_disabled()
        assert page.evaluate(shown) == many[:100]

        page.locator("#pager-end button[data-go='next']").click()  # the lower pager, under the grid
        expect(page.locator("#pager .range")).to_have_text("items 101–200 of 201")
        assert page.evaluate(shown) == many[100:200]
        target = many[150]
        page.locator(f"#grid .card[data-id='{target}'] button", has_text="Block").click()
        expect(page.locator(f"#grid .card[data-id='{target}']")).to_have_class("card blocked")
        expect(page.locator("#pager .range")).to_have_text("items 101–200 of 201")  # still page 2
        assert page.evaluate(shown) == many[100:200]
        assert memory.items([target])[0].weight == 0.0

        page.locator("#pager button[data-go='last']").click()
        expect(page.locator("#pager .range")).to_have_text("item 201 of 201")
        expect(page.locator("#pager button[data-go='next']")).to_be_disabled()
        assert page.evaluate(shown) == [many[200]]
        page.locator(f"#grid .card[data-id='{many[200]}'] button.danger").click()
        expect(page.locator("#pager .range")).to_have_text("items 101–200 of 200")  # one page back
        assert page.evaluate(shown) == many[100:200]
        expect(page.locator("#labels button[data-label='many']")).to_have_text("many · 200")

        page.locator("#pager button[data-go='prev']").click()
        expect(page.locator("#pager .range")).to_have_text("items 1–100 of 200")
        page.locator("#labels button[data-label='few']").click()  # another label starts at its first page
        expect(page.locator("#pager .range")).to_have_text("items 1–67 of 67")
        expect(page.locator("#pager-end button")).to_have_count(0)  # one page: no second pager
        expect(page.locator("#pager button")).to_have_count(0)  # and nothing to go to
        expect(page.locator("#items-title")).to_have_text("“few”: 67 items")
        assert page.evaluate(shown) == ids[::4]


@pytest.fixture
def pixels_memory(tmp_path, photos):
    """A memory on the instant `pixels` encoder: the image pages without a model's wait."""
    memory = Memory.create(tmp_path / "pixels", encoder="pixels")
    memory.add_images([photos / "cat.jpg"], label="cat", source="photos")
    memory.add_images([photos / "coffee.jpg", photos / "coffee-mirrored.jpg"], label="coffee",
                      source="photos")
    return memory


def test_an_image_is_chosen_with_the_keyboard(pixels_memory, page, photos):
    """The drop zone is a label for a hidden file input: Tab went from the token to k, and no
    key opened the file chooser. Now the zone takes focus, shows it, and Enter opens it."""
    expect = pytest.importorskip("playwright.sync_api").expect
    # Listened for from the start: `expect_file_chooser` turns the browser's interception on
    # only as the key goes out, and a press that won the race opened no chooser to see
    # (1 run in 4 here, under load)
    choosers: list = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))

    def chosen(count: int) -> bool:
        for _ in range(200):  # up to 10 s, letting Playwright's events in
            if len(choosers) >= count:
                return True
            page.wait_for_timeout(50)
        return False

    with serving(pixels_memory, TOKEN) as url:
        page.goto(url + "/")
        page.focus("#token")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "drop"
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        page.keyboard.press("Enter")
        assert chosen(1), "Enter on the drop zone opened no file chooser"
        choosers[0].set_files(str(photos / "query-cat.jpg"))
        expect(page.locator("#grid .card")).to_have_count(3)
        page.click("#drop")  # and a click, as before
        assert chosen(2), "a click on the drop zone opened no file chooser"


IN_VIEW = "(() => { const r = document.getElementById('status').getBoundingClientRect();" \
          " return r.height > 0 && r.top >= 0 && r.bottom <= innerHeight; })()"


def test_an_edit_far_down_browse_says_how_it_went_where_it_is_seen(tmp_path, page):
    """An edit's outcome went to the status line in the "Add images" box, off screen from a
    card far down the grid, so a refused edit looked like nothing happening; a success said
    nothing, and left the last error standing. Now the line stays in view and says both."""
    expect = pytest.importorskip("playwright.sync_api").expect
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    ids = memory.add_vectors(np.random.default_rng(8).standard_normal((40, 8)), ["many"] * 40)
    page.on("dialog", lambda dialog: dialog.accept())  # Delete asks to confirm
    with serving(memory, TOKEN) as url:
        page.goto(url + "/browse")
        page.locator("#labels button[data-label='many']").click()
        last = page.locator(f"#grid .card[data-id='{ids[-1]}']")
        last.scroll_into_view_if_needed()
        last.locator("button", has_text="Block").click()
        expect(page.locator("#status")).to_contain_text("token")
        assert page.evaluate(IN_VIEW)
        assert memory.items([ids[-1]])[0].weight == 1.0

        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        last.scroll_into_view_if_needed()
        last.locator("button", has_text="Block").click()
        expect(page.locator("#status")).to_have_text(f"blocked #{ids[-1]}")
        expect(page.locator("#status")).not_to_have_class("error")
        assert page.evaluate(IN_VIEW)
        page.locator(f"#grid .card[data-id='{ids[-2]}'] button.danger").click()
        expect(page.locator("#status")).to_have_text(f"deleted #{ids[-2]}")
        expect(page.locator("#grid .card")).to_have_count(39)


def test_a_phone_wide_window_shows_the_whole_header(pixels_memory, browser):
    """At 375 px the header (title, links, token box) did not wrap: the token box was off
    the right edge and the page scrolled sideways (472 px wide)."""
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    with serving(pixels_memory, TOKEN) as url:
        for path in ("/", "/browse"):
            page.goto(url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
            assert page.evaluate("document.getElementById('token').getBoundingClientRect().right") <= 375
    context.close()


# The buttons of card `n` (from the end) that something else is drawn over, at their centres.
COVERED = """(n) => [...[...document.querySelectorAll('#grid .card')].at(-n).querySelectorAll('button')]
  .filter(b => { const r = b.getBoundingClientRect();
                 return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) !== b; })
  .map(b => b.textContent)"""


@pytest.mark.parametrize("width, height", [(1100, 900), (375, 740)])
def test_the_status_line_covers_no_card_button_brought_into_view(tmp_path, browser, width, height):
    """The status line, sticky at the window's foot, covered the lowest 40-60 px of what the
    browser scrolled into view from above (a card, its buttons): scrolled to its nearest
    edge, the last card's buttons lay under the line, where a click or tap hits the line."""
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    memory.add_vectors(np.random.default_rng(9).standard_normal((40, 8)), ["many"] * 40)
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    with serving(memory, TOKEN) as url:
        page.goto(url + "/browse")
        page.locator("#labels button[data-label='many']").click()
        page.locator("#grid .card button").first.click()  # no token: the status line says so
        pytest.importorskip("playwright.sync_api").expect(page.locator("#status")).to_contain_text("token")
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        assert page.evaluate(COVERED, 1) == [], "scrolled to the bottom"
        for n in (1, 8):  # the last card, and one a row or more above it
            page.evaluate("window.scrollTo(0, 0)")
            page.evaluate("n => [...document.querySelectorAll('#grid .card')].at(-n)"
                          ".scrollIntoView({block: 'nearest'})", n)
            assert page.evaluate(COVERED, n) == [], f"card {n} from the end, scrolled into view"
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    context.close()


# Where the label's first letter and the text's last character are drawn (their left edges).
FIRST_AND_LAST = """(node) => {
  const rectOf = (index) => {
    const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    for (let text = walker.nextNode(); text; text = walker.nextNode()) {
      if (index < text.length) {
        const range = document.createRange();
        range.setStart(text, index); range.setEnd(text, index + 1);
        return range.getBoundingClientRect();
      }
      index -= text.length;
    }
  };
  const at = node.textContent.indexOf(LABEL);
  return [rectOf(at + LABEL.length - 1).left, rectOf(node.textContent.length - 1).left];
}"""


def test_a_right_to_left_label_keeps_its_count_after_it(tmp_path, page):
    """A right-to-left label ran together with the text after it: its button read
    "7 · اثنان" and the title "items 7 :”اثنان“", the count drawn left of the label.
    Each label is isolated (<bdi>) now, so what follows it stays after it."""
    expect = pytest.importorskip("playwright.sync_api").expect
    label = "اثنان"
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    memory.add_vectors(np.random.default_rng(9).standard_normal((7, 8)), [label] * 7)
    with serving(memory, TOKEN) as url:
        page.goto(url + "/browse")
        button = page.locator(f"#labels button[data-label='{label}']")
        button.click()
        expect(page.locator("#items-title")).to_have_text(f"“{label}”: 7 items")
        page.wait_for_load_state("networkidle")  # the label buttons are drawn again after a click
        for node in (button, page.locator("#items-title")):
            script = FIRST_AND_LAST.replace("LABEL", repr(label))
            # the label's first letter is its rightmost; the text after it is further right still
            label_start, last = node.evaluate(script)
            assert last > label_start, node


def test_keyboard_focus_stays_on_the_card_after_an_edit(tmp_path, page):
    """An edit draws the cards again, and the button that had the focus went with them: focus
    fell to the page, and the next Tab started again from the top. Now it comes back to the
    same button of the same card (Block → Unblock), or to the card now in its place."""
    expect = pytest.importorskip("playwright.sync_api").expect
    memory = Memory.create(tmp_path / "vectors", encoder=None, dim=8)
    ids = memory.add_vectors(np.random.default_rng(10).standard_normal((5, 8)), ["five"] * 5)
    page.on("dialog", lambda dialog: dialog.accept())
    focused = "[document.activeElement.closest('.card')?.dataset.id, document.activeElement.textContent]"
    with serving(memory, TOKEN) as url:
        open_with_token(page, url + "/browse")
        page.locator("#labels button[data-label='five']").click()
        page.locator(f"#grid .card[data-id='{ids[2]}'] button", has_text="Block").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#status")).to_have_text(f"blocked #{ids[2]}")
        expect(page.locator(f"#grid .card[data-id='{ids[2]}']")).to_have_class("card blocked")
        assert page.evaluate(focused) == [str(ids[2]), "Unblock"]
        page.keyboard.press("Enter")
        expect(page.locator("#status")).to_have_text(f"unblocked #{ids[2]}")
        expect(page.locator(f"#grid .card[data-id='{ids[2]}']")).to_have_class("card")
        assert page.evaluate(focused) == [str(ids[2]), "Block"]
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")  # to Delete
        page.keyboard.press("Enter")
        expect(page.locator("#status")).to_have_text(f"deleted #{ids[2]}")
        expect(page.locator("#grid .card")).to_have_count(4)
        assert page.evaluate(focused) == [str(ids[3]), "Delete"]  # the card now in its place


def test_each_card_button_names_its_item(pixels_memory, page, photos):
    """A screen reader heard "Block, Relabel, Delete" once a card, ten times over, none
    saying which item it edits. Each button's accessible name now names its item."""
    expect = pytest.importorskip("playwright.sync_api").expect
    [cat] = [item.id for item in pixels_memory.items(pixels_memory.ids()) if item.label == "cat"]
    with serving(pixels_memory, TOKEN) as url:
        open_with_token(page, url + "/")
        page.set_input_files("#file", str(photos / "query-cat.jpg"))
        expect(page.locator("#grid .card")).to_have_count(3)
        for verb in ("Block", "Relabel", "Delete"):
            expect(page.get_by_role("button", name=f"{verb} item #{cat} (cat)", exact=True)).to_have_count(1)
        page.get_by_role("button", name=f"Block item #{cat} (cat)", exact=True).click()
        expect(page.get_by_role("button", name=f"Unblock item #{cat} (cat)", exact=True)).to_have_count(1)

        page.goto(url + "/browse")
        page.locator("#labels button[data-label='cat']").click()
        for verb in ("Unblock", "Relabel", "Delete"):
            expect(page.get_by_role("button", name=f"{verb} item #{cat} (cat)", exact=True)).to_have_count(1)


def test_an_empty_memory_says_how_to_fill_it(tmp_path, page, photos):
    """/browse of an empty memory said only "0 items in 0 labels". It says where to add
    some: the Add images form below, or `vismem add` (`add-vectors` for a memory of
    vectors); the hint goes once the first images are in."""
    expect = pytest.importorskip("playwright.sync_api").expect
    with serving(Memory.create(tmp_path / "pixels", encoder="pixels"), TOKEN) as url:
        open_with_token(page, url + "/browse")
        hint = page.locator("#empty")
        expect(hint).to_contain_text("Add images", use_inner_text=True)
        expect(hint).to_contain_text("vismem add MEMDIR", use_inner_text=True)
        expect(hint).not_to_contain_text("add-vectors", use_inner_text=True)
        hint.get_by_role("link", name="Add images").click()
        assert page.evaluate("document.activeElement.id") == "add-label"  # the form's first field
        page.fill("#add-label", "cat")
        page.set_input_files("#add-files", str(photos / "cat.jpg"))
        page.click("#add button[type=submit]")
        expect(page.locator("#labels button[data-label='cat']")).to_have_text("cat · 1")
        expect(hint).to_be_hidden()
    with serving(Memory.create(tmp_path / "vectors", encoder=None, dim=8), TOKEN) as url:
        page.goto(url + "/browse")
        expect(page.locator("#empty")).to_contain_text("vismem add-vectors", use_inner_text=True)
        expect(page.locator("#empty")).not_to_contain_text("Add images", use_inner_text=True)


def test_a_file_that_is_not_an_image_is_refused_in_the_pages_words(pixels_memory, page, photos, tmp_path):
    """A text file chosen on a page showed the API's 415 line, written for curl users
    ("send it as image/* (curl: -F 'file=@x.png;type=image/png')"). The page says in its own
    words that the file is not an image, names it, and changes nothing."""
    expect = pytest.importorskip("playwright.sync_api").expect
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    status = page.locator("#status")
    with serving(pixels_memory, TOKEN) as url:
        open_with_token(page, url + "/")
        page.set_input_files("#file", str(photos / "query-cat.jpg"))
        expect(page.locator("#grid .card")).to_have_count(3)
        page.set_input_files("#file", str(notes))
        expect(status).to_have_text("notes.txt is not an image file (png, jpeg, webp, …)")
        expect(status).to_have_class("error")
        expect(page.locator("#grid .card")).to_have_count(3)  # the last query's decision stands
        # a photo named without its extension: the browser gives it no type, and sends it as one
        page.set_input_files("#file", {"name": "photo", "mimeType": "",
                                       "buffer": (photos / "query-cat.jpg").read_bytes()})
        expect(status).to_contain_text("photo is not an image file (png, jpeg, webp, …); a file is known "
                                       "for an image by its extension (.png, .jpg, …)")

        open_with_token(page, url + "/browse")
        page.fill("#add-label", "astronaut")
        page.set_input_files("#add-files", [str(photos / "astronaut.jpg"), str(notes)])
        page.click("#add button[type=submit]")
        expect(status).to_have_text("notes.txt is not an image file (png, jpeg, webp, …): nothing added")
        assert "astronaut" not in pixels_memory.class_counts()


def test_k_typed_as_5_point_0_is_sent_as_5(pixels_memory, page, photos):
    """The server takes a k written in digits only, and the number box let "2.0" through as
    typed: the user got a raw 422. The page sends the whole number (2), and refuses a k
    that is none (2.5) or out of range in the browser's own words, before sending."""
    expect = pytest.importorskip("playwright.sync_api").expect
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if r.status >= 400 else None)
    with serving(pixels_memory, TOKEN) as url:
        page.goto(url + "/")
        page.fill("#k", "2.0")
        page.set_input_files("#file", str(photos / "query-cat.jpg"))
        expect(page.locator("#status")).to_have_text("classified query-cat.jpg against 2 neighbours")
        expect(page.locator("#grid .card")).to_have_count(2)
        for bad in ("2.5", "0", "1001"):
            page.fill("#k", bad)
            page.click("#rerun")
            expect(page.locator("#status")).to_contain_text("neighbours (k): ")
            expect(page.locator("#status")).to_have_class("error")
            expect(page.locator("#decision")).to_be_hidden()
        assert refused == []
