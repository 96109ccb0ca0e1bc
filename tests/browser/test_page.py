"""The web page in a real browser: grid, item view, filters, search by photo, deep links, XSS, layout."""

from __future__ import annotations

from typing import Any

import httpx
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import CANDIDATE_VERSION, CATALOG_ITEMS, XSS_TITLE, Site

WAIT_S = 60


def wait(driver: Any, predicate: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(predicate, message=f"waiting for {what}")


def cards(driver: Any, container: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"#{container} [data-item-id]")


def decoded(driver: Any, images: list[Any]) -> bool:
    return all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images
    )


def photos_of(driver: Any, container: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"#{container} [data-item-id] img")


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
    wait(page, lambda d: len(cards(d, "grid")) == CATALOG_ITEMS + 1, "the grid")
    wait(page, lambda d: real_photos(d, "grid", CATALOG_ITEMS + 1), "every photo decoded")
    ids = [c.get_attribute("data-item-id") for c in cards(page, "grid")]
    assert sorted(ids) == sorted(i["item_id"] for i in site.items)
    first = cards(page, "grid")[0]
    item = next(i for i in site.items if i["item_id"] == ids[0])
    assert first.find_element(By.CSS_SELECTOR, ".title").text == item["title"]
    assert first.find_element(By.CSS_SELECTOR, ".category").text == item["category"]
    assert first.find_element(By.CSS_SELECTOR, ".price").text == f"{item['price']:.2f}"
    photos = photos_of(page, "grid")
    assert len(photos) == CATALOG_ITEMS + 1 and all(i.get_attribute("loading") == "lazy" for i in photos)
    banner = page.find_element(By.ID, "random-banner")
    wait(page, lambda d: banner.is_displayed(), "the random-weights banner")
    assert "random weights" in banner.text
    page.execute_script("window.scrollTo(0, 0)")
    page.save_screenshot(str(site.artifacts / "grid.png"))


def test_category_filter_on_the_grid(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == CATALOG_ITEMS + 1, "the grid")
    category = site.items[1]["category"]
    select = page.find_element(By.ID, "browse-category")
    select.find_element(By.CSS_SELECTOR, f"option[value='{category}']").click()
    expected = sorted(i["item_id"] for i in site.items if i["category"] == category)
    wait(page, lambda d: sorted(c.get_attribute("data-item-id") for c in cards(d, "grid")) == expected, "the filter")


def test_more_items_pages_with_the_cursor(page: Any, site: Site) -> None:
    page.get(site.url + "/?limit=10")
    wait(page, lambda d: len(cards(d, "grid")) == 10, "the first page")
    more = page.find_element(By.ID, "more")
    for shown in (20, CATALOG_ITEMS + 1):
        more.click()
        wait(page, lambda d, n=shown: len(cards(d, "grid")) == n, f"{shown} items")
    wait(page, lambda d: not more.is_displayed(), "no more pages")
    ids = [c.get_attribute("data-item-id") for c in cards(page, "grid")]
    assert sorted(ids) == sorted(i["item_id"] for i in site.items)


def test_clicking_an_item_shows_its_look_alikes_and_filters_apply_at_once(page: Any, site: Site) -> None:
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == CATALOG_ITEMS + 1, "the grid")
    target = cards(page, "grid")[2]
    item_id = target.get_attribute("data-item-id")
    target.click()
    wait(page, lambda d: d.current_url.endswith(f"/?item={item_id}"), "the item's address")
    wait(page, lambda d: len(cards(d, "similar")) == 12, "k=12 look-alikes")
    wait(page, lambda d: real_photos(d, "similar", 12), "the look-alikes' photos")
    assert item_id not in [c.get_attribute("data-item-id") for c in cards(page, "similar")]
    scores = [float(e.text.split()[-1]) for e in page.find_elements(By.CSS_SELECTOR, "#similar .score")]
    assert scores == sorted(scores, reverse=True)
    wait(page, lambda d: decoded(d, [d.find_element(By.ID, "item-photo")]), "the item's photo")
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
    wait(page, lambda d: len(cards(d, "grid")) == CATALOG_ITEMS + 1, "the grid")
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
    wait(page, lambda d: len(cards(d, "grid")) == CATALOG_ITEMS + 1, "the grid")
    titles = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#grid .title")]
    assert XSS_TITLE in titles
    assert page.find_elements(By.CSS_SELECTOR, "img[src='x']") == []
    assert no_alert(page)


def test_phone_width_layout(page: Any, site: Site) -> None:
    page.set_window_size(390, 844)
    page.get(site.url + "/")
    wait(page, lambda d: len(cards(d, "grid")) == CATALOG_ITEMS + 1, "the grid")
    wait(page, lambda d: real_photos(d, "grid", 4), "the first photos")
    page.execute_script("window.scrollTo(0, 0)")
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    columns = page.execute_script(
        "return getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length"
    )
    assert 2 <= columns <= 3
    page.save_screenshot(str(site.artifacts / "phone.png"))
    open_item(page, site, site.items[3]["item_id"])
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


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
