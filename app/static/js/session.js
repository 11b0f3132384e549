/* Idle-timeout warning: the server ends a session after data-idle-seconds without a
   request; shortly before, offer to stay logged in (a POST that resets the server's clock). */
(function () {
  "use strict";
  var body = document.body;
  var idle = Number(body.dataset.idleSeconds || 0);
  var warnBefore = Number(body.dataset.warningSeconds || 120);
  var box = document.getElementById("cb-session-warning");
  var stay = document.getElementById("cb-stay");
  if (!idle || !box || !stay) { return; }
  var token = document.querySelector('meta[name="csrf-token"]');
  var warnTimer = null;
  var endTimer = null;

  function schedule() {
    clearTimeout(warnTimer);
    clearTimeout(endTimer);
    box.hidden = true;
    warnTimer = setTimeout(function () { box.hidden = false; stay.focus(); }, Math.max(0, idle - warnBefore) * 1000);
    endTimer = setTimeout(function () {
      window.location.assign(body.dataset.loginUrl + "?next=" + encodeURIComponent(window.location.pathname));
    }, idle * 1000);
  }

  stay.addEventListener("click", function () {
    fetch(body.dataset.keepaliveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {"X-CSRFToken": token ? token.content : ""}
    }).then(function (response) {
      if (response.ok) { schedule(); } else { window.location.assign(body.dataset.loginUrl); }
    });
  });
  schedule();
}());
