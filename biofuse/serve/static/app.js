// The analyst page: plain DOM and fetch against /api; the token stays in this tab only.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("biofuse-token") || "";

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (response.status === 401) {
    signOut("the token was refused");
    throw new Error("unauthorised");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.detail || `${response.status} ${response.statusText}`);
  }
  return response;
}

const json = async (path) => (await api(path)).json();
const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const signed = (x) => (x >= 0 ? "+" : "") + fmt(x, 1);

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function signOut(reason) {
  sessionStorage.removeItem("biofuse-token");
  token = "";
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
}

async function signIn(event) {
  event.preventDefault();
  token = $("token").value.trim();
  try {
    const gallery = await json("/api/gallery");
    sessionStorage.setItem("biofuse-token", token);
    $("login").hidden = true;
    $("app").hidden = false;
    $("gallery").textContent = gallery.version
      ? `gallery v${gallery.version}: ${JSON.stringify(gallery.template_counts)}`
      : "gallery: built from enrollments (no rebuilt version yet)";
    await fillFilters();
    await search();
  } catch (err) {
    if (err.message !== "unauthorised") $("login-error").textContent = err.message;
  }
}

async function fillFilters() {
  const [videos, identities] = await Promise.all([json("/api/videos"), json("/api/identities")]);
  for (const v of videos) $("video").add(new Option(`${v.name} (${v.tracks} tracks)`, v.id));
  for (const i of identities) $("identity").add(new Option(i.name, i.name));
}

let searches = 0; // only the newest search may fill the table (responses can overtake)

async function search(event) {
  if (event) event.preventDefault();
  const mine = ++searches;
  const params = new URLSearchParams();
  for (const [key, id] of [["video_id", "video"], ["start_s", "start"], ["end_s", "end"], ["identity", "identity"]]) {
    if ($(id).value !== "") params.set(key, $(id).value);
  }
  $("error").textContent = "";
  try {
    const tracks = await json(`/api/tracks?${params}`);
    if (mine !== searches) return;
    const body = $("tracks").tBodies[0];
    body.replaceChildren();
    for (const t of tracks) {
      const row = body.insertRow();
      row.dataset.key = t.key;
      cell(row, t.key.split(":").slice(1).join(":"));
      cell(row, t.video);
      cell(row, `${fmt(t.start_s, 1)}–${fmt(t.end_s, 1)}`);
      cell(row, t.top ? `${t.top.identity} (${signed(t.top.fused_llr)})` : "–");
      const decision = t.top ? (t.top.decision === "match" ? t.top.identity : "unknown") : "not identified";
      cell(row, decision, t.top ? (t.top.decision === "match" ? "match" : "unknown") : "");
      row.addEventListener("click", () => openTrack(t.key, row));
    }
    if (!tracks.length) $("error").textContent = "no tracks match";
  } catch (err) {
    if (err.message !== "unauthorised") $("error").textContent = err.message;
  }
}

async function showThumb(img, key, kind) {
  try {
    const blob = await (await api(`/api/tracks/${encodeURIComponent(key)}/thumbnail/${kind}`)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (err) {
    img.removeAttribute("src");
    img.alt = `${kind}: ${err.message}`;
  }
}

// The sealed record (probe, candidates, models with weight digests, calibration, threshold)
// as a JSON file; `biofuse explain --verify FILE` checks that it was not altered.
async function exportRecord(key) {
  const blob = await (await api(`/api/tracks/${encodeURIComponent(key)}/record`)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `decision-${key.replace(/[^A-Za-z0-9]/g, "_")}.json`;
  link.click();
  URL.revokeObjectURL(link.href);
}

async function openTrack(key, row) {
  for (const r of $("tracks").tBodies[0].rows) r.classList.toggle("selected", r === row);
  const t = await json(`/api/tracks/${encodeURIComponent(key)}`);
  $("detail").hidden = false;
  $("detail-title").textContent = `${t.key}  ·  ${t.video}  ·  ${fmt(t.start_s, 1)}–${fmt(t.end_s, 1)} s`;
  showThumb($("thumb-face"), key, "face");
  showThumb($("thumb-body"), key, "body");
  const d = t.decision;
  $("decision").replaceChildren();
  if (d) {
    const b = document.createElement("b");
    b.textContent = d.decision;
    b.className = d.decision === "unknown" ? "unknown" : "match";
    $("decision").append("Decision: ", b, `. Why: ${d.why}. Threshold ${d.threshold_from}. `);
    const save = document.createElement("button");
    save.id = "export";
    save.textContent = "Export decision record";
    save.addEventListener("click", () => exportRecord(key).catch((err) => alert(err.message)));
    $("decision").append(save);
  } else {
    $("decision").textContent = "No identify run has scored this track yet.";
  }
  const body = $("candidates").tBodies[0];
  body.replaceChildren();
  for (const c of t.candidates) {
    const row = body.insertRow();
    cell(row, c.rank);
    cell(row, c.identity);
    cell(row, signed(c.fused_llr));
    cell(row, Object.entries(c.modalities)
      .map(([m, e]) => `${m}: ${fmt(e.score)} / ${signed(e.llr)} / q ${fmt(e.quality)} / ${e.model_id || "?"}`)
      .join("  |  "));
  }
  $("speech").textContent = t.speech.length
    ? `speech: ${t.speech.map((s) => `${fmt(s.start_s, 1)}–${fmt(s.end_s, 1)} s`).join(", ")}`
    : "no speech linked to this track";
}

$("login-form").addEventListener("submit", signIn);
$("search").addEventListener("submit", search);
if (token) {
  $("token").value = token;
  signIn(new Event("submit"));
}
