// The classify page: one query image (or, for a memory of precomputed vectors, one
// pasted vector), its decision, and its neighbours to edit.
let queryFile = null;
let queryVector = null;
let lastDecision = null;

function showDecision(decision, previous, why) {
  document.getElementById("decision").hidden = false;
  document.getElementById("label").textContent = decision.label ?? "no decision (every neighbour blocked)";
  document.getElementById("confidence").textContent = decision.label ? pct(decision.confidence) : "";
  const change = document.getElementById("change");
  if (previous) {
    const before = [bidi(previous.label ?? "none"), ` (${pct(previous.confidence)})`];
    const after = [bidi(decision.label ?? "none"), ` (${pct(decision.confidence)})`];
    change.replaceChildren(...(previous.label === decision.label
      ? [`${why}: still `, ...after, ", was ", ...before]
      : [`${why} the decision changed: `, ...before, " → ", ...after]));
    change.style.display = "block";
  } else {
    change.style.display = "none";
  }
  const bars = document.getElementById("bars");
  bars.replaceChildren(...Object.entries(decision.scores).map(([label, share]) =>
    el("div", { class: "bar" + (label === decision.label ? " win" : ""), "data-label": label },
      el("span", { title: label }, label),
      el("div", { class: "track" }, el("div", { class: "fill", style: `width:${(100 * share).toFixed(1)}%` })),
      el("span", { class: "pct" }, pct(share)))));
  const whatIf = document.getElementById("whatif");
  whatIf.textContent = decision.counterfactual ? `What would change this: ${decision.counterfactual.summary}` : "";
  whatIf.hidden = !decision.counterfactual;
  const grid = document.getElementById("grid");
  grid.replaceChildren(...decision.neighbors.map(neighbourCard));
  document.getElementById("neighbours").hidden = false;
}

function neighbourCard(n) {
  const blocked = n.item_weight === 0;  // its own weight: a vote's (n.weight) is 0 under the prototype vote
  const card = el("div", { class: "card" + (blocked ? " blocked" : ""), "data-id": n.id },
    thumbnail(n.id),
    el("div", { class: "title" }, `#${n.id} `, bidi(n.label)),
    el("div", { class: "meta" }, `distance ${n.distance.toFixed(3)}`),
    el("div", { class: "meta" }, `vote weight ${n.weight.toFixed(3)} · share ${pct(n.contribution)}`),
    el("div", { class: "meta" }, n.source),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "block", ...itemAction(blocked ? "Unblock" : "Block", n.id, n.label),
                     onclick: () => edit(n.id, "PATCH", { weight: blocked ? 1 : 0 }) },
        blocked ? "Unblock" : "Block"),
      el("button", { type: "button", class: "relabel", ...itemAction("Relabel", n.id, n.label),
                     onclick: () => relabel(n) }, "Relabel"),
      el("button", { type: "button", class: "delete danger", ...itemAction("Delete", n.id, n.label),
                     onclick: () => remove(n) }, "Delete")));
  return card;
}

async function classify(previous = null, why = "compared with the last run") {
  if (!queryFile && !queryVector) return;
  const form = new FormData();
  if (queryVector) form.append("vector", queryVector);
  else form.append("file", queryFile);
  const vote = document.getElementById("vote").value;
  if (vote) form.append("vote", vote);
  say("classifying…");
  try {
    const k = chosenK();
    if (k) form.append("k", k);
    const decision = await api("/classify?counterfactual=true", { method: "POST", body: form });
    showDecision(decision, previous, why);
    lastDecision = decision;
    say(`classified ${decision.path ?? "the vector"} against ${decision.neighbors.length} neighbours`);
  } catch (e) {
    // the last decision is not this query's: its cards must not be edited for it
    document.getElementById("decision").hidden = true;
    document.getElementById("neighbours").hidden = true;
    lastDecision = null;
    say(e.message, true);
  }
}

// The number box keeps "5.0" or "1e1" as typed, and the server takes a k written in digits
// only (a 422 otherwise): send the number it holds, once the browser's own checks of the box
// (a whole number, min, max) pass; null for the memory's default.
function chosenK() {
  const input = document.getElementById("k");
  if (!input.checkValidity()) {
    input.reportValidity();  // the browser's note at the box, and the focus there
    throw new Error(`neighbours (k): ${input.validationMessage}`);
  }
  return Number.isNaN(input.valueAsNumber) ? null : String(input.valueAsNumber);
}

async function edit(id, method, body) {
  if (!haveToken()) return;
  const spot = focusedCard();
  try {
    await api(`/items/${id}`, { method, headers: { "Content-Type": "application/json" },
                                body: body ? JSON.stringify(body) : undefined });
  } catch (e) { say(e.message, true); return; }
  await classify(lastDecision, "after your edit");  // same query again: show how the edit moved it
  focusAgain(spot);
}

function relabel(n) {
  const label = prompt(`New label for item #${n.id} (now "${n.label}")`, n.label);
  if (label && label.trim() && label !== n.label) edit(n.id, "PATCH", { label: label.trim() });
}

function remove(n) {
  if (confirm(`Delete item #${n.id} (${n.label}) from the memory for good?`)) edit(n.id, "DELETE");
}

function choose(file) {
  if (!file) return;
  const refused = notImages([file]);
  if (refused) { say(refused, true); return; }  // the last query and its decision stand
  queryFile = file;
  const query = document.getElementById("query");
  query.src = URL.createObjectURL(file);
  query.style.display = "block";
  document.getElementById("rerun").disabled = false;
  lastDecision = null;
  classify();
}

function chooseVector() {
  queryVector = document.getElementById("vector").value.trim();
  document.getElementById("rerun").disabled = !queryVector;
  lastDecision = null;
  classify();
}

// A memory with no encoder takes vectors, not images: offer a box to paste one.
async function askForVectorsIfNoEncoder() {
  let stats;
  try { stats = await api("/stats"); } catch (e) { return; }  // reads protected: the drop zone stays
  if (stats.encoder) return;
  noThumbnails();
  document.getElementById("drop").hidden = true;
  document.getElementById("dim").textContent = stats.dim;
  document.getElementById("vector-query").hidden = false;
}

setupToken();
askForVectorsIfNoEncoder();
document.getElementById("classify-vector").addEventListener("click", chooseVector);
const drop = document.getElementById("drop");
const fileInput = document.getElementById("file");
fileInput.addEventListener("change", (e) => choose(e.target.files[0]));
// the zone is a button, not a label for the hidden input: one that keys reach and open as a click does
drop.addEventListener("click", () => fileInput.click());
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); }
});
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files[0]); });
document.getElementById("rerun").addEventListener("click", () => classify(lastDecision));
