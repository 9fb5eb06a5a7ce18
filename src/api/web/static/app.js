// The dashboard: sign-in, the section links, and which page the address (#/…) shows.
import { ApiError, call, token } from "./api.js";
import { $, announce, clearError, h, replace, showError } from "./dom.js";
import { renderVms } from "./vms.js";
import { renderVm } from "./detail.js";
import { renderImages } from "./images.js";
import { renderVolumes } from "./volumes.js";
import { renderAudit, renderGpus, renderHosts } from "./admin.js";
import { renderHost } from "./host.js";
import { renderQueue, renderReservations } from "./scarcity.js";

const PAGES = [
  [/^#\/vms\/([^/]+)$/, renderVm],
  [/^#\/images$/, renderImages],
  [/^#\/volumes$/, renderVolumes],
  [/^#\/queue$/, renderQueue],
  [/^#\/reservations$/, renderReservations],
  [/^#\/gpus$/, renderGpus, "admin"],
  [/^#\/hosts\/([^/]+)$/, renderHost, "admin"],
  [/^#\/hosts$/, renderHosts, "admin"],
  [/^#\/audit$/, renderAudit, "admin"],
  [/^(#\/vms)?$/, renderVms],
];

const session = { me: null, stop: null };

// Who the token is: its entry in the token list (paged) is marked current.
async function whoAmI(secret) {
  let marker = null;
  do {
    const path = marker ? `/v1/tokens?marker=${encodeURIComponent(marker)}` : "/v1/tokens";
    const answer = await call("GET", path, undefined, secret);
    const mine = answer.tokens.find((entry) => entry.current);
    if (mine) return { role: mine.role, project: mine.project, id: mine.id };
    marker = answer.next_marker;
  } while (marker);
  throw new ApiError(401, "unauthorized", "This token cannot see itself.", null);
}

function setTitle(text) {
  const title = $("#title");
  title.textContent = text;
  document.title = `${text} · IaaS`;
  title.focus();
}

function showSignedIn(me) {
  $("#nav").hidden = false;
  for (const item of document.querySelectorAll("[data-admin]")) item.hidden = me.role !== "admin";
  $("#who").hidden = false;
  $("#who-text").textContent = `project ${me.project} · ${me.role}`;
}

function showSignIn() {
  if (session.stop) session.stop();
  session.me = null;
  $("#nav").hidden = true;
  $("#who").hidden = true;
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off",
    spellcheck: "false", required: true });
  const form = h("form", { id: "sign-in", class: "card" },
    h("p", {}, "Paste an API token. It stays in this tab only (session storage) and is sent " +
      "to this server's API, nowhere else."),
    h("label", { for: "token" }, "API token"), input,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", signIn);
  replace($("#view"), form);
  setTitle("Sign in");
}

async function signIn(event) {
  event.preventDefault();
  const secret = new FormData(event.target).get("token").trim();
  try {
    session.me = await whoAmI(secret);
  } catch (err) {
    showError(err);
    return;
  }
  token.set(secret);
  clearError();
  showSignedIn(session.me);
  announce(`Signed in to project ${session.me.project} as ${session.me.role}.`);
  if (location.hash === "" || location.hash === "#/vms") route(); else location.hash = "#/vms";
}

function route() {
  if (!session.me) return;
  if (session.stop) session.stop();
  session.stop = null;
  clearError();
  announce("");
  for (const link of document.querySelectorAll("#nav a")) {
    const here = location.hash.startsWith(link.getAttribute("href"));
    if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  for (const [pattern, render, needs] of PAGES) {
    const found = location.hash.match(pattern);
    if (!found || (needs === "admin" && session.me.role !== "admin")) continue;
    const view = replace($("#view"));
    session.stop = render(view, { me: session.me, setTitle, param: found[1] && decodeURIComponent(found[1]) });
    return;
  }
  replace($("#view"), h("p", {}, "No such page."));
  setTitle("Not found");
}

// A revoked or expired token: back to the sign-in form, the API's message still shown.
window.addEventListener("iaas-unauthorized", () => {
  if (!session.me) return; // already signing in
  token.clear();
  showSignIn();
});

async function start() {
  $("#sign-out").addEventListener("click", () => {
    token.clear();
    showSignIn();
    announce("Signed out.");
  });
  window.addEventListener("hashchange", route);
  showSignIn();
  const saved = token.get();
  if (!saved) return;
  try {
    session.me = await whoAmI(saved);
  } catch (err) {
    token.clear();
    showError(err);
    return;
  }
  showSignedIn(session.me);
  route();
}

start();
