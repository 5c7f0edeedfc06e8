// The browse page: labels with counts, one label's exemplars, and adding images.
let current = null;

async function loadLabels() {
  let stats;
  try { stats = await api("/stats"); } catch (e) { say(e.message, true); return; }
  const encoder = stats.encoder ? `encoder ${stats.encoder}` : `no encoder: precomputed ${stats.dim}-d vectors`;
  document.getElementById("summary").textContent = `(${stats.items} items in ${stats.class_count} labels, ${encoder})`;
  document.getElementById("add").hidden = !stats.encoder;  // a memory of vectors takes no images
  if (!stats.encoder) noThumbnails();
  document.getElementById("add-vectors").hidden = Boolean(stats.encoder);
  const labels = document.getElementById("labels");
  labels.replaceChildren(...Object.entries(stats.classes).map(([label, count]) =>
    el("button", { type: "button", class: label === current ? "here" : "", "data-label": label,
                   onclick: () => showLabel(label) }, `${label} · ${count}`)));
  document.getElementById("known-labels").replaceChildren(
    ...Object.keys(stats.classes).map((label) => el("option", { value: label })));
}

async function showLabel(label) {
  current = label;
  let page;
  try { page = await api(`/items?label=${encodeURIComponent(label)}&limit=200`); }
  catch (e) { say(e.message, true); return; }
  document.getElementById("items").hidden = false;
  document.getElementById("items-title").textContent = `“${label}”: ${page.total} items`;
  document.getElementById("grid").replaceChildren(...page.items.map(itemCard));
  document.getElementById("more").textContent =
    page.total > page.items.length ? `showing the first ${page.items.length}` : "";
  loadLabels();
}

function itemCard(item) {
  const blocked = item.weight === 0;
  return el("div", { class: "card" + (blocked ? " blocked" : ""), "data-id": item.id },
    thumbnail(item.id),
    el("div", { class: "title" }, `#${item.id} ${item.label}`),
    el("div", { class: "meta" }, `weight ${item.weight} · ${item.source}`),
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => change(item.id, "PATCH", { weight: blocked ? 1 : 0 }) },
        blocked ? "Unblock" : "Block"),
      el("button", { type: "button", onclick: () => {
        const label = prompt(`New label for #${item.id}`, item.label);
        if (label && label.trim()) change(item.id, "PATCH", { label: label.trim() });
      } }, "Relabel"),
      el("button", { type: "button", class: "danger", onclick: () => {
        if (confirm(`Delete #${item.id} for good?`)) change(item.id, "DELETE");
      } }, "Delete")));
}

async function change(id, method, body) {
  try {
    await api(`/items/${id}`, { method, headers: { "Content-Type": "application/json" },
                                body: body ? JSON.stringify(body) : undefined });
  } catch (e) { say(e.message, true); return; }
  showLabel(current);
}

document.getElementById("add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const label = document.getElementById("add-label").value.trim();
  const files = document.getElementById("add-files").files;
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
    showLabel(label);
  } catch (err) { say(err.message, true); }
});

setupToken();
loadLabels();
