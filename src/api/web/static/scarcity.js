// The Queue page (what waits for capacity, in fair order) and the Reservations page (each
// booking, and a timeline of the claimed GPUs per host over the next days).
import { get } from "./api.js";
import { age, h, redraw, showError, table } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 86400000;
const WIDTH = 720; // the timeline's drawing width, in SVG units
const ROW = 22;
const LABEL = 170; // room left of the bars for the GPU's name

function when(stamp) {
  return stamp ? stamp.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "—";
}

// Redraw every few seconds until the page is left (what waits moves on its own).
function every(seconds, refresh) {
  refresh();
  const timer = setInterval(refresh, seconds * 1000);
  return () => clearInterval(timer);
}

function queueRows(entries, admin) {
  return entries.map((entry) => h("tr", { dataset: { vm: entry.name } },
    h("td", {}, entry.position === null ? "—" : entry.position),
    h("th", { scope: "row" }, h("a", { href: `#/vms/${encodeURIComponent(entry.vm_id)}` }, entry.name)),
    admin ? h("td", {}, entry.project) : null,
    h("td", {}, entry.flavor || "—"),
    h("td", {}, entry.reason),
    h("td", { title: entry.since }, `${age(entry.since)} ago`),
    h("td", {}, when(entry.estimated_start_at))));
}

export function renderQueue(view, { me, setTitle }) {
  setTitle("Queue");
  const admin = me.role === "admin";
  const slot = h("div", {}, h("p", {}, "Loading…"));
  view.append(h("section", { "aria-labelledby": "queue-heading" },
    h("h2", { id: "queue-heading" }, "Waiting for capacity"),
    h("p", { class: "legend" }, "VMs created with wait_for_capacity, in the order they will be " +
      "placed: the project holding the smallest share of what it waits for first, then the " +
      "oldest."), slot));
  let stopped = false;
  const stop = every(3, async () => {
    try {
      const { queue } = await get("/v1/queue");
      if (stopped) return;
      const headers = ["Position", "Name", ...(admin ? ["Project"] : []), "Flavor",
        "Waits for", "Since", "Estimated start"];
      redraw(slot, table("Capacity queue", headers, queueRows(queue, admin),
        "Nothing waits for capacity."));
    } catch (err) {
      if (!stopped) showError(err);
    }
  });
  return () => { stopped = true; stop(); };
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Each claimed GPU of the host as a row, each reservation on it as a bar over [from, to).
function timeline(host, rows, from, to) {
  const scale = (stamp) => LABEL + (Math.min(Math.max(Date.parse(stamp), from), to) - from)
    / (to - from) * (WIDTH - LABEL);
  const days = Math.round((to - from) / DAY_MS);
  const height = (rows.length + 1) * ROW;
  const label = `Reservations on ${host} over the next ${days} days`;
  const drawing = svg("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "timeline",
    role: "img", "aria-label": label });
  for (let day = 0; day <= days; day += 1) {
    const x = LABEL + day / days * (WIDTH - LABEL);
    drawing.append(svg("line", { x1: x, x2: x, y1: 0, y2: height, class: "tick" }),
      svg("text", { x: x + 2, y: height - 6, class: "tick-label" },
        new Date(from + day * DAY_MS).toISOString().slice(5, 10)));
  }
  rows.forEach(([gpu, bookings], index) => {
    const y = index * ROW;
    drawing.append(svg("text", { x: 0, y: y + ROW - 7 }, gpu));
    for (const booking of bookings) {
      const x = scale(booking.start);
      const width = Math.max(2, scale(booking.end) - x);
      drawing.append(svg("rect", { x, y: y + 3, width, height: ROW - 6, rx: 3,
        class: `booking booking-${booking.status}`, "data-reservation": booking.id },
      svg("title", {}, `${booking.project}: ${booking.count} × ${booking.flavor}, ` +
        `${when(booking.start)} – ${when(booking.end)} (${booking.status})`)));
    }
  });
  return h("figure", { class: "card wide" }, drawing, h("figcaption", {}, label));
}

function timelines(reservations, days) {
  const from = Date.now();
  const to = from + days * DAY_MS;
  const byHost = new Map(); // host -> gpu -> [reservation]
  for (const booking of reservations) {
    if (!["pending", "active"].includes(booking.status)) continue;
    if (Date.parse(booking.start) >= to) continue;
    for (const { host, gpus } of booking.hosts) {
      if (!byHost.has(host)) byHost.set(host, new Map());
      for (const gpu of gpus) {
        const onGpu = byHost.get(host);
        if (!onGpu.has(gpu)) onGpu.set(gpu, []);
        onGpu.get(gpu).push(booking);
      }
    }
  }
  if (!byHost.size) return h("p", { class: "empty" }, `No GPU is booked in the next ${days} days.`);
  return [...byHost.entries()].sort().map(([host, onGpu]) => h("section",
    { "aria-labelledby": `timeline-${host}` },
    h("h3", { id: `timeline-${host}` }, host),
    timeline(host, [...onGpu.entries()].sort(), from, to)));
}

function reservationRows(reservations, admin) {
  return reservations.map((booking) => h("tr", { dataset: { reservation: booking.id } },
    h("th", { scope: "row" }, booking.id.slice(0, 8)),
    admin ? h("td", {}, booking.project) : null,
    h("td", {}, `${booking.count} × ${booking.flavor}`),
    h("td", {}, when(booking.start)), h("td", {}, when(booking.end)),
    h("td", {}, booking.status),
    h("td", {}, booking.hosts.map(({ host, gpus }) => `${host}: ${gpus.join(", ")}`).join("; "))));
}

export function renderReservations(view, { me, setTitle }) {
  setTitle("Reservations");
  const admin = me.role === "admin";
  const days = 7;
  const chart = h("div", {}, h("p", {}, "Loading…"));
  const list = h("div", {});
  view.append(
    h("section", { "aria-labelledby": "timeline-heading" },
      h("h2", { id: "timeline-heading" }, `Claimed GPUs, next ${days} days`), chart),
    h("section", { "aria-labelledby": "reservations-heading" },
      h("h2", { id: "reservations-heading" }, "Reservations"), list));
  let stopped = false;
  const stop = every(10, async () => {
    try {
      const { reservations } = await get("/v1/reservations");
      if (stopped) return;
      redraw(chart, timelines(reservations, days));
      const headers = ["Reservation", ...(admin ? ["Project"] : []), "Booked", "Start", "End",
        "Status", "GPUs"];
      redraw(list, table("Reservations", headers, reservationRows(reservations, admin),
        "No reservations."));
    } catch (err) {
      if (!stopped) showError(err);
    }
  });
  return () => { stopped = true; stop(); };
}
