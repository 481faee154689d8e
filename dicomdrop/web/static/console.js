// Live parts of the console: an element with data-refresh="URL" is replaced by that URL's
// HTML every data-seconds seconds (server-rendered fragments; no framework, no build step).
"use strict";
document.querySelectorAll("[data-refresh]").forEach(function (element) {
  var seconds = parseInt(element.getAttribute("data-seconds") || "10", 10);
  setInterval(function () {
    fetch(element.getAttribute("data-refresh"), { credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected || !response.ok) { return null; }
        return response.text();
      })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } })
      .catch(function () { /* keep the last good state while the server is unreachable */ });
  }, seconds * 1000);
});
