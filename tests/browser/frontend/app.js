// The test frontend: what a web app on its own origin does with the gateway's API.
// window.GATEWAY comes from /config.js; the user's bearer token arrives in the URL fragment
// (#token=...) once, as after the frontend's own sign-in, and is kept in sessionStorage.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  sessionStorage.setItem("token", fromHash);
  history.replaceState(null, "", location.pathname + location.search);
}

function token() {
  return sessionStorage.getItem("token");
}

function show(text, kind) {
  const status = document.getElementById("status");
  status.innerText = text;
  status.className = kind || "";
}

async function api(method, path, body, extraHeaders) {
  const headers = { Authorization: "Bearer " + token(), ...(extraHeaders || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(GATEWAY + path, {
    method,
    headers,
    credentials: "include", // the OAuth browser-binding cookie rides along
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { ok: response.ok, status: response.status, body: text ? JSON.parse(text) : null };
}

// What the user reads when the connect flow came back with ?error=<code>.
const CALLBACK_ERRORS = {
  state_used: "This sign-in link was already used. Start connecting again from Brokers.",
  state_mismatch:
    "This sign-in was started in another browser. Start connecting again from this browser.",
  state_expired: "This sign-in took too long. Start connecting again.",
  invalid_state: "This sign-in link is not valid. Start connecting again.",
  access_denied: "You declined access at your broker. Nothing was connected.",
};

async function showConnection(connectionId) {
  const got = await api("GET", "/v1/connections/" + encodeURIComponent(connectionId));
  if (!got.ok) {
    show("Could not read the connection: " + got.body.detail, "error");
    return;
  }
  const c = got.body;
  document.getElementById("connection").innerText = c.id;
  show(c.display + " (" + c.status + ")", c.status === "active" ? "ok" : "error");
}
