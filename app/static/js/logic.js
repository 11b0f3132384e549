/*
 * Casebook logic evaluator for the browser.
 *
 * Evaluates the JSON syntax tree produced on the server by app.logic.to_json() (shape
 * documented in app/logic/nodes.py). It is a line-for-line mirror of
 * app/logic/evaluator.py, whose docstring states the semantics; tests/test_logic.py
 * runs the same cases through both and fails if they ever disagree. Nothing is eval()-ed.
 *
 *   CasebookLogic.evaluate(tree, values, missingCodes, today)
 *     values: {field: string | string[] (checkbox) | number | boolean | null}
 *     missingCodes: array of codes such as ['UNK', 'NR']; today: 'YYYY-MM-DD' (default:
 *     the browser's local date). Returns '' (blank), a boolean, a number or a string.
 *   CasebookLogic.isTrue(result)    true only for true or a non-zero number/numeric string
 *   CasebookLogic.isBlank(result)   '' / null / undefined
 *   CasebookLogic.formatNumber(n)   String(n); the server's format_number() matches it
 *
 * Plain ES2017, no dependencies; also loads under Node (module.exports) for the tests.
 */
(function (root) {
  'use strict';

  const NUMERIC = /^-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)$/;
  const DATE = /^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?$/;
  const ORDER = {
    '<': (x, y) => x < y,
    '<=': (x, y) => x <= y,
    '>': (x, y) => x > y,
    '>=': (x, y) => x >= y,
  };
  const SECONDS_PER = { d: 86400, h: 3600, m: 60, s: 1 };
  const DAYS_PER = { y: 365.2425, M: 30.44 };
  // See evaluator.py: absorbs binary error such as 1.005 * 100 = 100.49999999999999.
  const ROUND_TOLERANCE = 1e-12;
  const ROUND_TOLERANCE_CAP = 1e-6;
  const MAX_EXACT = 4503599627370496; // 2^52

  /** A field value that is a missing code: text for equality, blank for everything else. */
  function Missing(code) {
    this.code = code;
  }

  function has(object, key) {
    return object !== null && object !== undefined && Object.prototype.hasOwnProperty.call(object, key);
  }

  function formatNumber(number) {
    return String(number);
  }

  function isBlank(result) {
    return result === '' || result === null || result === undefined;
  }

  function isTrue(result) {
    if (typeof result === 'boolean') return result;
    if (typeof result === 'number') return isFinite(result) && result !== 0;
    if (typeof result === 'string' && NUMERIC.test(result)) return Number(result) !== 0;
    return false;
  }

  /** Non-finite results become blank; + 0 turns -0 into 0. */
  function finite(number) {
    return isFinite(number) ? number + 0 : null;
  }

  function rawText(raw) {
    if (raw === null || raw === undefined) return '';
    if (typeof raw === 'boolean') return raw ? '1' : '0';
    if (typeof raw === 'number') return isFinite(raw) ? formatNumber(raw + 0) : '';
    return typeof raw === 'string' ? raw : String(raw);
  }

  function scalar(raw, missingCodes) {
    if (Array.isArray(raw)) {
      const joined = raw.map(rawText).join(',');
      return joined === '' ? null : joined;
    }
    if (typeof raw === 'boolean') return raw;
    if (typeof raw === 'number') {
      const number = finite(raw);
      if (number !== null && missingCodes.has(formatNumber(number))) return new Missing(formatNumber(number));
      return number;
    }
    const text = rawText(raw);
    if (text === '') return null;
    return missingCodes.has(text) ? new Missing(text) : text;
  }

  function text(value) {
    if (value === null) return '';
    if (value instanceof Missing) return value.code;
    if (typeof value === 'boolean') return value ? '1' : '0';
    if (typeof value === 'number') return formatNumber(value);
    return value;
  }

  function number(value) {
    if (typeof value === 'boolean') return value ? 1 : 0;
    if (typeof value === 'number') return value;
    if (typeof value === 'string' && NUMERIC.test(value)) return Number(value);
    return null;
  }

  function equal(left, right) {
    const x = number(left instanceof Missing ? left.code : left);
    const y = number(right instanceof Missing ? right.code : right);
    if (x !== null && y !== null) return x === y;
    return text(left) === text(right);
  }

  function order(op, left, right) {
    if (left === null || right === null || left instanceof Missing || right instanceof Missing) return false;
    const x = number(left);
    const y = number(right);
    if (x !== null && y !== null) return ORDER[op](x, y);
    return ORDER[op](text(left), text(right));
  }

  function arithmetic(op, left, right) {
    const x = number(left);
    const y = number(right);
    if (x === null || y === null) return null;
    if (op === '+') return finite(x + y);
    if (op === '-') return finite(x - y);
    if (op === '*') return finite(x * y);
    if (op === '/') return y === 0 ? null : finite(x / y);
    return power(x, y);
  }

  /** x ^ y; whole exponents by repeated squaring so that the server agrees to the bit. */
  function power(x, y) {
    if (!Number.isInteger(y)) return finite(Math.pow(x, y));
    let result = 1;
    let base = x;
    let remaining = Math.abs(y);
    while (remaining > 0) {
      if (remaining % 2 === 1) result *= base;
      base *= base;
      remaining = Math.floor(remaining / 2);
    }
    if (y < 0) return result === 0 ? null : finite(1 / result);
    return finite(result);
  }

  function round(args, mode) {
    const x = number(args[0]);
    const places = args.length > 1 ? number(args[1]) : 0;
    if (x === null || places === null) return null;
    const digits = Math.max(-308, Math.min(308, Math.trunc(places)));
    const scale = Number('1e' + Math.abs(digits));
    const scaled = digits >= 0 ? Math.abs(x) * scale : Math.abs(x) / scale;
    if (!(scaled < MAX_EXACT)) return finite(x);
    const tolerance = Math.min(scaled * ROUND_TOLERANCE, ROUND_TOLERANCE_CAP);
    let whole;
    if (mode === 'round') whole = Math.floor(scaled + 0.5 + tolerance);
    else if (mode === 'roundup') whole = Math.ceil(scaled - tolerance);
    else whole = Math.floor(scaled + tolerance);
    const result = digits >= 0 ? whole / scale : whole * scale;
    return finite(x < 0 ? -result : result);
  }

  function aggregate(args, kind) {
    const numbers = args.map(number).filter((n) => n !== null);
    if (numbers.length === 0) return null;
    if (kind === 'min') return finite(Math.min.apply(null, numbers));
    if (kind === 'max') return finite(Math.max.apply(null, numbers));
    let total = 0;
    for (const n of numbers) total += n;
    return finite(kind === 'sum' ? total : total / numbers.length);
  }

  function asciiLower(value) {
    return value.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
  }

  const FUNCTIONS = {
    round: (args) => round(args, 'round'),
    roundup: (args) => round(args, 'roundup'),
    rounddown: (args) => round(args, 'rounddown'),
    abs: (args) => {
      const x = number(args[0]);
      return x === null ? null : finite(Math.abs(x));
    },
    min: (args) => aggregate(args, 'min'),
    max: (args) => aggregate(args, 'max'),
    sum: (args) => aggregate(args, 'sum'),
    mean: (args) => aggregate(args, 'mean'),
    sqrt: (args) => {
      const x = number(args[0]);
      return x === null || x < 0 ? null : finite(Math.sqrt(x));
    },
    isblankormissingcode: (args) => args[0] === null || args[0] instanceof Missing,
    isnumber: (args) => {
      if (typeof args[0] === 'string') return NUMERIC.test(args[0]);
      return typeof args[0] === 'number';
    },
    contains: (args) => asciiLower(text(args[0])).indexOf(asciiLower(text(args[1]))) !== -1,
  };

  function daysFromCivil(year, month, day) {
    const y = year - (month <= 2 ? 1 : 0);
    const era = Math.floor(y / 400);
    const yearOfEra = y - era * 400;
    const dayOfYear = Math.floor((153 * ((month + 9) % 12) + 2) / 5) + day - 1;
    const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
    return era * 146097 + dayOfEra - 719468;
  }

  function daysInMonth(year, month) {
    if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
    return [4, 6, 9, 11].indexOf(month) !== -1 ? 30 : 31;
  }

  function seconds(value, today) {
    if (value === 'today') return today * 86400;
    const match = typeof value === 'string' ? DATE.exec(value) : null;
    if (match === null) return null;
    const [year, month, day, hour, minute, second] = match.slice(1).map((part) => Number(part || 0));
    if (!(month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month))) return null;
    if (hour > 23 || minute > 59 || second > 59) return null;
    return daysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
  }

  function datediff(args, today) {
    const start = seconds(args[0], today);
    const end = seconds(args[1], today);
    const unit = args[2];
    if (start === null || end === null || typeof unit !== 'string') return null;
    const difference = end - start;
    let result;
    if (has(DAYS_PER, unit)) result = difference / 86400 / DAYS_PER[unit];
    else if (has(SECONDS_PER, unit)) result = difference / SECONDS_PER[unit];
    else return null;
    const signed = args.length > 3 && isTrue(args[3]);
    return finite(signed ? result : Math.abs(result));
  }

  function todayDays(today) {
    const match = typeof today === 'string' ? DATE.exec(today) : null;
    if (match) return daysFromCivil(Number(match[1]), Number(match[2]), Number(match[3]));
    const now = new Date();
    return daysFromCivil(now.getFullYear(), now.getMonth() + 1, now.getDate());
  }

  function Evaluation(values, missingCodes, today) {
    this.values = values || {};
    this.missingCodes = missingCodes;
    this.today = today;
  }

  Evaluation.prototype.raw = function (name) {
    return has(this.values, name) ? this.values[name] : null;
  };

  Evaluation.prototype.ticked = function (name) {
    const raw = this.raw(name);
    if (Array.isArray(raw)) return raw.map(rawText);
    const value = rawText(raw);
    return value === '' ? [] : value.split(',');
  };

  Evaluation.prototype.run = function (node) {
    switch (node.t) {
      case 'field':
        return scalar(this.raw(node.name), this.missingCodes);
      case 'checkbox':
        return this.ticked(node.name).indexOf(node.code) !== -1 ? '1' : '0';
      case 'str':
        return node.v === '' ? null : node.v;
      case 'num':
      case 'bool':
        return node.v;
      case 'op':
        return this.operator(node.op, node.args);
      case 'fn':
        return this.call(node.name, node.args);
      default:
        throw new TypeError('not a logic expression: ' + JSON.stringify(node));
    }
  };

  Evaluation.prototype.call = function (name, argNodes) {
    if (name === 'if') {
      return this.run(isTrue(this.run(argNodes[0])) ? argNodes[1] : argNodes[2]);
    }
    const args = argNodes.map((arg) => this.run(arg));
    if (name === 'datediff') return datediff(args, this.today);
    return FUNCTIONS[name](args);
  };

  Evaluation.prototype.operator = function (op, args) {
    if (op === 'and') return isTrue(this.run(args[0])) && isTrue(this.run(args[1]));
    if (op === 'or') return isTrue(this.run(args[0])) || isTrue(this.run(args[1]));
    if (op === 'not') return !isTrue(this.run(args[0]));
    if (op === 'neg') {
      const x = number(this.run(args[0]));
      return x === null ? null : finite(-x);
    }
    const left = this.run(args[0]);
    const right = this.run(args[1]);
    if (op === '=') return equal(left, right);
    if (op === '<>') return !equal(left, right);
    if (has(ORDER, op)) return order(op, left, right);
    return arithmetic(op, left, right);
  };

  function evaluate(tree, values, missingCodes, today) {
    const evaluation = new Evaluation(values, new Set((missingCodes || []).map(String)), todayDays(today));
    const result = evaluation.run(tree);
    return result === null || result instanceof Missing ? '' : result;
  }

  const api = { evaluate: evaluate, isTrue: isTrue, isBlank: isBlank, formatNumber: formatNumber };
  if (typeof module !== 'undefined' && module.exports) module.exports = api;
  else root.CasebookLogic = api;
})(typeof window !== 'undefined' ? window : this);
