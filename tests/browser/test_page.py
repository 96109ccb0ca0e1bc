"""The web page in a real browser: grid, item view, filters, search by photo, deep links, XSS, layout."""

from __future__ import annotations

from typing import Any

import httpx
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import CANDIDATE_VERSION, CHARTS, COPY, MULTI, XSS_TITLE, Site

WAIT_S = 60
# no horizontal page scroll: clientWidth leaves out a classic (desktop) scrollbar, innerWidth counts it
NO_OVERFLOW = "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def wait(driver: Any, predicate: Any, what: str) -> Any:
    # a list drawn again while a check reads it (e.g. the comparison, once per answer) is read again
    waiting = WebDriverWait(driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(predicate, message=f"waiting for {what}")


def cards(driver: Any, container: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"#{container} [data-item-id]")


def decoded(driver: Any, images: list[Any]) -> bool:
    return all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images
    )


def photos_of(driver: Any, container: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"#{container} [data-item-id] img.result-photo")


def real_photos(driver: Any, container: str, first: int) -> bool:
    """The first `first` cards show their real photo, decoded (not the placeholder)."""
    images = photos_of(driver, container)[:first]
    for img in images:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    return (
        len(images) == first
        and decoded(driver, images)
        and not any("placeholder" in i.get_attribute("src") for i in images)
    )


def open_item(driver: Any, site: Site, item_id: str) -> None:
    driver.get(f"{site.url}/?item={item_id}")
    wait(driver, lambda d: len(cards(d, "similar")) > 0, f"look-alikes of {item_id}")


def no_alert(driver: Any) -> bool:
    try:
        _ = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_grid_shows_every_item_with_its_photo(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == len(site.items), "the grid")
    wait(page, lambda d: real_photos(d, "grid", len(site.items)), "every photo decoded")
    ids = [c.get_attribute("data-item-id") for c in cards(page, "grid")]
    assert sorted(ids) == sorted(i["item_id"] for i in site.items)
    first = cards(page, "grid")[0]
    item = next(i for i in site.items if i["item_id"] == ids[0])
    assert first.find_element(By.CSS_SELECTOR, ".title").text == item["title"]
    assert first.find_element(By.CSS_SELECTOR, ".category").text == item["category"]
    assert first.find_element(By.CSS_SELECTOR, ".price").text == f"{item['price']:.2f}"
    photos = photos_of(page, "grid")
    assert len(photos) == len(site.items) and all(i.get_attribute("loading") == "lazy" for i in photos)
    banner = page.find_element(By.ID, "random-banner")
    wait(page, lambda d: banner.is_displayed(), "the random-weights banner")
    assert "random weights" in banner.text
    page.execute_script("window.scrollTo(0, 0)")
    page.save_screenshot(str(site.artifacts / "grid.png"))


def test_category_filter_on_the_grid(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == len(site.items), "the grid")
    category = site.items[1]["category"]
    select = page.find_element(By.ID, "browse-category")
    select.find_element(By.CSS_SELECTOR, f"option[value='{category}']").click()
    expected = sorted(i["item_id"] for i in site.items if i["category"] == category)
    wait(page, lambda d: sorted(c.get_attribute("data-item-id") for c in cards(d, "grid")) == expected, "the filter")


def test_more_items_pages_with_the_cursor(page: Any, site: Site) -> None:
    page.get(site.url + "/?limit=10")
    wait(page, lambda d: len(cards(d, "grid")) == 10, "the first page")
    more = page.find_element(By.ID, "more")
    for shown in (20, len(site.items)):
        more.click()
        wait(page, lambda d, n=shown: len(cards(d, "grid")) == n, f"{shown} items")
    wait(page, lambda d: not more.is_displayed(), "no more pages")
    ids = [c.get_attribute("data-item-id") for c in cards(page, "grid")]
    assert sorted(ids) == sorted(i["item_id"] for i in site.items)


def test_clicking_an_item_shows_its_look_alikes_and_filters_apply_at_once(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == len(site.items), "the grid")
    target = cards(page, "grid")[2]
    item_id = target.get_attribute("data-item-id")
    target.click()
    wait(page, lambda d: d.current_url.endswith(f"/?item={item_id}"), "the item's address")
    wait(page, lambda d: len(cards(d, "similar")) == 12, "k=12 look-alikes")
    wait(page, lambda d: real_photos(d, "similar", 12), "the look-alikes' photos")
    assert item_id not in [c.get_attribute("data-item-id") for c in cards(page, "similar")]
    scores = [float(e.text.split()[-1]) for e in page.find_elements(By.CSS_SELECTOR, "#similar .score")]
    assert scores == sorted(scores, reverse=True)
    wait(page, lambda d: decoded(d, d.find_elements(By.CSS_SELECTOR, "#gallery-track img")), "the item's photo")
    page.execute_script("window.scrollTo(0, 0)")
    page.save_screenshot(str(site.artifacts / "item.png"))

    k = page.find_element(By.NAME, "k")
    k.clear()
    k.send_keys("5")
    wait(page, lambda d: len(cards(d, "similar")) == 5, "k=5")
    assert "k=5" in page.current_url  # the address shares the list with its filters
    category = next(i["category"] for i in site.items if i["item_id"] != item_id)
    page.find_element(By.NAME, "category").send_keys(category)
    wait(
        page,
        lambda d: (
            cards(d, "similar")
            and all(e.text == category for e in d.find_elements(By.CSS_SELECTOR, "#similar .category"))
        ),
        "the category filter",
    )
    # a limit that some of the category's other items meet and some do not, so the filtered list is never empty
    prices = sorted(i["price"] for i in site.items if i["item_id"] != item_id and i["category"] == category)
    assert len(prices) >= 2 and prices[0] < prices[-1]
    limit = prices[(len(prices) - 1) // 2]
    page.find_element(By.NAME, "max_price").send_keys(f"{limit:.2f}")

    def filtered(d: Any) -> bool:
        shown = [float(e.text) for e in d.find_elements(By.CSS_SELECTOR, "#similar .price")]
        return bool(shown) and all(p <= round(limit, 2) for p in shown)  # an empty list proves nothing

    wait(page, filtered, "the price filter")


def test_deep_link_and_back_button(page: Any, site: Site) -> None:
    first = site.items[5]["item_id"]
    page.get(site.url + "/")
    open_item(page, site, first)  # a deep link, typed or shared
    wait(page, lambda d: d.find_element(By.ID, "item-title").text == site.items[5]["title"], "the item's title")
    other = cards(page, "similar")[0].get_attribute("data-item-id")
    cards(page, "similar")[0].click()
    wait(page, lambda d: d.current_url.endswith(f"/?item={other}"), "the second item's address")
    wait(page, lambda d: other not in [c.get_attribute("data-item-id") for c in cards(d, "similar")], "its list")
    page.back()
    wait(page, lambda d: d.current_url.endswith(f"/?item={first}"), "back to the first item")
    wait(page, lambda d: d.find_element(By.ID, "item-title").text == site.items[5]["title"], "the first item again")
    page.back()
    wait(page, lambda d: d.find_element(By.ID, "browse-view").is_displayed(), "the grid after going back twice")


def test_keyboard_opens_an_item(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == len(site.items), "the grid")
    card = cards(page, "grid")[0]
    page.execute_script("arguments[0].focus()", card)
    assert page.switch_to.active_element == card
    card.send_keys(Keys.ENTER)
    wait(page, lambda d: "?item=" in d.current_url and len(cards(d, "similar")) > 0, "the item view by keyboard")


def test_photo_upload_shows_look_alikes(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    item = site.items[7]
    path = site.catalog / f"images/{item['item_id']}_0.jpg"
    page.find_element(By.ID, "file").send_keys(str(path))
    wait(page, lambda d: len(cards(d, "photo-results")) == 12, "12 look-alikes of the photo")
    wait(page, lambda d: real_photos(d, "photo-results", 12), "their photos")
    # the same photo is indexed as this item (and as the XSS copy of item 0 for item 0): it ranks first
    assert cards(page, "photo-results")[0].get_attribute("data-item-id") == item["item_id"]
    assert decoded(page, [page.find_element(By.ID, "photo-preview")])
    page.save_screenshot(str(site.artifacts / "search-by-photo.png"))
    k = page.find_element(By.NAME, "k")
    k.clear()
    k.send_keys("3")
    wait(page, lambda d: len(cards(d, "photo-results")) == 3, "the photo's list with k=3")


def test_a_title_with_markup_is_shown_as_text(page: Any, site: Site) -> None:
    open_item(page, site, "xss")
    wait(page, lambda d: d.find_element(By.ID, "item-title").text == XSS_TITLE, "the title as text")
    assert page.find_elements(By.CSS_SELECTOR, "img[src='x']") == []
    assert no_alert(page)
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == len(site.items), "the grid")
    titles = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#grid .title")]
    assert XSS_TITLE in titles
    assert page.find_elements(By.CSS_SELECTOR, "img[src='x']") == []
    assert no_alert(page)


def test_phone_width_layout(page: Any, site: Site) -> None:
    page.set_window_size(390, 844)
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == len(site.items), "the grid")
    wait(page, lambda d: real_photos(d, "grid", 4), "the first photos")
    page.execute_script("window.scrollTo(0, 0)")
    assert page.execute_script(NO_OVERFLOW)
    columns = page.execute_script(
        "return getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length"
    )
    assert 2 <= columns <= 3
    page.save_screenshot(str(site.artifacts / "phone.png"))
    open_item(page, site, site.items[3]["item_id"])
    wait(page, lambda d: len(compare_columns(d)) == 2, "the comparison (its selectors are the widest)")
    assert page.execute_script(NO_OVERFLOW)


def compare_columns(driver: Any) -> list[tuple[str, list[str], list[str]]]:
    """(version, item ids shown, item ids marked as only in this list) for each comparison column."""
    columns = []
    for column in driver.find_elements(By.CSS_SELECTOR, "#compare-columns > div"):
        shown = [c.get_attribute("data-item-id") for c in column.find_elements(By.CSS_SELECTOR, "[data-item-id]")]
        marked = [c.get_attribute("data-item-id") for c in column.find_elements(By.CSS_SELECTOR, ".differs")]
        columns.append((column.find_element(By.TAG_NAME, "h4").text, shown, marked))
    return columns


def test_two_model_versions_side_by_side_with_the_differences_marked(page: Any, site: Site) -> None:
    item_id = site.items[3]["item_id"]
    serving = httpx.get(site.url + "/models", timeout=30).json()["serving"]
    expected = {
        version: [
            r["item_id"]
            for r in httpx.get(
                f"{site.url}/similar/{item_id}", params={"k": 12, "model_version": version}, timeout=30
            ).json()["results"]
        ]
        for version in (serving, CANDIDATE_VERSION)
    }
    assert expected[serving] != expected[CANDIDATE_VERSION]  # two random models rank differently: marks exercised
    open_item(page, site, item_id)
    wait(page, lambda d: d.find_element(By.ID, "compare").is_displayed(), "the comparison")
    wait(page, lambda d: [len(c[1]) for c in compare_columns(d)] == [12, 12], "two lists of 12")
    (first, first_shown, first_marked), (second, second_shown, second_marked) = compare_columns(page)
    assert (first, second) == (serving, CANDIDATE_VERSION)
    assert (first_shown, second_shown) == (expected[serving], expected[CANDIDATE_VERSION])  # each version's ranking
    assert first_marked == [i for i in first_shown if i not in second_shown]  # marked: in this list only
    assert second_marked == [i for i in second_shown if i not in first_shown]
    page.save_screenshot(str(site.artifacts / "compare.png"))


# ---- listings with several photos -------------------------------------------------------------------------

GALLERY = """
const track = document.getElementById('gallery-track');
return {
  slides: [...track.children].map((li) => ({
    photo: li.dataset.photo,
    src: li.querySelector('img').getAttribute('src'),
    decoded: li.querySelector('img').complete && li.querySelector('img').naturalWidth > 0,
    badge: li.querySelector('.not-ranked') ? li.querySelector('.not-ranked').textContent : null,
  })),
  thumbs: document.querySelectorAll('#gallery-thumbs .thumb').length,
  counter: document.getElementById('gallery-counter').textContent,
};
"""


def gallery(driver: Any) -> dict[str, Any]:
    return driver.execute_script(GALLERY)


def shown_photo(driver: Any) -> int:
    """The index of the slide that fills the gallery's frame (-1 while between two)."""
    return driver.execute_script(
        """const track = document.getElementById('gallery-track');
        const left = track.getBoundingClientRect().left;
        const i = [...track.children].findIndex((li) => Math.abs(li.getBoundingClientRect().left - left) < 1);
        return i;"""
    )


def match_of(card: Any) -> dict[str, Any]:
    return {
        "photo": card.get_attribute("data-photo"),
        "query_photo": card.get_attribute("data-query-photo"),
        "src": card.find_element(By.CSS_SELECTOR, "img.result-photo").get_attribute("src"),
        "badge": card.find_element(By.CSS_SELECTOR, ".matched-badge").text,
        "query_src": card.find_element(By.CSS_SELECTOR, "img.query-photo").get_attribute("src"),
        "line": card.find_element(By.CSS_SELECTOR, ".match").text,
    }


def test_the_item_view_shows_every_photo_and_marks_boilerplate(page: Any, site: Site) -> None:
    item = httpx.get(f"{site.url}/items/{MULTI}", timeout=30).json()
    assert item["photo_count"] == 3
    assert [p["boilerplate"] for p in item["photos"]] == [False, False, True]  # the chart is on CHARTS too
    open_item(page, site, MULTI)
    wait(page, lambda d: len(gallery(d)["slides"]) == 3, "three photos")
    wait(page, lambda d: all(s["decoded"] for s in gallery(d)["slides"]), "every photo decoded")
    shown = gallery(page)
    assert [s["photo"] for s in shown["slides"]] == ["0", "1", "2"]
    assert [s["src"] for s in shown["slides"]] == [f"/items/{MULTI}/images/{n}" for n in range(3)]
    expected = ["not used to rank" if p["boilerplate"] else None for p in item["photos"]]
    assert [s["badge"] for s in shown["slides"]] == expected
    assert (shown["thumbs"], shown["counter"]) == (3, "1 / 3")
    assert page.find_element(By.ID, "item-title").text == "Three photos"
    assert "photos\n3" in page.find_element(By.ID, "item-data").text
    # a listing of one photo: no steps, no thumbnails
    open_item(page, site, site.items[2]["item_id"])
    wait(page, lambda d: len(gallery(d)["slides"]) == 1 and gallery(d)["counter"] == "", "one photo")
    assert not page.find_element(By.ID, "gallery-next").is_displayed()


def test_a_look_alike_shows_the_photo_that_matched_next_to_the_query_photo(page: Any, site: Site) -> None:
    answer = httpx.get(f"{site.url}/similar/{MULTI}", params={"k": 12}, timeout=30).json()["results"]
    api = {r["item_id"]: r["matched"] for r in answer}
    # the exact copy: MULTI's photo 1 is COPY's photo 2 (the chart, boilerplate, matches nothing); it comes back
    # (not necessarily first: the listing score averages every photo's best match) naming that pair
    assert COPY in api and api[COPY]["score"] > 0.999
    assert (api[COPY]["query_photo"], api[COPY]["photo"]) == (1, 2)
    assert not any(m["query_photo"] == 2 for m in api.values())
    open_item(page, site, MULTI)
    wait(page, lambda d: real_photos(d, "similar", len(answer)), "the look-alikes' matched photos")
    shown = {c.get_attribute("data-item-id"): match_of(c) for c in cards(page, "similar")}
    assert list(shown) == [r["item_id"] for r in answer]
    for item_id, matched in api.items():
        card = shown[item_id]
        assert (card["photo"], card["query_photo"]) == (str(matched["photo"]), str(matched["query_photo"]))
        assert card["src"].endswith(f"/items/{item_id}/images/{matched['photo']}")
        assert card["badge"] == f"matched: photo {matched['photo'] + 1}"
        assert card["query_src"].endswith(f"/items/{MULTI}/images/{matched['query_photo']}")
    assert shown[COPY]["line"] == "this item's photo 2 ↔ its photo 3"
    copy = page.find_element(By.CSS_SELECTOR, f"#similar [data-item-id='{COPY}']")
    assert decoded(page, copy.find_elements(By.TAG_NAME, "img"))
    everything = httpx.get(f"{site.url}/similar/{MULTI}", params={"k": 100}, timeout=30).json()["results"]
    charts = [r["matched"]["photo"] for r in everything if r["item_id"] in CHARTS]
    assert charts == [0, 0]  # their photo 1 is the chart: boilerplate, never matched
    page.set_window_size(1280, 1600)  # the gallery and the first look-alikes in one picture
    page.execute_script("document.getElementById('item-view').scrollIntoView()")
    page.save_screenshot(str(site.artifacts / "matched.png"))


def test_search_by_photo_shows_the_uploaded_photo_next_to_each_match(page: Any, site: Site, tmp_path: Any) -> None:
    from tests.browser.conftest import drawn_photo

    path = tmp_path / "b.png"
    path.write_bytes(drawn_photo(102))  # MULTI's photo 1 and COPY's photo 2
    with path.open("rb") as f:
        answer = httpx.post(f"{site.url}/similar", files={"image": f}, data={"k": "12"}, timeout=60).json()
    api = {r["item_id"]: r["matched"] for r in answer["results"]}
    assert [r["item_id"] for r in answer["results"][:2]] == sorted([MULTI, COPY])
    assert (api[MULTI]["photo"], api[COPY]["photo"]) == (1, 2)
    page.get(site.url + "/")
    page.find_element(By.ID, "file").send_keys(str(path))
    wait(page, lambda d: len(cards(d, "photo-results")) == 12, "12 look-alikes of the photo")
    preview = page.find_element(By.ID, "photo-preview").get_attribute("src")
    assert preview.startswith("blob:")
    for c in cards(page, "photo-results"):
        card, matched = match_of(c), api[c.get_attribute("data-item-id")]
        assert (card["photo"], card["query_photo"]) == (str(matched["photo"]), "0")
        assert card["src"].endswith(f"/images/{matched['photo']}")
        assert card["query_src"] == preview  # the uploaded photo, next to the photo it matched
    copy = page.find_element(By.CSS_SELECTOR, f"#photo-results [data-item-id='{COPY}']")
    assert match_of(copy)["line"] == "your photo ↔ its photo 3"


def test_the_gallery_on_a_phone(page: Any, site: Site) -> None:
    page.set_window_size(390, 844)
    open_item(page, site, MULTI)
    wait(page, lambda d: len(gallery(d)["slides"]) == 3 and all(s["decoded"] for s in gallery(d)["slides"]), "photos")
    track = page.find_element(By.ID, "gallery-track")
    assert page.execute_script("return getComputedStyle(arguments[0]).scrollSnapType", track) == "x mandatory"
    wait(page, lambda d: len(compare_columns(d)) == 2, "the whole item view")
    width = page.execute_script("return arguments[0].clientWidth", track)
    assert width > 300 and page.execute_script("return arguments[0].scrollWidth", track) == 3 * width
    assert page.execute_script(NO_OVERFLOW)
    assert (shown_photo(page), gallery(page)["counter"]) == (0, "1 / 3")
    assert not page.find_element(By.ID, "gallery-prev").is_enabled()
    page.find_element(By.ID, "gallery-next").click()
    wait(page, lambda d: shown_photo(d) == 1 and gallery(d)["counter"] == "2 / 3", "photo 2 after next")
    page.execute_script("arguments[0].scrollTo({left: 2 * arguments[0].clientWidth})", track)  # what a swipe does
    wait(page, lambda d: shown_photo(d) == 2 and gallery(d)["counter"] == "3 / 3", "photo 3 after a swipe")
    assert not page.find_element(By.ID, "gallery-next").is_enabled()
    badge = page.find_element(By.CSS_SELECTOR, "#gallery-track [data-photo='2'] .not-ranked")
    assert badge.is_displayed() and badge.text == "not used to rank"
    page.execute_script("document.getElementById('item-view').scrollIntoView()")
    page.save_screenshot(str(site.artifacts / "phone-gallery.png"))
    page.find_element(By.CSS_SELECTOR, "#gallery-thumbs [data-photo='0']").click()
    wait(page, lambda d: shown_photo(d) == 0 and gallery(d)["counter"] == "1 / 3", "photo 1 from its thumbnail")
    assert page.execute_script(NO_OVERFLOW)
