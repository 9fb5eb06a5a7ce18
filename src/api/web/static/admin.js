// Admins' pages: GPUs per host, hosts with capacity bars and drains, and the audit trail.
import { get } from "./api.js";
import { h, replace, showError, table } from "./dom.js";
import { drainSummary } from "./host.js";

function loading(view, title, setTitle) {
  setTitle(title);
  const slot = h("div", {}, h("p", {}, "Loading…"));
  view.append(slot);
  return slot;
}

function gpuRows(gpus) {
  return gpus.map((gpu) => h("tr", {},
    h("th", { scope: "row" }, gpu.id), h("td", {}, gpu.product.name || gpu.product.id),
    h("td", {}, gpu.numa_node === null ? "-" : gpu.numa_node), h("td", {}, gpu.status),
    h("td", {}, gpu.vm_id ? h("a", { href: `#/vms/${encodeURIComponent(gpu.vm_id)}` }, gpu.vm_id)
      : gpu.reason ? `unavailable: ${gpu.reason}` : "-")));
}

export function renderGpus(view, { setTitle }) {
  const slot = loading(view, "GPUs", setTitle);
  Promise.all([get("/v1/gpus"), get("/v1/hosts")]).then(([{ gpus }, { hosts }]) => {
    const sections = hosts.map((host) => {
      const mine = gpus.filter((gpu) => gpu.host === host.name);
      const free = mine.filter((gpu) => gpu.status === "free").length;
      return h("section", { "aria-labelledby": `gpus-${host.name}` },
        h("h2", { id: `gpus-${host.name}` }, `${host.name}: ${free} of ${mine.length} free`),
        table(`GPUs of ${host.name}`, ["Address", "Product", "NUMA node", "Status", "VM or reason"],
          gpuRows(mine), "No GPUs on this host."));
    });
    replace(slot, sections);
  }, showError);
  return null;
}

function meter(label, used, total) {
  if (total === null || total === undefined) return h("span", {}, "unknown");
  return h("span", { class: "bar" },
    h("meter", { min: 0, max: Math.max(total, 1), value: used, high: total * 0.9,
      "aria-label": `${label}: ${used} of ${total} allocated` }),
    ` ${used} / ${total}`);
}

function hostRow(host) {
  const cap = host.capacity || {};
  const used = host.allocated;
  return h("tr", {},
    h("th", { scope: "row" }, h("a", { href: `#/hosts/${encodeURIComponent(host.name)}` }, host.name)),
    h("td", {}, host.state + (host.reason ? ` (${host.reason})` : "")), h("td", {}, host.uri),
    h("td", {}, meter(`${host.name} vCPUs`, used.vcpus, cap.vcpus)),
    h("td", {}, meter(`${host.name} RAM MiB`, used.ram, cap.ram)),
    h("td", {}, meter(`${host.name} disk GiB`, used.disk_gb, cap.disk_gb)),
    h("td", {}, meter(`${host.name} GPUs`, used.gpus, cap.gpus)), h("td", {}, host.vms),
    h("td", {}, drainSummary(host.drain)));
}

export function renderHosts(view, { setTitle }) {
  const slot = loading(view, "Hosts", setTitle);
  get("/v1/hosts").then(({ hosts }) => replace(slot, table("Hosts",
    ["Name", "State", "URI", "vCPUs", "RAM (MiB)", "Disk (GiB)", "GPUs", "VMs", "Drain"],
    hosts.map(hostRow), "No hosts.")), showError);
  return null;
}

function auditRows(events) {
  return events.map((e) => h("tr", {},
    h("td", {}, e.at), h("td", {}, e.project || "-"), h("td", {}, e.method), h("td", {}, e.path),
    h("td", {}, e.status), h("td", {}, e.resource_id || "-"), h("td", {}, e.request_id)));
}

export function renderAudit(view, { setTitle }) {
  const slot = loading(view, "Audit", setTitle);
  const rows = [];
  const more = h("button", { type: "button", hidden: true }, "Older entries");
  const load = async (marker) => {
    try {
      const page = await get(`/v1/events?limit=50${marker ? `&marker=${marker}` : ""}`);
      rows.push(...page.events);
      replace(slot, table("Audit trail", ["At", "Project", "Method", "Path", "Status", "Resource", "Request"],
        auditRows(rows), "Nothing recorded yet."));
      more.hidden = !page.next_marker;
      more.onclick = () => load(page.next_marker);
    } catch (err) {
      showError(err);
    }
  };
  view.append(more);
  load(null);
  return null;
}
