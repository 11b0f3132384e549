/* Export progress page: poll the job's state (kept by the server in a file, so any app
   process can answer) and move the progress bar; when the bundle is ready, show its link and
   move focus to it. Phase changes are announced through the page's status region. */
(function () {
  "use strict";
  var box = document.getElementById("cb-export-job");
  if (!box) { return; }
  var bar = document.getElementById("export-progress");
  var phaseText = document.getElementById("export-phase");
  var count = document.getElementById("export-count");
  var ready = document.getElementById("export-ready");
  var failed = document.getElementById("export-failed");
  var phases = JSON.parse(box.dataset.phases);
  var lastPhase = box.dataset.phase;

  function show(state) {
    bar.value = state.percent;
    bar.textContent = state.percent + "%";
    count.textContent = state.done + " of " + state.total + " records written.";
    /* The status region changes only with the phase, so screen readers are not read every
       number; the progress bar carries the percentage. */
    if (state.phase !== lastPhase) {
      phaseText.textContent = (phases[state.phase] || "") + (state.phase === "done" ? " " + state.message : "");
      lastPhase = state.phase;
    }
    if (state.phase === "done") {
      ready.hidden = false;
      document.getElementById("export-download").focus();
    }
    if (state.phase === "failed") {
      failed.textContent = state.message;
      failed.hidden = false;
    }
  }

  function poll() {
    fetch(box.dataset.stateUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (state) {
        show(state);
        if (!state.finished) { setTimeout(poll, 1000); }
      })
      .catch(function () {
        failed.textContent = "The progress could not be read. Reload this page to try again.";
        failed.hidden = false;
      });
  }
  poll();
}());
