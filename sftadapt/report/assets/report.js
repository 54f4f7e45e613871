// sftadapt HTML report: the sample and adapted-set browsers. Vanilla JS, no network, no framework.
// Every value from the data is written with textContent (never innerHTML), so nothing in it can run.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("sftadapt-data").textContent);
  const PAGE = 50;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function options(select, values, labels) {
    select.textContent = "";
    values.forEach(function (v, i) {
      const o = el("option", null, labels ? labels[i] : v);
      o.value = v;
      select.appendChild(o);
    });
  }
  function field(parent, name, value, pre) {
    const d = el("div", "field f-" + name.replace(/ /g, "-"));
    d.appendChild(el("span", "name", name));
    if (pre) {
      const text = value === null || value === undefined ? "" : String(value);
      d.appendChild(el("pre", null, text));
      if (!text.trim()) d.appendChild(el("span", "muted", "(empty or whitespace only: " + text.length + " characters)"));
    }
    else d.appendChild(el("span", null, value === null || value === undefined ? "–" : value));
    parent.appendChild(d);
  }
  function uniq(xs) { return Array.from(new Set(xs)); }
  function fmt(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }

  // A browser: filters -> matching rows -> cards, PAGE at a time.
  function browser(cfg) {
    let shown = PAGE, matches = [];
    const list = document.getElementById(cfg.list), more = document.getElementById(cfg.more);
    document.getElementById(cfg.total).textContent = String(cfg.rows.length);
    function update(reset) {
      if (reset) shown = PAGE;
      const f = cfg.filters(), q = f.q.trim().toLowerCase();
      matches = cfg.rows.filter(function (r) { return cfg.keep(r, f) && (!q || cfg.text(r).indexOf(q) >= 0); });
      document.getElementById(cfg.count).textContent = String(matches.length);
      list.textContent = "";
      matches.slice(0, shown).forEach(function (r) { list.appendChild(cfg.card(r)); });
      more.hidden = matches.length <= shown;
    }
    more.addEventListener("click", function () { shown += PAGE; update(false); });
    cfg.inputs.forEach(function (id) {
      const node = document.getElementById(id);
      node.addEventListener(node.tagName === "INPUT" ? "input" : "change", function () { update(true); });
    });
    update(true);
  }

  // ---- eval samples
  const runs = DATA.runs, problems = DATA.problems;
  function problemOf(s) { const b = problems[s.b] || {}; return b[s.p] || [null, null]; }
  options(document.getElementById("f-run"), ["*"].concat(runs.map(function (r, i) { return String(i); })),
          ["all arms"].concat(runs.map(function (r) { return r.label; })));
  const benches = uniq(DATA.samples.map(function (s) { return s.b; }));
  options(document.getElementById("f-bench"), ["*"].concat(benches), ["all benchmarks"].concat(benches));
  options(document.getElementById("f-verdict"), ["*"].concat(DATA.verdicts),
          ["all verdicts"].concat(DATA.verdicts.map(function (v) { return v.replace("_", " "); })));
  browser({
    rows: DATA.samples, list: "sample-list", more: "sample-more", count: "sample-count", total: "sample-total",
    inputs: ["f-run", "f-bench", "f-verdict", "f-search"],
    filters: function () {
      return { run: document.getElementById("f-run").value, bench: document.getElementById("f-bench").value,
               verdict: document.getElementById("f-verdict").value, q: document.getElementById("f-search").value };
    },
    keep: function (s, f) {
      return (f.run === "*" || String(s.r) === f.run) && (f.bench === "*" || s.b === f.bench) &&
             (f.verdict === "*" || s.v === f.verdict);
    },
    text: function (s) {
      if (s._q === undefined) {
        const p = problemOf(s);
        s._q = [s.p, p[0], p[1], s.t, s.x].join("\n").toLowerCase();
      }
      return s._q;
    },
    card: function (s) {
      const p = problemOf(s), c = el("div", "card sample");
      c.dataset.verdict = s.v;
      const head = el("div", "head");
      head.appendChild(el("span", "verdict v-" + s.v, s.v.replace("_", " ")));
      head.appendChild(el("span", null, runs[s.r].label));
      head.appendChild(el("span", null, s.b));
      head.appendChild(el("span", null, s.p + " #" + s.i));
      head.appendChild(el("span", null, "rule: " + (s.u || "–")));
      head.appendChild(el("span", null, (s.n === null || s.n === undefined ? "?" : s.n) + " tokens, " + (s.f || "?")));
      c.appendChild(head);
      field(c, "problem", p[0] === null ? "(problem text not available)" : p[0], true);
      field(c, "gold", p[1]);
      field(c, "extracted", s.x);
      field(c, "response", s.t, true);
      return c;
    },
  });

  // ---- adapted sets
  const sets = uniq(DATA.adapted.map(function (r) { return r.s; }));
  options(document.getElementById("a-set"), ["*"].concat(sets), ["all sets"].concat(sets));
  const origins = uniq(DATA.adapted.map(function (r) { return r.o; }));
  options(document.getElementById("a-origin"), ["*"].concat(origins), ["all origins"].concat(origins));
  browser({
    rows: DATA.adapted, list: "adapted-list", more: "adapted-more", count: "adapted-count", total: "adapted-total",
    inputs: ["a-set", "a-origin", "a-search"],
    filters: function () {
      return { set: document.getElementById("a-set").value, origin: document.getElementById("a-origin").value,
               q: document.getElementById("a-search").value };
    },
    keep: function (r, f) { return (f.set === "*" || r.s === f.set) && (f.origin === "*" || r.o === f.origin); },
    text: function (r) {
      if (r._q === undefined) r._q = [r.id, r.q, r.g, r.t].join("\n").toLowerCase();
      return r._q;
    },
    card: function (r) {
      const c = el("div", "card adapted-row"), head = el("div", "head");
      head.appendChild(el("span", "name", r.s));
      head.appendChild(el("span", null, r.id));
      head.appendChild(el("span", null, "origin: " + r.o));
      head.appendChild(el("span", null, "gap: " + fmt(r.gap, 3)));
      head.appendChild(el("span", null, "pass rate: " + fmt(r.pr, 2)));
      head.appendChild(el("span", null, r.a.length + " attempts"));
      c.appendChild(head);
      field(c, "problem", r.q, true);
      field(c, "gold", r.g);
      field(c, "training response", r.t, true);
      if (r.a.length) {
        const det = el("details"), t = el("table", "attempts"), hr = el("tr");
        det.appendChild(el("summary", null, "attempts"));
        ["stage", "#", "verdict", "extracted", "rule", "why", "text"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
        t.appendChild(hr);
        r.a.forEach(function (a) {
          const tr = el("tr");
          [a.st, a.i, a.v, a.x, a.u, a.w].forEach(function (v) { tr.appendChild(el("td", null, v === null ? "–" : v)); });
          const td = el("td");
          td.appendChild(el("pre", null, a.t));
          tr.appendChild(td);
          t.appendChild(tr);
        });
        det.appendChild(t);
        c.appendChild(det);
      }
      return c;
    },
  });
})();
