// The VMs page: every VM the token sees, its actions, and the create form.
import { ApiError, call, get } from "./api.js";
import { age, announce, clearError, confirmDialog, field, h, redraw, showError, table } from "./dom.js";

const BUSY_MS = 2000; // while something changes
const IDLE_MS = 15000;

export function statusText(vm) {
  return vm.task ? `${vm.status} (${vm.task.action} ${vm.task.status})` : vm.status;
}

const busy = (vm) => Boolean(vm.task) || vm.status === "building" || vm.status === "deleting";

// Ask for an action; the list (or the detail page) refreshes to show its task.
export async function act(vm, action, after) {
  if (action === "delete") {
    const sure = await confirmDialog(`Delete VM ${vm.name}? Its disk is removed; this cannot be undone.`, "Delete");
    if (!sure) return;
  }
  try {
    const path = `/v1/vms/${encodeURIComponent(vm.id)}`;
    if (action === "delete") await call("DELETE", path);
    else await call("POST", `${path}/${action}`);
    clearError();
    announce(`${action} of ${vm.name} accepted.`);
  } catch (err) {
    showError(err);
  }
  after();
}

export function actionButtons(vm, after) {
  return h("div", { class: "buttons" }, vm.actions.map((action) => h("button", {
    type: "button", class: action === "delete" ? "danger" : null,
    "aria-label": `${action} ${vm.name}`, onclick: () => act(vm, action, after),
  }, action)));
}

function vmRow(vm, me, refresh) {
  const ips = vm.ip_addresses.map((address) => address.address).join(", ") || "-";
  return h("tr", { dataset: { vm: vm.name } },
    h("th", { scope: "row" }, h("a", { href: `#/vms/${encodeURIComponent(vm.id)}` }, vm.name)),
    h("td", { class: `status-${vm.status}` }, statusText(vm)),
    h("td", {}, vm.power_state), h("td", {}, ips),
    h("td", {}, vm.flavor || `${vm.cpu} vCPU / ${vm.ram} MiB`),
    h("td", {}, vm.gpus.length ? vm.gpus.join(", ") : "-"),
    me.role === "admin" ? h("td", {}, vm.host || "-") : null,
    h("td", {}, vm.project), h("td", {}, age(vm.created_at)),
    h("td", {}, actionButtons(vm, refresh)));
}

function vmTable(vms, me, refresh) {
  const headers = ["Name", "Status", "Power", "IPs", "Flavor", "GPUs",
    ...(me.role === "admin" ? ["Host"] : []), "Project", "Age", "Actions"];
  return table("Virtual machines", headers, vms.map((vm) => vmRow(vm, me, refresh)),
    "No VMs yet: create one below.");
}

async function keypairChoices() {
  try {
    return (await get("/v1/keypairs")).keypairs;
  } catch (err) {
    if (err instanceof ApiError && err.code === "not_found") return null; // no keypairs API here
    throw err;
  }
}

async function flavorOptions() {
  const { flavors } = await get("/v1/flavors");
  const counts = await Promise.all(flavors.map((flavor) =>
    get(`/v1/flavors/${encodeURIComponent(flavor.id)}/availability`).catch(() => null)));
  return flavors.map((flavor, i) => {
    const free = counts[i] ? ` (${counts[i].available} available)` : "";
    const gpus = flavor.gpu_count ? `, ${flavor.gpu_count} GPU` : "";
    return h("option", { value: flavor.name, disabled: counts[i] && counts[i].available === 0 },
      `${flavor.name}: ${flavor.cpu} vCPU, ${flavor.ram} MiB${gpus}${free}`);
  });
}

async function createForm(refresh) {
  const [flavors, { images }, keypairs] = await Promise.all([flavorOptions(), get("/v1/images"), keypairChoices()]);
  const name = h("input", { id: "vm-name", name: "name", required: true, pattern: "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?", autocomplete: "off" });
  const flavor = h("select", { id: "vm-flavor", name: "flavor", required: true }, flavors);
  const image = h("select", { id: "vm-image", name: "image_name", required: true },
    images.map((entry) => h("option", { value: entry.name }, entry.name)));
  const keys = keypairs && keypairs.length ? h("fieldset", {}, h("legend", {}, "Keypairs"),
    keypairs.map((pair, i) => h("label", { class: "check" },
      h("input", { type: "checkbox", name: "key_names", value: pair.name, id: `key-${i}` }),
      ` ${pair.name} (${pair.fingerprint || ""})`))) : null;
  const form = h("form", { class: "card", "aria-labelledby": "create-heading" },
    h("h2", { id: "create-heading" }, "Create a VM"),
    field("Name", name), field("Flavor", flavor), field("Image", image), keys,
    h("button", { type: "submit" }, "Create VM"));
  form.addEventListener("submit", (event) => submitCreate(event, form, refresh));
  return form;
}

async function submitCreate(event, form, refresh) {
  event.preventDefault();
  const data = new FormData(form);
  const body = { name: data.get("name"), flavor: data.get("flavor"), image_name: data.get("image_name") };
  const keyNames = data.getAll("key_names");
  if (keyNames.length) body.key_names = keyNames;
  try {
    const vm = await call("POST", "/v1/vms", body);
    clearError();
    announce(`Creating ${vm.name}…`);
    form.reset();
  } catch (err) {
    showError(err);
  }
  refresh();
}

export function renderVms(view, { me, setTitle }) {
  setTitle("VMs");
  const list = h("section", { "aria-labelledby": "list-heading" }, h("h2", { id: "list-heading" }, "Virtual machines"));
  const body = h("div", { id: "vm-list" }, h("p", {}, "Loading…"));
  list.append(body);
  view.append(list);
  let timer = null;
  let stopped = false;
  const refresh = async () => {
    clearTimeout(timer);
    try {
      const { vms } = await get("/v1/vms");
      if (stopped) return;
      redraw(body, vmTable(vms, me, refresh));
      timer = setTimeout(refresh, vms.some(busy) ? BUSY_MS : IDLE_MS);
    } catch (err) {
      if (!stopped) { showError(err); timer = setTimeout(refresh, IDLE_MS); }
    }
  };
  refresh();
  createForm(refresh).then((form) => { if (!stopped) view.append(form); }, showError);
  return () => { stopped = true; clearTimeout(timer); };
}
