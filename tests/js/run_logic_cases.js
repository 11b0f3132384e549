#!/usr/bin/env node
/*
 * Evaluates logic cases with the browser evaluator, for tests/test_logic.py.
 *
 * Usage: node tests/js/run_logic_cases.js CASES.json
 * CASES.json is a list of {tree, values, missing_codes, today}, the trees being what the
 * Python parser produced (app.logic.to_json). Prints a JSON list with one result per case,
 * in order; a case that throws yields {"error": message} so one bad case cannot hide the rest.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const logic = require(path.join(__dirname, '..', '..', 'app', 'static', 'js', 'logic.js'));

const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const results = cases.map((c) => {
  try {
    return logic.evaluate(c.tree, c.values, c.missing_codes, c.today);
  } catch (error) {
    return { error: String(error) };
  }
});
process.stdout.write(JSON.stringify(results));
