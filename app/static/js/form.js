/* Casebook data-entry form: live branching, calculated fields, missing-data codes,
   data-quality warnings next to their field, and a question before leaving with unsaved
   changes. The logic trees come from the server's parser (JSON in #cb-logic) and are evaluated by logic.js with the same rules as the
   server's evaluator, in the same order as app/records/services.py:apply_logic. */
(function () {
  "use strict";
  var form = document.getElementById("cb-form");
  if (!form || !window.CasebookLogic) { return; }
  var Logic = window.CasebookLogic;
  var logic = JSON.parse(document.getElementById("cb-logic").textContent);
  var context = JSON.parse(document.getElementById("cb-context").textContent);
  var codes = JSON.parse(document.getElementById("cb-missing-codes").textContent);
  var rules = JSON.parse(document.getElementById("cb-rules").textContent);
  var suffix = form.dataset.missingSuffix;
  var rows = Array.prototype.slice.call(form.querySelectorAll(".cb-field[data-field]"));
  var names = rows.map(function (row) { return row.dataset.field; });

  function inputsOf(name) {
    return Array.prototype.slice.call(form.querySelectorAll('[name="' + name + '"]'));
  }

  function missingCodeOf(name) {
    var select = form.elements[name + suffix];
    return select && select.value ? select.value : "";
  }

  function valueOf(name) {
    var code = missingCodeOf(name);
    if (code) { return code; }
    var inputs = inputsOf(name);
    if (!inputs.length) { return ""; }
    if (inputs[0].type === "checkbox") {
      return inputs.filter(function (i) { return i.checked; }).map(function (i) { return i.value; });
    }
    if (inputs[0].type === "radio") {
      var checked = inputs.filter(function (i) { return i.checked; })[0];
      return checked ? checked.value : "";
    }
    return inputs[0].value;
  }

  function formatNumber(value) {
    if (value === null || value === "" || value === undefined || typeof value === "boolean") { return ""; }
    var n = Number(value);
    if (!isFinite(n)) { return ""; }
    return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(10)));
  }

  var NUMERIC = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

  /* Same rule as _number_or_none in app/records/services.py. */
  function numberOrBlank(value) {
    if (typeof value === "number" && isFinite(value)) { return value; }
    if (typeof value === "string" && NUMERIC.test(value.trim())) { return Number(value.trim()); }
    return "";
  }

  /* Link (or unlink) a message to the field's input, or to the fieldset of a choice group,
     so a screen reader reads it with the field (WCAG 1.3.1, 3.3.1). */
  function describedBy(row, id, on) {
    var group = row.querySelector("fieldset");
    var targets = group ? [group] : inputsOf(row.dataset.field);
    targets.forEach(function (target) {
      var ids = (target.getAttribute("aria-describedby") || "").split(/\s+/).filter(function (x) { return x && x !== id; });
      if (on) { ids.push(id); }
      if (ids.length) { target.setAttribute("aria-describedby", ids.join(" ")); } else { target.removeAttribute("aria-describedby"); }
    });
  }

  function update() {
    var data = {};
    names.forEach(function (name) { data[name] = valueOf(name); });
    var hidden = [];
    for (var pass = 0; pass <= names.length; pass++) {
      var scope = Object.assign({}, context, data);
      hidden.forEach(function (name) { scope[name] = ""; });
      Object.keys(logic).forEach(function (name) {
        if (logic[name].calc) {
          scope[name] = data[name] = numberOrBlank(Logic.evaluate(logic[name].calc, scope, codes));
        }
      });
      var nowHidden = names.filter(function (name) {
        return logic[name] && logic[name].branching && !Logic.isTrue(Logic.evaluate(logic[name].branching, scope, codes));
      });
      if (nowHidden.join(",") === hidden.join(",")) { break; }
      hidden = nowHidden;
    }
    var finalScope = Object.assign({}, context, data);
    hidden.forEach(function (name) { finalScope[name] = ""; });
    rows.forEach(function (row) {
      var name = row.dataset.field;
      row.hidden = hidden.indexOf(name) !== -1;
      if (logic[name] && logic[name].calc) {
        inputsOf(name).forEach(function (input) { input.value = formatNumber(data[name]); });
      }
      var warning = document.getElementById(name + "-warning");
      if (warning) {
        var messages = rules.filter(function (rule) {
          return rule.field === name && Logic.isTrue(Logic.evaluate(rule.tree, finalScope, codes));
        }).map(function (rule) { return "Check: " + rule.label + "."; });
        var text = messages.join(" ");
        if (warning.textContent !== text) { warning.textContent = text; }
        warning.hidden = messages.length === 0;
        describedBy(row, warning.id, messages.length > 0);
      }
      var coded = missingCodeOf(name) !== "";
      inputsOf(name).forEach(function (input) {
        if (!(logic[name] && logic[name].calc)) { input.disabled = coded; }
      });
    });
  }

  /* Unsaved changes are never lost silently. A page shown again after a refused save
     (errors, warnings, a conflict) holds values that are not saved either. */
  var dirty = form.dataset.unsaved === "true";
  var leaving = "You have unsaved changes on this form. Leave without saving them?";
  function changed() { dirty = true; update(); }
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  form.addEventListener("submit", function () { dirty = false; });
  /* In-app links ask with the app's own words; other ways out (address bar, reload,
     closing the tab, another form on the page) get the browser's beforeunload prompt. */
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[href]") : null;
    if (!dirty || !link || link.target || link.hasAttribute("download") || event.defaultPrevented) { return; }
    var href = link.getAttribute("href");
    if (href.charAt(0) === "#") { return; }
    if (window.confirm(leaving)) { dirty = false; } else { event.preventDefault(); }
  });
  window.addEventListener("beforeunload", function (event) {
    if (dirty) { event.preventDefault(); event.returnValue = leaving; }
  });
  update();
  var summary = document.getElementById("cb-error-summary");
  if (summary) { summary.focus(); }
}());
