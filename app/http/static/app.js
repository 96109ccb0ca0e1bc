// The lookalike page: browse items, an item's look-alikes, search by photo. Reads the public API only.
// Every piece of item data goes into the DOM through textContent / attributes, never as HTML.
import { $, PLACEHOLDER, api, el, imageSrc, photo, price, showMessage } from "./dom.js";
import { renderGallery, wireGallery } from "./gallery.js";

// Items per page of the grid: 48, or `/?limit=N` (1..200)
const PAGE_SIZE = Math.min(200, Math.max(1, Number(new URLSearchParams(location.search).get("limit")) || 48));
const state = { cursor: null, category: "", categories: new Set(), item: null, photo: null, timer: 0, seq: 0 };

// "Your photo 2 ↔ its photo 3": the query's photo that matched, next to the label of the pair.
function matchLine(matched, query) {
  const theirs = "its photo " + (matched.photo + 1);
  return el("span", { class: "match" }, [
    photo(query.src(matched.query_photo), query.label(matched.query_photo), "query-photo"),
    el("span", { text: query.label(matched.query_photo) + " ↔ " + theirs }),
  ]);
}

// One result element (grid card or look-alike): a link to the item's own address. A look-alike
// (`result` given) shows the photo of it that matched and, with `query`, the query's photo it matched.
function card(item, result, query) {
  const link = el("a", { class: "card", href: itemAddress(item.item_id), "data-item-id": item.item_id });
  const matched = result && result.matched;
  if (matched) {
    link.dataset.photo = matched.photo;
    link.dataset.queryPhoto = matched.query_photo;
    const alt = (item.title || item.item_id) + ", photo " + (matched.photo + 1);
    link.append(
      el("span", { class: "shot" }, [
        photo(imageSrc(item.item_id, matched.photo), alt, "result-photo"),
        el("span", { class: "matched-badge", text: "matched: photo " + (matched.photo + 1) }),
      ]),
    );
  } else {
    link.append(photo(imageSrc(item.item_id), item.title, "result-photo"));
  }
  const meta = el("span", { class: "meta" }, [
    el("span", { class: "title", text: item.title || item.item_id }),
    el("span", { class: "line" }, [
      el("span", { class: "price", text: price(item.price) }),
      el("span", { class: "category", text: item.category || "" }),
    ]),
  ]);
  if (result) meta.append(el("span", { class: "score", text: "score " + result.score.toFixed(3) }));
  if (matched && query) meta.append(matchLine(matched, query));
  if (item.status === "sold") meta.append(el("span", { class: "sold", text: "sold" }));
  link.append(meta);
  link.addEventListener("click", (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    history.pushState({}, "", itemAddress(item.item_id));
    route();
  });
  return link;
}

function itemAddress(itemId) {
  return "/?item=" + encodeURIComponent(itemId);
}

// ---- browse -------------------------------------------------------------------------------------

function rememberCategories(items) {
  for (const item of items) {
    if (!item.category || state.categories.has(item.category)) continue;
    state.categories.add(item.category);
    $("browse-category").append(el("option", { value: item.category, text: item.category }));
    $("categories").append(el("option", { value: item.category }));
  }
}

async function loadItems(reset) {
  if (reset) {
    state.cursor = null;
    $("grid").replaceChildren();
  }
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  if (state.cursor) params.set("cursor", state.cursor);
  if (state.category) params.set("category", state.category);
  const seq = ++state.seq;
  try {
    const page = await api("/items?" + params);
    if (seq !== state.seq) return;
    rememberCategories(page.items);
    $("grid").append(...page.items.map((item) => card(item)));
    if (!page.items.length && reset) $("grid").append(el("p", { class: "empty", text: "No items yet." }));
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
    showMessage("");
  } catch (error) {
    showMessage("Could not list the items: " + error.message);
  }
}

// ---- filters (shared by the item view and the photo view) ------------------------------------------

function filterParams(withSeller) {
  const form = $("filters");
  const params = new URLSearchParams();
  params.set("k", form.k.value || "12");
  for (const name of ["category", "min_price", "max_price"]) {
    if (form[name].value.trim()) params.set(name, form[name].value.trim());
  }
  if (form.include_sold.checked) params.set("include_sold", "true");
  if (withSeller && form.exclude_same_seller.checked) params.set("exclude_same_seller", "true");
  return params;
}

function readFiltersFromAddress(params) {
  const form = $("filters");
  form.k.value = params.get("k") || "12";
  for (const name of ["category", "min_price", "max_price"]) form[name].value = params.get(name) || "";
  form.include_sold.checked = params.get("include_sold") === "true";
  form.exclude_same_seller.checked = params.get("exclude_same_seller") === "true";
}

function filtersChanged() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    if (state.item) {
      const params = filterParams(true);
      params.set("item", state.item);
      history.replaceState({}, "", "/?" + params); // the address shares the list, filters included
      loadSimilar();
    } else if (state.photo) {
      searchByPhoto(state.photo);
    }
  }, 200);
}

// ---- item view ------------------------------------------------------------------------------------

function showView(name) {
  $("browse-view").hidden = name !== "browse";
  $("item-view").hidden = name !== "item";
  $("photo-view").hidden = name !== "photo";
  const slot = name === "item" ? $("item-filters-slot") : name === "photo" ? $("photo-filters-slot") : null;
  if (slot) slot.append($("filters"));
  $("filters").hidden = !slot;
  $("same-seller").hidden = name !== "item"; // a photo has no seller to leave out
}

async function showItem(itemId) {
  state.item = itemId;
  state.photo = null;
  showView("item");
  $("item-title").textContent = itemId;
  renderGallery(itemId, [{ boilerplate: false }], itemId); // the cover at once, every photo once read
  $("item-data").replaceChildren();
  $("similar").replaceChildren();
  try {
    const item = await api("/items/" + encodeURIComponent(itemId));
    if (state.item !== itemId) return;
    $("item-title").textContent = item.title || item.item_id;
    renderGallery(itemId, item.photos && item.photos.length ? item.photos : [{}], item.title || item.item_id);
    const rows = [
      ["photos", item.photo_count > 1 ? String(item.photo_count) : ""],
      ["item", item.item_id],
      ["price", price(item.price)],
      ["category", item.category],
      ["seller", item.seller_id],
      ["status", item.status],
    ];
    for (const [key, value] of Object.entries(item.attributes || {})) rows.push([key, String(value)]);
    for (const [key, value] of rows) {
      if (value === undefined || value === null || value === "") continue;
      $("item-data").append(el("dt", { text: key }), el("dd", { text: value }));
    }
    document.title = (item.title || item.item_id) + " · lookalike";
  } catch (error) {
    showMessage("Could not read the item: " + error.message);
    return;
  }
  await loadSimilar();
  compareVersions();
}

async function loadSimilar() {
  const itemId = state.item;
  const seq = ++state.seq;
  try {
    const answer = await api("/similar/" + encodeURIComponent(itemId) + "?" + filterParams(true));
    if (seq !== state.seq) return;
    renderResults($("similar"), answer.results, null, itemQuery(itemId));
    showMessage("");
  } catch (error) {
    if (seq === state.seq) showMessage("Could not find look-alikes: " + error.message);
  }
}

// What a look-alike matched of the viewed item: its photo i.
function itemQuery(itemId) {
  return { src: (i) => imageSrc(itemId, i), label: (i) => "this item's photo " + (i + 1) };
}

function renderResults(container, results, otherIds, query) {
  container.replaceChildren(
    ...results.map((r) => {
      const node = card(r, r, query);
      if (otherIds && !otherIds.has(r.item_id)) {
        node.classList.add("differs");
        node.querySelector(".meta").append(el("span", { class: "badge", text: "only here" }));
      }
      return node;
    }),
  );
  if (!results.length) container.append(el("p", { class: "empty", text: "Nothing matches these filters." }));
}

// ---- search by photo --------------------------------------------------------------------------------

async function searchByPhoto(source) {
  state.photo = source;
  state.item = null;
  showView("photo");
  const preview = $("photo-preview");
  if (source instanceof Blob) {
    if (preview.dataset.blob) URL.revokeObjectURL(preview.dataset.blob);
    preview.dataset.blob = URL.createObjectURL(source);
    preview.src = preview.dataset.blob;
  } else {
    preview.src = PLACEHOLDER; // an outside URL is not loaded by the page
  }
  const params = filterParams(false);
  let options;
  if (source instanceof Blob) {
    const form = new FormData();
    form.append("image", source, source.name || "photo");
    for (const [key, value] of params) form.append(key, value);
    options = { method: "POST", body: form };
  } else {
    const body = { image_url: source };
    for (const [key, value] of params) body[key] = key === "include_sold" ? value === "true" : value;
    options = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  }
  const seq = ++state.seq;
  $("photo-results").replaceChildren(el("p", { class: "empty", text: "Searching…" }));
  try {
    const answer = await api("/similar", options);
    if (seq !== state.seq) return;
    const query = { src: () => preview.src, label: () => "your photo" };
    renderResults($("photo-results"), answer.results, null, query);
    showMessage("");
  } catch (error) {
    if (seq !== state.seq) return;
    $("photo-results").replaceChildren();
    showMessage("Search by photo failed: " + error.message);
  }
}

function firstImage(items) {
  for (const item of items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

function wireSearch() {
  const drop = $("drop");
  $("file").addEventListener("change", () => {
    if ($("file").files[0]) searchByPhoto($("file").files[0]);
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = firstImage(event.dataTransfer && event.dataTransfer.items);
    if (file) searchByPhoto(file);
    else showMessage("Drop an image file.");
  });
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.items);
    if (file) searchByPhoto(file);
  });
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    searchByPhoto($("url-input").value.trim());
  });
  $("photo-close").addEventListener("click", () => {
    history.pushState({}, "", "/");
    route();
  });
}

// ---- model versions: shown only when the service lists several (GET /models) --------------------------

const versions = { serving: null, list: [] };

async function loadModels() {
  try {
    const response = await fetch("/models");
    if (!response.ok) return; // not served: the compare selector stays hidden
    const body = await response.json();
    if (!body || !Array.isArray(body.versions) || body.versions.length < 2) return;
    versions.serving = body.serving;
    versions.list = body.versions.map((v) => (typeof v === "string" ? v : v.model_version)).filter(Boolean);
  } catch {
    return;
  }
  for (const [id, pick] of [["compare-a", versions.serving], ["compare-b", versions.list.find((v) => v !== versions.serving)]]) {
    $(id).replaceChildren(...versions.list.map((v) => el("option", { value: v, text: v, selected: v === pick })));
    $(id).addEventListener("change", compareVersions);
  }
  if (state.item) compareVersions();
}

async function compareVersions() {
  if (versions.list.length < 2 || !state.item) return;
  $("compare").hidden = false;
  const picked = [$("compare-a").value, $("compare-b").value];
  const lists = await Promise.all(
    picked.map((v) => {
      const params = filterParams(true);
      params.set("model_version", v);
      return api("/similar/" + encodeURIComponent(state.item) + "?" + params).then((a) => a.results, () => []);
    }),
  );
  const columns = lists.map((results, i) => {
    const grid = el("div", { class: "grid" });
    renderResults(grid, results, new Set(lists[1 - i].map((r) => r.item_id)), itemQuery(state.item));
    return el("div", {}, [el("h4", { text: picked[i] }), grid]);
  });
  $("compare-columns").replaceChildren(...columns);
}

// ---- start --------------------------------------------------------------------------------------------

async function showInfo() {
  try {
    const info = await api("/info");
    if (info.random_weights) {
      $("random-banner").textContent =
        "The served model (" + info.model_version + ") has random weights: these look-alikes are not meaningful.";
      $("random-banner").hidden = false;
    }
  } catch {
    // the banner is informative only
  }
}

function route() {
  const params = new URLSearchParams(location.search);
  const itemId = params.get("item");
  showMessage("");
  if (itemId) {
    readFiltersFromAddress(params);
    showItem(itemId);
    return;
  }
  state.item = null;
  state.photo = null;
  document.title = "lookalike";
  showView("browse");
  if (!$("grid").children.length) loadItems(true);
}

function start() {
  $("browse-category").addEventListener("change", () => {
    state.category = $("browse-category").value;
    loadItems(true);
  });
  $("more").addEventListener("click", () => loadItems(false));
  $("filters").addEventListener("input", filtersChanged);
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("home-link").addEventListener("click", (event) => {
    event.preventDefault();
    history.pushState({}, "", "/");
    route();
  });
  $("item-back").addEventListener("click", (event) => {
    event.preventDefault();
    history.pushState({}, "", "/");
    route();
  });
  window.addEventListener("popstate", route);
  wireSearch();
  wireGallery();
  showInfo();
  loadModels();
  route();
}

start();
