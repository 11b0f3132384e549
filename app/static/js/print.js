/* A "Print" button (data-cb-print) opens the browser's print dialog; the print stylesheet
   in casebook.css leaves out navigation and buttons. */
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("[data-cb-print]"), function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
}());
