/* Fills a placeholder (data-cb-summary="URL") with the HTML fragment at URL once it is ready,
   so a page that shows the case-series summary never waits for the analysis behind it. */
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("[data-cb-summary]"), function (box) {
    fetch(box.getAttribute("data-cb-summary"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        box.removeAttribute("aria-busy");
      })
      .catch(function () {
        box.removeAttribute("aria-busy");
        box.querySelector("[data-cb-waiting]").textContent = "The summary could not be computed just now.";
      });
  });
}());
