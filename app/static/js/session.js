/* Idle-timeout warning: the server ends a session after data-idle-seconds without a
   request; shortly before, a visible warning (also announced to screen readers through the
   page's live region) offers to stay logged in: a POST that resets the server's clock. */
(function () {
  "use strict";
  var body = document.body;
  var idle = Number(body.dataset.idleSeconds || 0);
  var warnBefore = Math.min(Number(body.dataset.warningSeconds || 120), idle);
  var box = document.getElementById("cb-session-warning");
  var stay = document.getElementById("cb-stay");
  var endAt = document.getElementById("cb-session-end");
  var announcer = document.getElementById("cb-announcer");
  if (!idle || !box || !stay) { return; }
  var token = document.querySelector('meta[name="csrf-token"]');
  var warnTimer = null;
  var endTimer = null;
  var returnFocus = null;

  function announce(text) {
    if (announcer) { announcer.textContent = text; }
  }

  function warn(deadline) {
    endAt.textContent = deadline.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    returnFocus = document.activeElement;
    box.hidden = false;
    announce(document.getElementById("cb-session-warning-text").textContent);
    stay.focus();
  }

  function schedule() {
    clearTimeout(warnTimer);
    clearTimeout(endTimer);
    var deadline = new Date(Date.now() + idle * 1000);
    warnTimer = setTimeout(function () { warn(deadline); }, (idle - warnBefore) * 1000);
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
      if (!response.ok) { window.location.assign(body.dataset.loginUrl); return; }
      box.hidden = true;
      if (returnFocus && returnFocus.focus) { returnFocus.focus(); }
      announce("You are still logged in.");
      schedule();
    });
  });
  schedule();
}());
