// The browse page: labels with counts, one label's exemplars a page at a time, and adding images.
// A page of 100: a screenful of cards; ServiceSettings.max_list is at least this (app.py BROWSE_PAGE).
const PAGE_SIZE = 100;
let current = null;  // the label shown
let offset = 0;      // where its page shown starts, in the label's order (oldest first)
let asked = 0;       // counts the pages asked for: an answer to an older ask is dropped

async function loadLabels() {
  let stats;
  try { stats = await api("/stats"); } catch (e) { say(e.message, true); return; }
  const encoder = stats.encoder ? `encoder ${stats.encoder}` : `no encoder: precomputed ${stats.dim}-d vectors`;
  document.getElementById("summary").textContent = `(${stats.items} items in ${stats.class_count} labels, ${encoder})`;
  document.getElementById("add").hidden = !stats.encoder;  // a memory of vectors takes no images
  if (!stats.encoder) noThumbnails();
  document.getElementById("add-vectors").hidden = Boolean(stats.encoder);
  // an empty memory: say where items come from, rather than only "0 items in 0 labels"
  document.getElementById("empty").hidden = stats.items > 0;
  document.getElementById("empty-images").hidden = !stats.encoder;
  document.getElementById("empty-vectors").hidden = Boolean(stats.encoder);
  const labels = document.getElementById("labels");
  labels.replaceChildren(...Object.entries(stats.classes).map(([label, count]) =>
    el("button", { type: "button", class: label === current ? "here" : "", "data-label": label,
                   onclick: () => showLabel(label) }, bidi(label), ` · ${count}`)));
  document.getElementById("known-labels").replaceChildren(
    ...Object.keys(stats.classes).map((label) => el("option", { value: label })));
}

// Shows `label` from `start`: 0 for its first page, Infinity for its last (where added
// items land). A page that went empty (its last items deleted or relabelled) gives way to
// the last page left, so an edit keeps the user where they were, or one page back.
async function showLabel(label, start = 0) {
  const ask = ++asked;
  let page;
  try { page = await fetchPage(label, start); } catch (e) { say(e.message, true); return; }
  if (ask !== asked) return;  // a later click (another label, another page) is on its way
  current = label;
  offset = page.offset;
  document.getElementById("items").hidden = false;
  document.getElementById("items-title").replaceChildren(
    "“", bidi(label), `”: ${page.total} item${page.total === 1 ? "" : "s"}`);
  document.getElementById("grid").replaceChildren(...page.items.map(itemCard));
  const n = page.items.length;
  const range = n > 1 ? `items ${page.offset + 1}–${page.offset + n} of ${page.total}`
    : n ? `item ${page.offset + 1} of ${page.total}` : "no items";
  document.getElementById("pager").replaceChildren(...pager(page, range));
  // the second pager saves a scroll back up after a full page; one page needs none
  document.getElementById("pager-end").replaceChildren(...(page.total > PAGE_SIZE ? pager(page, range) : []));
  loadLabels();
}

// Where the last page of `total` items starts (0 when there are none).
const lastPage = (total) => Math.max(0, Math.ceil(total / PAGE_SIZE) - 1) * PAGE_SIZE;

async function fetchPage(label, start) {
  const at = (from) => api(`/items?label=${encodeURIComponent(label)}&offset=${from}&limit=${PAGE_SIZE}`);
  let page = await at(Number.isFinite(start) ? start : 0);
  const last = lastPage(page.total);
  if (page.offset > last || (!Number.isFinite(start) && page.offset < last)) page = await at(last);
  return page;
}

function pager(page, range) {
  const last = lastPage(page.total);
  const go = (name, text, to, off) => el("button", {
    type: "button", "data-go": name, ...(off ? { disabled: "" } : {}),
    onclick: async () => {
      await showLabel(current, to);
      document.getElementById("items").scrollIntoView();  // from the lower pager: to the page's top
    } }, text);
  const first = page.offset === 0, end = page.offset >= last;
  if (first && end) return [el("span", { class: "range" }, range)];  // one page: nothing to go to
  return [go("first", "« First", 0, first), go("prev", "‹ Previous", Math.max(0, page.offset - PAGE_SIZE), first),
          el("span", { class: "range" }, range),
          go("next", "Next ›", page.offset + PAGE_SIZE, end), go("last", "Last »", last, end)];
}

function itemCard(item) {
  const blocked = item.weight === 0;
  return el("div", { class: "card" + (blocked ? " blocked" : ""), "data-id": item.id },
    thumbnail(item.id),
    el("div", { class: "title" }, `#${item.id} `, bidi(item.label)),
    el("div", { class: "meta" }, `weight ${item.weight} · ${item.source}`),
    el("div", { class: "actions" },
      el("button", { type: "button", ...itemAction(blocked ? "Unblock" : "Block", item.id, item.label),
                     onclick: () => change(item.id, "PATCH", { weight: blocked ? 1 : 0 },
                                                           `${blocked ? "unblocked" : "blocked"} #${item.id}`) },
        blocked ? "Unblock" : "Block"),
      el("button", { type: "button", ...itemAction("Relabel", item.id, item.label), onclick: () => {
        if (!haveToken()) return;
        const label = prompt(`New label for #${item.id}`, item.label);
        if (label && label.trim()) change(item.id, "PATCH", { label: label.trim() },
                                          `relabelled #${item.id} to “${label.trim()}”`);
      } }, "Relabel"),
      el("button", { type: "button", class: "danger", ...itemAction("Delete", item.id, item.label), onclick: () => {
        if (haveToken() && confirm(`Delete #${item.id} for good?`)) change(item.id, "DELETE", null, `deleted #${item.id}`);
      } }, "Delete")));
}

async function change(id, method, body, done) {
  if (!haveToken()) return;
  const spot = focusedCard();
  try {
    await api(`/items/${id}`, { method, headers: { "Content-Type": "application/json" },
                                body: body ? JSON.stringify(body) : undefined });
  } catch (e) { say(e.message, true); return; }
  say(done);  // in words, and over the last error if there was one
  await showLabel(current, offset);  // the same page, or the one before if this emptied it
  focusAgain(spot);
}

document.getElementById("add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const label = document.getElementById("add-label").value.trim();
  const files = document.getElementById("add-files").files;
  const refused = notImages(files);
  if (refused) { say(`${refused}: nothing added`, true); return; }
  const form = new FormData();
  form.append("label", label);
  form.append("source", document.getElementById("add-source").value.trim() || "upload");
  for (const file of files) form.append("files", file);
  say(`adding ${files.length} images…`);
  try {
    const report = await api("/items", { method: "POST", body: form });
    const skipped = report.skipped_items.map((s) => `${s.path}: ${s.reason}`).join("; ");
    say(`added ${report.added} to “${label}”` + (report.skipped ? `, skipped ${report.skipped} (${skipped})` : ""),
        report.added === 0);
    showLabel(label, Infinity);  // the last page, where the items just added are
  } catch (err) { say(err.message, true); }
});

// the hint's link to the form: to its first field, ready to type in
document.querySelector("#empty a").addEventListener("click", (e) => {
  e.preventDefault();
  document.getElementById("add-label").focus();
});

setupToken();
loadLabels();
