// Sign-in shared by /docs and /dashboard: POST /login, the token kept in this tab's sessionStorage.
// The pages themselves are open; everything they fetch needs the token. When it expires the page
// uses the refresh token if the server gave one (POST /login/refresh), else asks to sign in again.
(function () {
  "use strict";
  var KEY = "rbridge.session";

  function now() { return Date.now() / 1000; }

  function save(username, body) {
    var s = {user: username, token: body.access_token, expires_at: now() + (body.expires_in || 3600),
             refresh_token: body.refresh_token || null};
    sessionStorage.setItem(KEY, JSON.stringify(s));
    return s;
  }

  function session() {
    try {
      var s = JSON.parse(sessionStorage.getItem(KEY));
      if (s && s.token && (s.expires_at > now() + 5 || s.refresh_token)) return s;
    } catch (e) { /* nothing stored */ }
    return null;
  }

  async function errorOf(response) {
    var body = await response.json().catch(function () { return {}; });
    var err = new Error((body.error && body.error.message) || ("HTTP " + response.status));
    err.status = response.status;
    err.code = body.error && body.error.code;
    return err;
  }

  async function signIn(username, password) {
    var r = await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: JSON.stringify({username: username, password: password})});
    if (!r.ok) throw await errorOf(r);
    return save(username, await r.json());
  }

  async function refresh(s) {
    if (!s || !s.refresh_token) return null;
    var r = await fetch("/login/refresh", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({refresh_token: s.refresh_token})});
    if (!r.ok) return null;
    return save(s.user, await r.json());
  }

  function signOut() { sessionStorage.removeItem(KEY); }

  // The current session with a live token (refreshed when it is about to expire), or null.
  async function live() {
    var s = session();
    if (s && s.expires_at <= now() + 5) s = (await refresh(s)) || s;
    return s;
  }

  // GET a JSON document with the token; one refresh on an expired token, else an error with .status.
  async function getJSON(path) {
    var s = await live();
    if (!s) { var e = new Error("sign in"); e.status = 401; throw e; }
    for (var attempt = 0; attempt < 2; attempt++) {
      var r = await fetch(path, {headers: {"Authorization": "Bearer " + s.token}, cache: "no-store"});
      if (r.ok) return r.json();
      var err = await errorOf(r);
      if (r.status === 401 && attempt === 0) {
        var renewed = await refresh(s);
        if (renewed) { s = renewed; continue; }
        signOut();
      }
      throw err;
    }
  }

  // Wire a sign-in form (#signin with #username, #password, #signin-error) and a #signed-in bar
  // (#who, #signout) to callbacks: onIn(session) after signing in or on load with a live session.
  function bind(onIn, onOut) {
    var form = document.getElementById("signin");
    var bar = document.getElementById("signed-in");
    var error = document.getElementById("signin-error");
    function show(s) {
      form.hidden = !!s;
      bar.hidden = !s;
      if (s) document.getElementById("who").textContent = s.user;
    }
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      error.textContent = "";
      try {
        var s = await signIn(form.username.value, form.password.value);
        form.password.value = "";
        show(s);
        onIn(s);
      } catch (e) {
        error.textContent = e.message;
      }
    });
    document.getElementById("signout").addEventListener("click", function () {
      signOut();
      show(null);
      if (onOut) onOut();
    });
    var s = session();
    show(s);
    if (s) onIn(s);
    return {
      // Back to the form, with a reason (an expired session, a missing role).
      ask: function (message) { signOut(); show(null); error.textContent = message || ""; },
    };
  }

  window.RBridge = {session: session, live: live, signIn: signIn, signOut: signOut, refresh: refresh,
                    getJSON: getJSON, bind: bind};
})();
