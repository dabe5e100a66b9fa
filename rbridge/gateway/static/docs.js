// /docs: Swagger UI over /openapi.json, which needs a signed-in user. After sign-in every request
// Swagger UI makes to this server (the document itself and "Try it out") carries the bearer token,
// unless the user chose other credentials with Swagger's Authorize button (HTTP Basic, an API key).
(function () {
  "use strict";
  var ui = null;
  var notice = document.getElementById("docs-notice");
  var signin;

  function sameOrigin(url) {
    try { return new URL(url, location.href).origin === location.origin; } catch (e) { return false; }
  }

  // Credentials the user chose in Swagger's Authorize dialog (other than the token we put there).
  function chosenAuth(headers, ours) {
    return Object.keys(headers || {}).some(function (k) {
      var name = k.toLowerCase();
      return name === "x-api-key" || (name === "authorization" && headers[k] !== "Bearer " + ours);
    });
  }

  function start(s) {
    notice.hidden = true;
    ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,              // no calls to the public validator: there is no internet here
      tryItOutEnabled: true,
      displayRequestDuration: true,
      requestInterceptor: async function (req) {
        if (sameOrigin(req.url) && !chosenAuth(req.headers, s.token) && !/\/login(\/|$)/.test(req.url)) {
          var current = (await window.RBridge.live()) || s;
          req.headers = req.headers || {};
          req.headers["Authorization"] = "Bearer " + current.token;
        }
        return req;
      },
      responseInterceptor: function (res) {
        var code = res.body && res.body.error && res.body.error.code;
        if (res.status === 401 && (code === "token_expired" || code === "token_revoked") &&
            sameOrigin(res.url) && /openapi\.json$/.test(res.url)) {
          signin.ask("your session ended; sign in again");
        }
        return res;
      },
      onComplete: function () {
        // Swagger's own Authorize dialog shows the bearer token as already entered.
        try { ui.preauthorizeApiKey("bearerAuth", s.token); } catch (e) { /* older API */ }
      },
    });
  }

  function stop() {
    ui = null;
    document.getElementById("swagger-ui").replaceChildren();
    notice.hidden = false;
  }

  signin = window.RBridge.bind(start, stop);
})();
