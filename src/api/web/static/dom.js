// Building the page from API data: every string becomes a text node, never HTML.

// h("td", {class: "x"}, "text", child): an element whose string children are text nodes.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (selector) => document.querySelector(selector);

export function announce(text) {
  $("#status").textContent = text;
}

export function showError(err) {
  const alert = $("#alert");
  alert.textContent = err && err.describe ? err.describe() : String(err);
  alert.hidden = false;
  // A token revoked or expired meanwhile: the app goes back to its sign-in form.
  if (err && err.status === 401) window.dispatchEvent(new CustomEvent("iaas-unauthorized"));
}

export function clearError() {
  const alert = $("#alert");
  alert.textContent = "";
  alert.hidden = true;
}

export function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows));
}

export function age(stamp) {
  if (!stamp) return "-";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(stamp)) / 1000));
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)}${unit}`;
  }
  return `${seconds}s`;
}

export function bytes(count) {
  if (count === null || count === undefined) return "-";
  let value = count;
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (value < 1024) return unit === "B" ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(1)} TiB`;
}

// A labelled form field: <label for=id>text</label><control id=id>.
export function field(text, control) {
  return h("div", { class: "field" }, h("label", { for: control.id }, text), control);
}

// Ask before something that cannot be undone; resolves true when confirmed.
export function confirmDialog(question, verb) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { "aria-labelledby": "confirm-text" });
    const finish = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    replace(dialog,
      h("p", { id: "confirm-text" }, question),
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "danger", onclick: () => finish(true) }, verb),
        h("button", { type: "button", autofocus: true, onclick: () => finish(false) }, "Cancel")));
    dialog.addEventListener("cancel", () => finish(false));
    document.body.append(dialog);
    dialog.showModal();
  });
}

// Replace node's children, keeping keyboard focus on the same control (by its accessible name)
// when a periodic refresh redraws it.
export function redraw(node, ...children) {
  const active = document.activeElement;
  const name = active && node.contains(active)
    ? active.getAttribute("aria-label") || active.textContent : null;
  replace(node, ...children);
  if (!name) return;
  const again = [...node.querySelectorAll("button, a, input, select")]
    .find((control) => (control.getAttribute("aria-label") || control.textContent) === name);
  if (again) again.focus();
}
