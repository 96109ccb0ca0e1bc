// The item's photos: a scroll-snap gallery (swipe on a phone), buttons and thumbnails.
import { $, el, imageSrc, photo } from "./dom.js";

export function renderGallery(itemId, photos, title) {
  const count = photos.length;
  const slides = photos.map((p, n) => {
    const alt = count > 1 ? title + ", photo " + (n + 1) + " of " + count : title;
    const img = photo(imageSrc(itemId, n), alt, "gallery-photo");
    img.loading = "eager"; // a few photos at most (MAX_PHOTOS), and a swipe must not wait for one
    const slide = el("li", { class: "gallery-slide", "data-photo": n }, [img]);
    if (p.boilerplate) {
      slide.classList.add("boilerplate");
      slide.append(el("span", { class: "not-ranked", text: "not used to rank", title: "on many listings" }));
    }
    return slide;
  });
  $("gallery-track").replaceChildren(...slides);
  $("gallery-track").scrollLeft = 0;
  const thumbs = photos.map((p, n) => {
    const button = el("button", { type: "button", class: "thumb", "data-photo": n }, [
      photo(imageSrc(itemId, n), "", ""),
    ]);
    button.setAttribute("aria-label", "photo " + (n + 1) + (p.boilerplate ? ", not used to rank" : ""));
    if (p.boilerplate) button.classList.add("boilerplate");
    button.addEventListener("click", () => showPhoto(n));
    return button;
  });
  $("gallery-thumbs").replaceChildren(...thumbs);
  $("gallery-thumbs").hidden = count < 2;
  $("gallery").classList.toggle("single", count < 2);
  updateGallery();
}

function currentPhoto() {
  const track = $("gallery-track");
  return track.clientWidth ? Math.round(track.scrollLeft / track.clientWidth) : 0;
}

function showPhoto(n) {
  const track = $("gallery-track");
  const last = track.children.length - 1;
  track.scrollTo({ left: Math.max(0, Math.min(n, last)) * track.clientWidth, behavior: "smooth" });
}

function updateGallery() {
  const count = $("gallery-track").children.length;
  const n = Math.min(currentPhoto(), count - 1);
  $("gallery-counter").textContent = count > 1 ? n + 1 + " / " + count : "";
  $("gallery-prev").disabled = n <= 0;
  $("gallery-next").disabled = n >= count - 1;
  for (const thumb of $("gallery-thumbs").children) {
    if (Number(thumb.dataset.photo) === n) thumb.setAttribute("aria-current", "true");
    else thumb.removeAttribute("aria-current");
  }
}

export function wireGallery() {
  $("gallery-prev").addEventListener("click", () => showPhoto(currentPhoto() - 1));
  $("gallery-next").addEventListener("click", () => showPhoto(currentPhoto() + 1));
  $("gallery-track").addEventListener("scroll", updateGallery, { passive: true });
  window.addEventListener("resize", updateGallery);
}
