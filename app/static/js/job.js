/* Progress of a background job (export, import, synthetic data): poll the job's state (kept by
   the server in a file, so any app process can answer) and move the progress bar. Phase changes
   are announced through the page's status region. When the job has finished, the page is fetched
   again and its outcome (a download, a summary, the problems) replaces this page's, and focus
   moves to the element of it marked data-focus (as it does when the page is drawn with the job
   already finished). */
(function () {
  "use strict";
  var box = document.querySelector("[data-job-state-url]");
  if (!box) { return; }
  var bar = box.querySelector("progress");
  var phaseText = box.querySelector("[data-job-phase]");
  var count = box.querySelector("[data-job-count]");
  var error = box.querySelector("[data-job-error]");
  var phases = JSON.parse(box.dataset.phases);
  var lastPhase = box.dataset.phase;

  function number(value) { return value.toLocaleString("en-US"); }

  function fail(text) {
    error.textContent = text;
    error.hidden = false;
  }

  function focusOutcome(outcome) {
    var target = outcome.querySelector("[data-focus]");
    if (target) { target.focus(); }
  }

  /* GET `url` (as `accept`), and the body read by `read` ("text" or "json"); a failed status rejects. */
  function get(url, accept, read) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": accept}}).then(function (response) {
      if (!response.ok) { throw new Error("status " + response.status); }
      return response[read]();
    });
  }

  function showOutcome() {
    get(window.location.href, "text/html", "text")
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("job-outcome");
        var here = document.getElementById("job-outcome");
        if (!fresh || !here) { throw new Error("no outcome"); }
        here.replaceWith(fresh);
        focusOutcome(fresh);
      })
      .catch(function () { fail("The job has finished. Reload this page to see its outcome."); });
  }

  function show(state) {
    bar.value = state.percent;
    bar.textContent = state.percent + "%";
    count.textContent = box.dataset.countText.replace("{done}", number(state.done)).replace("{total}", number(state.total));
    /* The status region changes only with the phase, so screen readers are not read every
       number; the progress bar carries the percentage. */
    if (state.phase !== lastPhase) {
      phaseText.textContent = (phases[state.phase] || "") + (state.phase === "done" ? " " + state.message : "");
      lastPhase = state.phase;
    }
  }

  function poll() {
    get(box.dataset.jobStateUrl, "application/json", "json")
      .then(function (state) {
        show(state);
        if (state.finished) { showOutcome(); } else { setTimeout(poll, 1000); }
      })
      .catch(function () { fail("The progress could not be read. Reload this page to try again."); });
  }
  /* A job that finished before its page was drawn (a short one) shows its outcome at once. */
  if (lastPhase === "done" || lastPhase === "failed") {
    focusOutcome(document.getElementById("job-outcome"));
  } else {
    poll();
  }
}());
