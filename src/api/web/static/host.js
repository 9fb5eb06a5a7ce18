// One host's page (admins): its state, its last drain's progress as GET /v1/hosts/{host}
// reports it (VMs moved, moving, waiting, left with the reason), and the drain button.
import { call, get } from "./api.js";
import { announce, confirmDialog, h, redraw, showError, table } from "./dom.js";

const REFRESH_MS = 2000; // while a drain runs

const vmLink = (id, name) => h("a", { href: `#/vms/${encodeURIComponent(id)}` }, name);

// "draining: 1 of 3 moved" for the hosts table; "-" for a host never drained.
export function drainSummary(drain) {
  if (!drain) return "-";
  const left = drain.unmovable.length ? `, ${drain.unmovable.length} left` : "";
  return `${drain.status}: ${drain.moved} of ${drain.vms} moved${left}`;
}

function drainView(host) {
  const drain = host.drain;
  if (!drain) return h("p", {}, "Never drained.");
  const counts = [["VMs moved", drain.moved], ["moving", drain.moving],
    ["waiting their turn", drain.waiting], ["left", drain.unmovable.length]];
  return h("div", {},
    h("p", { "data-drain-status": drain.status },
      `Drain ${drain.status === "done" ? "done" : "under way"}, started ${drain.started_at}, ` +
      `${drain.vms} VM(s) on the host then.`),
    h("ul", { class: "counts", "aria-label": "Drain progress" },
      counts.map(([label, count]) => h("li", {}, `${label}: ${count}`))),
    table("Moves", ["VM", "Task", "Status"], drain.tasks.map((move) => h("tr", {},
      h("th", { scope: "row" }, vmLink(move.vm_id, move.vm)), h("td", {}, move.task_id),
      h("td", {}, move.status))), "No VM was moved."),
    h("h3", {}, "VMs that stay"),
    table("VMs that stay", ["VM", "Reason"], drain.unmovable.map((vm) => h("tr", {},
      h("th", { scope: "row" }, vmLink(vm.vm_id, vm.vm)), h("td", {}, vm.reason))),
    "None: every VM could move."));
}

function summary(host) {
  return h("dl", { class: "facts" },
    h("dt", {}, "State"), h("dd", {}, host.state + (host.reason ? ` (${host.reason})` : "")),
    h("dt", {}, "URI"), h("dd", {}, host.uri),
    h("dt", {}, "Takes new VMs"), h("dd", {}, host.enabled ? "yes" : "no"),
    h("dt", {}, "VMs"), h("dd", {}, host.vms));
}

export function renderHost(view, { setTitle, param: name }) {
  setTitle(`Host ${name}`);
  const facts = h("div", {}, h("p", {}, "Loading…"));
  const progress = h("div", {});
  const button = h("button", { type: "button", class: "danger", "aria-label": `drain host ${name}` },
    "Drain");
  view.append(facts, h("section", { "aria-labelledby": "drain-heading" },
    h("h2", { id: "drain-heading" }, "Drain"),
    h("p", {}, "A drained host takes no new VMs, and each of its VMs migrates to another host " +
      "(live where it can, stopped and started again where it must)."),
    button, progress));
  let stopped = false;
  let timer = null;
  const refresh = async () => {
    clearTimeout(timer);
    try {
      const host = await get(`/v1/hosts/${encodeURIComponent(name)}`);
      if (stopped) return;
      redraw(facts, summary(host));
      redraw(progress, drainView(host));
      if (host.drain && host.drain.status === "draining") timer = setTimeout(refresh, REFRESH_MS);
    } catch (err) {
      if (!stopped) showError(err);
    }
  };
  button.addEventListener("click", async () => {
    if (!(await confirmDialog(`Drain host ${name}? It takes no new VMs and every VM on it ` +
      "migrates away.", "Drain"))) return;
    try {
      const host = await call("POST", `/v1/hosts/${encodeURIComponent(name)}/drain`);
      announce(`Drain of ${name} started (${drainSummary(host.drain)}).`);
    } catch (err) {
      showError(err);
    }
    refresh();
  });
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
