// The Volumes page: each volume with its attachments, create, attach, detach and delete.
import { call, get, waitTask } from "./api.js";
import { announce, clearError, confirmDialog, field, h, redraw, showError, table } from "./dom.js";

const path = (volume) => `/v1/volumes/${encodeURIComponent(volume.id)}`;

function attachedTo(volume) {
  if (!volume.attachments.length) return "—";
  return volume.attachments.map((a) => `${a.vm_name} (${a.device}${a.read_only ? ", read-only" : ""})`).join(", ");
}

// Run a request that answers with a task (or a volume holding one) and wait for its end.
async function runTask(label, request, refresh) {
  try {
    const answer = await request();
    const task = answer.task || answer;
    refresh();
    const ended = await waitTask(task, (now) => announce(`${label}: ${now.status}`));
    if (ended.status === "failed") showError(`${label} failed: ${ended.error.code}: ${ended.error.message}`);
    else { clearError(); announce(`${label}: done.`); }
  } catch (err) {
    showError(err);
  }
  refresh();
}

function detachButtons(volume, refresh) {
  return volume.attachments.map((a) => h("button", { type: "button",
    "aria-label": `detach volume ${volume.name} from ${a.vm_name}`,
    onclick: () => runTask(`Detach ${volume.name} from ${a.vm_name}`, () => call("DELETE",
      `/v1/vms/${encodeURIComponent(a.vm_id)}/volumes/${encodeURIComponent(volume.id)}`), refresh) },
  `detach from ${a.vm_name}`));
}

function attachForm(volume, vms, refresh) {
  const id = `attach-${volume.id}`;
  const select = h("select", { id, name: "vm", "aria-label": `VM to attach ${volume.name} to` },
    ...vms.filter((vm) => !volume.attachments.some((a) => a.vm_id === vm.id))
      .map((vm) => h("option", { value: vm.id }, vm.name)));
  const readOnly = h("input", { type: "checkbox", name: "read_only", id: `${id}-ro`,
    "aria-label": `attach ${volume.name} read-only` });
  if (volume.multiattach) { readOnly.checked = true; readOnly.disabled = true; }
  const form = h("form", { class: "inline" }, select,
    h("label", { for: `${id}-ro` }, "read-only"), readOnly,
    h("button", { type: "submit", "aria-label": `attach volume ${volume.name}` }, "attach"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!select.value) return;
    const name = select.selectedOptions[0].textContent;
    runTask(`Attach ${volume.name} to ${name}`, () => call("POST",
      `/v1/vms/${encodeURIComponent(select.value)}/volumes`,
      { volume: volume.id, read_only: readOnly.checked }), refresh);
  });
  return form;
}

async function remove(volume, refresh) {
  if (!(await confirmDialog(`Delete volume ${volume.name} and its snapshots?`, "Delete"))) return;
  runTask(`Delete ${volume.name}`, () => call("DELETE", path(volume)), refresh);
}

function volumeRows(volumes, vms, refresh) {
  return volumes.map((volume) => h("tr", {},
    h("th", { scope: "row" }, volume.name), h("td", {}, `${volume.size_gb} GiB`),
    h("td", {}, volume.status), h("td", {}, attachedTo(volume)),
    h("td", {}, volume.multiattach ? "yes" : "no"),
    h("td", {}, attachForm(volume, vms, refresh), ...detachButtons(volume, refresh),
      h("button", { type: "button", class: "danger", "aria-label": `delete volume ${volume.name}`,
        onclick: () => remove(volume, refresh) }, "delete"))));
}

function createForm(refresh) {
  const form = h("form", { class: "card", "aria-labelledby": "volume-create-heading" },
    h("h2", { id: "volume-create-heading" }, "Create a volume"),
    field("Name", h("input", { id: "volume-name", name: "name", required: true })),
    field("Size (GiB)", h("input", { id: "volume-size", name: "size_gb", type: "number", min: 1,
      value: 10, required: true })),
    field("From image (optional)", h("input", { id: "volume-image", name: "image_name" })),
    field("Multiattach (shared read-only)", h("input", { id: "volume-multiattach",
      name: "multiattach", type: "checkbox" })),
    h("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: data.get("name"), size_gb: Number(data.get("size_gb")) };
    if (data.get("image_name")) body.image_name = data.get("image_name");
    if (data.get("multiattach")) body.multiattach = true;
    runTask(`Create ${body.name}`, async () => {
      const volume = await call("POST", "/v1/volumes", body);
      form.reset();
      return volume;
    }, refresh);
  });
  return form;
}

export function renderVolumes(view, { setTitle }) {
  setTitle("Volumes");
  const list = h("div", {}, h("p", {}, "Loading…"));
  view.append(h("section", { "aria-labelledby": "volumes-heading" },
    h("h2", { id: "volumes-heading" }, "Volumes"), list));
  let stopped = false;
  const refresh = async () => {
    try {
      const [{ volumes }, { vms }] = await Promise.all([get("/v1/volumes"), get("/v1/vms")]);
      if (stopped) return;
      redraw(list, table("Volumes", ["Name", "Size", "Status", "Attached to", "Multiattach",
        "Actions"], volumeRows(volumes, vms, refresh), "No volumes."));
    } catch (err) {
      if (!stopped) showError(err);
    }
  };
  refresh();
  view.append(createForm(refresh));
  return () => { stopped = true; };
}
