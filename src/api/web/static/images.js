// The Images page: the list, an upload (with a progress bar) and an import by URL.
import { call, get, upload, waitTask } from "./api.js";
import { announce, bytes, clearError, confirmDialog, field, h, redraw, showError, table } from "./dom.js";

function imageRows(images, me, refresh) {
  return images.map((image) => h("tr", {},
    h("th", { scope: "row" }, image.name), h("td", {}, image.format), h("td", {}, bytes(image.size_bytes)),
    h("td", {}, bytes(image.virtual_size_bytes)), h("td", {}, image.status || "active"),
    h("td", {}, image.created_at),
    me.role === "admin" ? h("td", {}, h("button", { type: "button", class: "danger",
      "aria-label": `delete image ${image.name}`, onclick: () => remove(image, refresh) }, "delete")) : null));
}

async function remove(image, refresh) {
  if (!(await confirmDialog(`Delete image ${image.name}?`, "Delete"))) return;
  try {
    await call("DELETE", `/v1/images/${encodeURIComponent(image.id)}`);
    announce(`Image ${image.name} deleted.`);
    clearError();
  } catch (err) {
    showError(err);
  }
  refresh();
}

const formatSelect = (id) => h("select", { id, name: "format" },
  h("option", { value: "qcow2" }, "qcow2"), h("option", { value: "raw" }, "raw"));

function progressBar(id, label) {
  const bar = h("progress", { id, max: 1, value: 0, "aria-label": label });
  const text = h("span", { class: "progress-text" }, "");
  return { node: h("div", { class: "progress", hidden: true }, bar, text), bar, text };
}

function showProgress(progress, done, total) {
  progress.node.hidden = false;
  progress.bar.max = total || 1;
  progress.bar.value = done;
  progress.text.textContent = total ? `${bytes(done)} of ${bytes(total)}` : bytes(done);
}

function uploadForm(refresh) {
  const progress = progressBar("upload-progress", "Upload progress");
  const form = h("form", { class: "card", "aria-labelledby": "upload-heading" },
    h("h2", { id: "upload-heading" }, "Upload an image"),
    field("Name", h("input", { id: "upload-name", name: "name", required: true })),
    field("Format", formatSelect("upload-format")),
    field("File", h("input", { id: "upload-file", name: "file", type: "file", required: true })),
    h("button", { type: "submit" }, "Upload"), progress.node);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const file = data.get("file");
    try {
      const image = await call("POST", "/v1/images", { name: data.get("name"), format: data.get("format") });
      await upload(`/v1/images/${encodeURIComponent(image.id)}/file`, file,
        (sent, total) => showProgress(progress, sent, total));
      announce(`Image ${image.name} uploaded.`);
      clearError();
      form.reset();
    } catch (err) {
      showError(err);
    }
    refresh();
  });
  return form;
}

function importForm(refresh) {
  const progress = progressBar("import-progress", "Import progress");
  const form = h("form", { class: "card", "aria-labelledby": "import-heading" },
    h("h2", { id: "import-heading" }, "Import an image by URL"),
    field("Name", h("input", { id: "import-name", name: "name", required: true })),
    field("Format", formatSelect("import-format")),
    field("URL", h("input", { id: "import-url", name: "url", type: "url", required: true })),
    field("SHA-256 (optional)", h("input", { id: "import-sha256", name: "sha256", pattern: "[0-9a-f]{64}" })),
    h("button", { type: "submit" }, "Import"), progress.node);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: data.get("name"), format: data.get("format"), url: data.get("url") };
    if (data.get("sha256")) body.sha256 = data.get("sha256");
    try {
      // The answer is the image, importing; its task ends the import, the image shows progress.
      const started = await call("POST", "/v1/images", body);
      const task = await get(`/v1/tasks/${encodeURIComponent(started.task_id)}`);
      const ended = await waitTask(task, async (now) => {
        announce(`Import of ${body.name}: ${now.status}`);
        const moved = (await get(`/v1/images/${encodeURIComponent(started.id)}`)).progress;
        if (moved) showProgress(progress, moved.bytes_done, moved.bytes_total);
      });
      if (ended.status === "failed") showError(`Import failed: ${ended.error.code}: ${ended.error.message}`);
      else { clearError(); form.reset(); }
    } catch (err) {
      showError(err);
    }
    refresh();
  });
  return form;
}

export function renderImages(view, { me, setTitle }) {
  setTitle("Images");
  const list = h("div", {}, h("p", {}, "Loading…"));
  view.append(h("section", { "aria-labelledby": "images-heading" },
    h("h2", { id: "images-heading" }, "Images"), list));
  let stopped = false;
  const refresh = async () => {
    try {
      const { images } = await get("/v1/images");
      if (stopped) return;
      const headers = ["Name", "Format", "Size", "Virtual size", "Status", "Created",
        ...(me.role === "admin" ? ["Actions"] : [])];
      redraw(list, table("Images", headers, imageRows(images, me, refresh), "No images."));
    } catch (err) {
      if (!stopped) showError(err);
    }
  };
  refresh();
  view.append(uploadForm(refresh), importForm(refresh)); // a member's land in its project, private
  return () => { stopped = true; };
}
