// The admin page's script: the session list and one session's turns, read from the gateway's
// admin API with the bearer key the user typed. Everything from the history is set as text
// (textContent), never as HTML: it holds what people said in meetings.

const KEY = "voicegw.admin.key";
const $ = (selector) => document.querySelector(selector);

let nextCursor = null;

function setState(state, message = "") {
  document.body.dataset.state = state;
  $("#status").textContent = message;
  $("#status").classList.toggle("error", state === "error");
}

function key() {
  return sessionStorage.getItem(KEY);
}

function lock(message = "") {
  sessionStorage.removeItem(KEY);
  $("#unlock").hidden = false;
  $("#browse").hidden = true;
  $("#detail").hidden = true;
  $("#sign-out").hidden = true;
  setState("locked");
  if (message) {
    const note = $("#unlock-message") ?? document.createElement("p");
    note.id = "unlock-message";
    note.className = "error";
    note.textContent = message;
    $("#unlock").after(note);
  }
}

class ApiError extends Error {}

async function api(path, params = new URLSearchParams(), accept = "application/json") {
  const query = params.toString();
  const response = await fetch(query ? `${path}?${query}` : path, {
    headers: { Authorization: `Bearer ${key()}`, Accept: accept },
    cache: "no-store",
  });
  if (response.status === 401) {
    lock("That key was refused.");
    throw new ApiError("unauthorized");
  }
  if (!response.ok) {
    let message = `the gateway answered ${response.status}`;
    try {
      message = (await response.json()).error.message;
    } catch {
      // not the gateway's JSON error: keep the status
    }
    throw new ApiError(message);
  }
  return accept === "application/json" ? response.json() : response.blob();
}

function filters() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("#filters"))) {
    if (String(value).trim()) params.set(name, String(value).trim());
  }
  return params;
}

function cell(row, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function ms(value) {
  return value == null ? "–" : `${Math.round(value)} ms`;
}

function duration(seconds) {
  if (seconds == null) return "open";
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function when(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

function sessionRow(session) {
  const row = document.createElement("tr");
  row.dataset.sessionId = session.id;
  cell(row, when(session.started_at));
  cell(row, session.id, "id");
  cell(row, session.user ?? "–");
  cell(row, session.modes.length ? session.modes.join(" → ") : (session.mode ?? "?"), "mode");
  cell(row, session.reason ?? "–");
  cell(row, duration(session.duration_s), "duration");
  cell(row, String(session.turns), "turns");
  cell(row, ms(session.voice_to_voice_p50_ms), "v2v");
  const tools = cell(row, `${session.tool_calls.ok} / ${session.tool_calls.error}`, "tools");
  if (session.tool_calls.error) tools.classList.add("tool-error");
  cell(row, session.fell_back ? `yes: ${session.fallback_reason ?? ""}` : "no", "fell-back");
  row.addEventListener("click", () => openSession(session.id));
  return row;
}

async function list(more = false) {
  setState("loading", "Loading…");
  const params = filters();
  if (more && nextCursor) params.set("cursor", nextCursor);
  try {
    const page = await api("/v1/admin/sessions", params);
    const body = $("#sessions tbody");
    if (!more) body.replaceChildren();
    for (const session of page.sessions) body.append(sessionRow(session));
    nextCursor = page.next_cursor;
    $("#more").hidden = !nextCursor;
    const shown = body.children.length;
    setState("ready", shown ? `${shown} session${shown === 1 ? "" : "s"}` : "No sessions match.");
  } catch (error) {
    if (error.message !== "unauthorized") setState("error", error.message);
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderTurn(turn) {
  const box = element("div", "turn");
  box.dataset.turn = String(turn.turn);
  const figures = [
    `turn ${turn.turn}`,
    `v2v ${ms(turn.voice_to_voice_ms)}`,
    `eou ${ms(turn.eou_ms)}`,
    `stt ${ms(turn.stt_ms)}`,
    `llm ${ms(turn.llm_ttft_ms)}`,
    `tts ${ms(turn.tts_ttfb_ms)}`,
  ];
  box.append(element("div", "figures", figures.join(" · ")));
  for (const said of turn.said) {
    const line = element("p", `said ${said.role}`);
    line.append(element("span", "role", said.role));
    line.append(document.createTextNode(said.text ?? `(${said.chars} characters not kept)`));
    box.append(line);
  }
  for (const call of turn.tool_calls) {
    const line = element("div", `tool tool-${call.status === "ok" ? "ok" : "error"}`);
    line.dataset.tool = call.name;
    line.textContent =
      `${call.name} ${call.status} ${Math.round(call.duration_ms)} ms ` +
      `${JSON.stringify(call.arguments)}` + (call.output ? ` → ${call.output}` : "");
    box.append(line);
  }
  for (const error of turn.errors) {
    box.append(element("div", "error", `${error.code}: ${error.message}`));
  }
  return box;
}

async function openSession(id) {
  setState("loading", "Loading…");
  try {
    const detail = await api(`/v1/admin/sessions/${encodeURIComponent(id)}`);
    $("#detail-title").textContent = `Session ${detail.id}`;
    const routing = detail.routing
      .map((r) => `${r.kind} ${r.mode ?? ""} (${r.reason ?? ""})`.replace(" ()", ""))
      .join(", ");
    $("#detail-summary").textContent =
      `${detail.user ?? "no user"} · ${when(detail.started_at)} · ${duration(detail.duration_s)}` +
      ` · closed: ${detail.close_reason ?? "–"} · ${routing}`;
    const legs = $("#legs");
    legs.replaceChildren();
    detail.legs.forEach((leg, index) => {
      const box = element("section", "leg");
      box.dataset.mode = leg.mode ?? "";
      box.append(
        element(
          "h3",
          "",
          `Half ${index + 1}: ${leg.mode ?? "?"} · closed: ${leg.close_reason ?? "–"}`,
        ),
      );
      for (const turn of leg.turns) box.append(renderTurn(turn));
      for (const error of leg.errors) {
        box.append(element("div", "error", `${error.code}: ${error.message}`));
      }
      legs.append(box);
    });
    $("#browse").hidden = true;
    $("#detail").hidden = false;
    setState("ready");
  } catch (error) {
    if (error.message !== "unauthorized") setState("error", error.message);
  }
}

async function exportAs(format) {
  setState("loading", "Exporting…");
  try {
    const accept = format === "csv" ? "text/csv" : "application/x-ndjson";
    const blob = await api("/v1/admin/sessions", filters(), accept);
    const link = element("a");
    link.href = URL.createObjectURL(blob);
    link.download = `sessions.${format}`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    setState("ready", "Exported.");
  } catch (error) {
    if (error.message !== "unauthorized") setState("error", error.message);
  }
}

function unlocked() {
  $("#unlock").hidden = true;
  $("#unlock-message")?.remove();
  $("#browse").hidden = false;
  $("#sign-out").hidden = false;
  list();
}

$("#unlock").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#key").value);
  $("#key").value = "";
  unlocked();
});
$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  list();
});
$("#more").addEventListener("click", () => list(true));
$("#export-csv").addEventListener("click", () => exportAs("csv"));
$("#export-jsonl").addEventListener("click", () => exportAs("jsonl"));
$("#sign-out").addEventListener("click", () => lock());
$("#close-detail").addEventListener("click", () => {
  $("#detail").hidden = true;
  $("#browse").hidden = false;
  setState("ready");
});

if (key()) unlocked();
