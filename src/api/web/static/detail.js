// One VM: its facts, addresses and NICs, actions, console tail, events, and a CPU/memory chart.
import { get } from "./api.js";
import { age, h, redraw, replace, showError, table } from "./dom.js";
import { actionButtons, statusText } from "./vms.js";

const REFRESH_MS = 2000;
const SAMPLES = 60; // two minutes of stats at one sample every two seconds

function facts(vm, me) {
  const rows = [
    ["Status", statusText(vm)], ["Power state", vm.power_state],
    ["Size", `${vm.flavor || "custom"}: ${vm.cpu} vCPU, ${vm.ram} MiB, ${vm.disk_gb} GiB disk`],
    ["Image", vm.image.name], ["GPUs", vm.gpus.join(", ") || "none"], ["Project", vm.project],
    ...(me.role === "admin" ? [["Host", vm.host || "-"]] : []),
    ["Console (VNC)", vm.console.vnc || "-"],
    ["Security groups", vm.security_groups.join(", ") || "none (nothing may reach it)"],
    ["Error", vm.error ? `${vm.error.code}: ${vm.error.message}` : "none"],
    ["Created", `${vm.created_at} (${age(vm.created_at)} ago)`], ["ID", vm.id],
  ];
  return h("dl", { class: "facts" }, rows.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function addresses(vm) {
  if (!vm.ip_addresses.length) return h("p", {}, "No address yet (it appears once the guest has a lease).");
  return h("ul", {}, vm.ip_addresses.map((a) => h("li", {}, `${a.address} (${a.family}, from ${a.source})`)));
}

// Each NIC in order (the guest's eth0 first): its network, MAC and the addresses learned for it.
function nicsTable(vm) {
  return table("Network interfaces", ["Network", "MAC", "Addresses"],
    (vm.nics || []).map((nic) => h("tr", {}, h("td", {}, nic.network), h("td", {}, nic.mac),
      h("td", {}, nic.addresses.map((a) => `${a.address} (from ${a.source})`).join(", ") || "-"))),
    "No network interface yet (it gets one when it is placed).");
}

function eventsTable(events) {
  return table("Events", ["Action", "Result", "Error", "Asked", "Finished", "Request"],
    events.map((e) => h("tr", {}, h("td", {}, e.action), h("td", {}, e.result),
      h("td", {}, e.error ? `${e.error.code}: ${e.error.message}` : "-"), h("td", {}, e.created_at),
      h("td", {}, e.finished_at || "-"), h("td", {}, e.request_id || "-"))), "No events.");
}

// Two lines on a canvas: CPU percent (of the VM's vCPUs) and memory in use (of its RAM).
function drawChart(canvas, samples, ramMib) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#d1d5db";
  ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
  const line = (values, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((value, i) => {
      const x = (i / (SAMPLES - 1)) * (width - 4) + 2;
      const y = height - 2 - Math.min(1, Math.max(0, value)) * (height - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(samples.map((s) => s.cpu / 100), "#2563eb");
  line(samples.map((s) => (s.memory === null ? 0 : s.memory / ramMib)), "#16a34a");
}

function memoryInUse(memory) {
  if (memory.rss_mib !== null) return memory.rss_mib;
  if (memory.current_mib !== null && memory.unused_mib !== null) return memory.current_mib - memory.unused_mib;
  return memory.current_mib;
}

function statsPanel() {
  const canvas = h("canvas", { width: 480, height: 120, role: "img", "aria-label": "CPU and memory chart: no samples yet" });
  const summary = h("p", { class: "legend" }, "Waiting for samples…");
  const samples = [];
  const add = (stats, vm) => {
    const sample = { cpu: stats.cpu.percent, memory: memoryInUse(stats.memory) };
    samples.push(sample);
    if (samples.length > SAMPLES) samples.shift();
    drawChart(canvas, samples, vm.ram);
    const memory = sample.memory === null ? "unknown" : `${sample.memory} MiB of ${vm.ram} MiB`;
    const text = `CPU ${sample.cpu.toFixed(1)} % (blue), memory ${memory} (green)`;
    summary.textContent = text;
    canvas.setAttribute("aria-label", `CPU and memory chart, last ${samples.length} samples: ${text}`);
  };
  const idle = (why) => { summary.textContent = why; };
  return { node: h("div", {}, canvas, summary), add, idle };
}

function layout() {
  const part = (id, heading) => h("section", { "aria-labelledby": id }, h("h2", { id }, heading));
  const parts = {
    facts: part("facts-heading", "Details"), addresses: part("ip-heading", "Addresses"),
    nics: part("nics-heading", "Networks"),
    stats: part("stats-heading", "CPU and memory"), console: part("console-heading", "Console"),
    events: part("events-heading", "Events"),
  };
  return parts;
}

export function renderVm(view, { me, setTitle, param }) {
  setTitle("VM");
  const parts = layout();
  const slots = Object.fromEntries(Object.keys(parts).map((key) => [key, h("div")]));
  for (const key of Object.keys(parts)) { parts[key].append(slots[key]); view.append(parts[key]); }
  const stats = statsPanel();
  slots.stats.append(stats.node);
  const consoleText = h("pre", { class: "console", tabindex: "0", "aria-label": "Console output" }, "");
  slots.console.append(consoleText);
  let timer = null;
  let stopped = false;
  const path = `/v1/vms/${encodeURIComponent(param)}`;
  const refresh = async () => {
    clearTimeout(timer);
    try {
      const vm = await get(path);
      if (stopped) return;
      setTitleOnce(vm);
      redraw(slots.facts, facts(vm, me), actionButtons(vm, refresh));
      replace(slots.addresses, addresses(vm));
      replace(slots.nics, nicsTable(vm));
      const [events, text] = await Promise.all([get(`${path}/events?limit=20`), get(`${path}/console?tail=40`)]);
      replace(slots.events, eventsTable(events.events));
      consoleText.textContent = text || "(nothing yet)";
      if (vm.power_state === "running") stats.add(await get(`${path}/stats`), vm);
      else stats.idle(`No samples: the VM is ${vm.power_state}.`);
    } catch (err) {
      if (stopped) return;
      showError(err);
      if (err.status === 404) { // deleted meanwhile, or never this token's: stop asking
        replace(view, h("p", {}, "This VM is not there (any more). ", h("a", { href: "#/vms" }, "Back to the VMs")));
        return;
      }
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  };
  let titled = false;
  const setTitleOnce = (vm) => { if (!titled) { setTitle(`VM ${vm.name}`); titled = true; } };
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
