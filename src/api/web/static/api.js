// The JSON API with the signed-in token: the dashboard's only way to read or change anything.
const KEY = "iaas.token";

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
  describe() {
    const where = this.requestId ? ` (request ${this.requestId})` : "";
    return `${this.code}: ${this.message}${where}`;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

async function refusal(response) {
  const requestId = response.headers.get("X-Request-Id");
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message, requestId);
  } catch {
    return new ApiError(response.status, `http_${response.status}`, response.statusText, requestId);
  }
}

// One call: the parsed JSON (or text, or null), or an ApiError with the API's code and message.
export async function call(method, path, body, secret = token.get()) {
  const headers = { Accept: "application/json" };
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", `The API does not answer: ${err.message}`, null);
  }
  if (!response.ok) throw await refusal(response);
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.startsWith("application/json") ? response.json() : response.text();
}

export const get = (path) => call("GET", path);

// PUT a file as octet-stream, telling onProgress(sent, total); XMLHttpRequest reports upload
// progress, fetch does not.
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", path);
    xhr.setRequestHeader("Authorization", `Bearer ${token.get()}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (event) => onProgress(event.loaded, event.total || file.size);
    xhr.onerror = () => reject(new ApiError(0, "unreachable", "The upload was cut off.", null));
    xhr.onload = () => {
      const requestId = xhr.getResponseHeader("X-Request-Id");
      let body = null;
      try { body = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { body = null; }
      if (xhr.status < 400) { resolve(body); return; }
      const error = body && body.error ? body.error : { code: `http_${xhr.status}`, message: xhr.statusText };
      reject(new ApiError(xhr.status, error.code, error.message, requestId));
    };
    xhr.send(file);
  });
}

// Follow a task until it ends, calling onUpdate with each state (long-polls honour Retry-After).
export async function waitTask(task, onUpdate) {
  let current = task;
  while (current.status === "queued" || current.status === "running") {
    const response = await fetch(`/v1/tasks/${encodeURIComponent(current.id)}?wait=2`, {
      headers: { Authorization: `Bearer ${token.get()}`, Accept: "application/json" },
      credentials: "omit", cache: "no-store",
    });
    if (!response.ok) throw await refusal(response);
    current = await response.json();
    onUpdate(current);
    const retry = Number(response.headers.get("Retry-After") || 0);
    if (retry && (current.status === "queued" || current.status === "running")) {
      await new Promise((done) => setTimeout(done, retry * 1000));
    }
  }
  return current;
}
