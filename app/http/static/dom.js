// Small DOM and API helpers shared by the page's modules. Item data goes into the DOM through textContent and
// attributes, never as HTML.

export const PLACEHOLDER = "/static/placeholder.svg";

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

export async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || { code: "http_" + response.status, message: response.statusText };
    throw new Error(error.code + ": " + error.message);
  }
  return body;
}

export function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

export function price(value) {
  return typeof value === "number" ? value.toFixed(2) : "";
}

// The cover (photo 0) of an item, or its photo n.
export function imageSrc(itemId, n) {
  const base = "/items/" + encodeURIComponent(itemId);
  return n === undefined ? base + "/image" : base + "/images/" + n;
}

export function photo(src, alt, className) {
  const img = el("img", { loading: "lazy", decoding: "async", alt: alt || "", width: 160, height: 160 });
  if (className) img.className = className;
  img.addEventListener("error", () => {
    if (!img.src.endsWith(PLACEHOLDER)) img.src = PLACEHOLDER; // no kept image, or the host failed
  });
  img.src = src;
  return img;
}

