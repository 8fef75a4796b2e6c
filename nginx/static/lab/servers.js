// The server picker: which server runs behind each mode, and a swap on change.
// It talks to the lab's control endpoint (lab/control.py, /lab/api/servers):
// GET lists the servers in force and the choices; POST {"mode", "server"}
// starts a swap (202), and the page polls until the swap is done or failed.
// Where the endpoint cannot swap (its host process is not running: nginx answers
// a JSON 503 naming `lab up`, as after plain `docker compose up`), the picker
// shows each mode's server from its X-Gateway-Server header, read-only.

import { MODES, serverChoice } from "./model.js";

const API = "/lab/api/servers";
const POLL_MS = 500;
const POLL_LIMIT = 240; // two minutes: a swap waits up to a minute for a server's health

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const picker = { choices: null, servers: {}, swapping: false };

function say(text, state) {
  const node = $("server-status");
  node.textContent = text;
  node.dataset.state = state;
}

function select(mode) {
  return $(`server-${mode}`);
}

function fill(mode, names, current) {
  const node = select(mode);
  node.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    }),
  );
  node.value = current;
  node.dataset.server = current;
}

function enable(on) {
  for (const mode of MODES) select(mode).disabled = !on || !picker.choices;
  document.getElementById("server-form").dataset.busy = on ? "false" : "true";
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

/** Each mode's server from the X-Gateway-Server of GET /<mode>/ (when the lab cannot swap). */
async function probeServers() {
  const found = {};
  for (const mode of MODES) {
    try {
      const response = await fetch(`/${mode}/`, { cache: "no-store" });
      found[mode] = response.headers.get("X-Gateway-Server") || "?";
    } catch {
      found[mode] = "?";
    }
  }
  return found;
}

function show(listing) {
  picker.choices = listing.choices;
  picker.servers = listing.servers;
  for (const mode of MODES) fill(mode, listing.choices[mode] ?? [], listing.servers[mode]);
}

/** The servers in force; the picker enabled when the lab can swap them. */
export async function loadServers() {
  let response = null;
  try {
    response = await fetch(API, { cache: "no-store" });
  } catch {
    // no answer at all: fall through to the read-only view
  }
  const body = response ? await readJson(response) : {};
  if (response?.ok && body.servers && body.choices) {
    show(body);
    enable(true);
    const names = MODES.map((m) => `${m}: ${body.servers[m]}`).join(", ");
    say(`In force: ${names}.`, "ready");
    return body;
  }
  picker.choices = null;
  const servers = await probeServers();
  for (const mode of MODES) fill(mode, [servers[mode]], servers[mode]);
  enable(false);
  const why = body.error || `the lab's control endpoint did not answer (${response?.status ?? "network"})`;
  say(`In force: ${MODES.map((m) => `${m}: ${servers[m]}`).join(", ")}. ${why}`, "read-only");
  return null;
}

async function swap(mode, server) {
  const choice = serverChoice(picker.choices, mode, server);
  if (!choice || picker.swapping) return;
  picker.swapping = true;
  enable(false);
  const was = picker.servers[mode];
  say(`Swapping ${mode}: starting ${server}, waiting for its health, then nginx turns to it\u2026`, "swapping");
  try {
    const response = await fetch(API, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(choice),
      cache: "no-store",
    });
    let body = await readJson(response);
    if (response.status === 202) {
      for (let i = 0; i < POLL_LIMIT && body.swap?.state === "swapping"; i += 1) {
        await sleep(POLL_MS);
        body = await readJson(await fetch(API, { cache: "no-store" }));
      }
    } else if (!response.ok) {
      throw new Error(body.error || `the lab answered ${response.status}`);
    }
    if (body.servers) show(body);
    if (body.swap?.state === "failed") throw new Error(body.swap.error);
    if (body.swap?.state === "swapping") throw new Error("the swap is still running: reload later");
    say(`${mode} is now served by ${body.servers?.[mode] ?? server} (was ${was}). Fire again to see it.`, "done");
  } catch (error) {
    say(`${mode} stays on ${picker.servers[mode] ?? was}: ${error.message}`, "failed");
    if (picker.choices) fill(mode, picker.choices[mode], picker.servers[mode] ?? was);
  } finally {
    picker.swapping = false;
    enable(true);
  }
}

export function initServers() {
  for (const mode of MODES) {
    select(mode).addEventListener("change", (event) => swap(mode, event.target.value));
  }
  $("server-form").addEventListener("submit", (event) => event.preventDefault());
  return loadServers();
}
