// Shared by the pages: the token, API calls with JSON errors, thumbnails, status line.
const TOKEN_KEY = "vismem-token";

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

function setupToken() {
  const input = document.getElementById("token");
  input.value = token();
  input.addEventListener("change", () => localStorage.setItem(TOKEN_KEY, input.value.trim()));
}

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

// fetch + JSON; throws Error(message) with the server's one-line error.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (e) { /* no JSON body */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

// A card's picture: an image filled in when its thumbnail arrives, fetched so that the
// token is sent when reads are protected. An item without one (added as a vector, or
// imported from an export made without --thumbnails) gets a plain tile that says so, not
// a broken image; in a memory of vectors (no encoder), where no item has one, it is not
// even asked for.
let thumbnailsExist = true;

function noThumbnails() { thumbnailsExist = false; }

function thumbnail(id) {
  const tile = () => el("div", { class: "nothumb" }, "no thumbnail");
  if (!thumbnailsExist) return tile();
  const img = el("img", { alt: `item ${id}` });
  (async () => {
    try {
      const response = await fetch(`/items/${id}/thumbnail`, { headers: headers() });
      if (!response.ok) { img.replaceWith(tile()); return; }
      img.src = URL.createObjectURL(await response.blob());
    } catch (e) { img.replaceWith(tile()); }
  })();
  return img;
}

// The server takes an upload only when it is sent as image/*, as a browser sends a file whose
// name it knows for an image's; else it answers 415 in a line for curl users. The pages refuse
// such files before sending them, in their own words: null when every file is an image.
function notImages(files) {
  const bad = [...files].filter((file) => !file.type.startsWith("image/"));
  if (!bad.length) return null;
  const names = bad.map((file) => file.name).join(", ");
  // no type (sent as application/octet-stream): an image named without its extension, maybe
  const untyped = (file) => !file.type || file.type === "application/octet-stream";
  const why = bad.some(untyped) ? "; a file is known for an image by its extension (.png, .jpg, …)" : "";
  return `${names} ${bad.length > 1 ? "are not image files" : "is not an image file"} (png, jpeg, webp, …)${why}`;
}

// An edit needs the token: say so, rather than send a request bound to be refused.
function haveToken() {
  if (token()) return true;
  say("edits need the server's token: enter it at the top right", true);
  return false;
}

// An edit draws the cards again, and the button that had the focus goes with them (a
// keyboard user's next Tab would start from the top). `focusedCard` notes where it was (the
// card, the button's place in it) and `focusAgain` puts it back there, or, that card gone,
// on the same button of the card now in its place.
function focusedCard() {
  const button = document.activeElement;
  const card = button && button.closest ? button.closest("#grid .card") : null;
  if (!card) return null;
  return { id: card.dataset.id, index: [...card.parentNode.children].indexOf(card),
           button: [...card.querySelectorAll("button")].indexOf(button) };
}

function focusAgain(spot) {
  if (!spot) return;
  const cards = [...document.querySelectorAll("#grid .card")];
  const card = cards.find((c) => c.dataset.id === spot.id) || cards[Math.min(spot.index, cards.length - 1)];
  const button = card && card.querySelectorAll("button")[spot.button];
  if (button) button.focus();
}

// A card button's accessible name: "Block item #42 (cat)". Its text alone ("Block", on every
// card) told a screen reader's user nothing of which item it edits; the name starts with the
// visible word, so voice control ("click Block") still finds it.
const itemAction = (verb, id, label) => ({ "aria-label": `${verb} item #${id} (${label})` });

function say(message, isError = false) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = isError ? "error" : "";
}

// The status line is sticky at the window's foot, over the lowest cards: what the browser
// scrolls into view (a card, a focused button) stops above it, not under it. Measured, as
// a long message or a narrow window wraps it to more lines.
new ResizeObserver(([entry]) => {
  const status = entry.target;
  const covers = status.offsetHeight && status.offsetHeight + parseFloat(getComputedStyle(status).bottom) + 8;
  document.documentElement.style.scrollPaddingBottom = covers ? `${covers}px` : "";
}).observe(document.getElementById("status"));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;  // CSSOM: allowed by the page's CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const pct = (x) => (100 * x).toFixed(1) + "%";

// A label in running text, isolated: a right-to-left one would otherwise take the text after
// it into its run ("اثنان · 7" drawn as "7 · اثنان").
const bidi = (label) => el("bdi", {}, label);
