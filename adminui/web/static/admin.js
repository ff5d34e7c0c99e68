// atlassian-proxy admin pages: progressive enhancement only. Every page
// works as plain HTML forms without this script; with it, the dashboard
// refreshes itself, countdowns tick, destructive actions ask in a dialog,
// the new API token has a copy button, and a credential check keeps the
// typed token in its field.
(function () {
  'use strict';

  // fragment parses server-rendered HTML into nodes (scripts never run).
  function fragment(html) {
    return Array.from(new DOMParser().parseFromString(html, 'text/html').body.childNodes);
  }

  // span mirrors the server's wording: "42 s", "3 min 5 s", "2 h".
  function span(ms) {
    var s = Math.round(ms / 1000);
    if (s < 60) return s + ' s';
    var m = Math.floor(s / 60);
    if (m < 60) return (s % 60 === 0 || m >= 10) ? m + ' min' : m + ' min ' + (s % 60) + ' s';
    var h = Math.floor(m / 60);
    return h < 48 ? h + ' h' : Math.floor(h / 24) + ' days';
  }

  var countdownEls = [];
  function countdowns(root) {
    countdownEls = countdownEls.filter(function (el) { return el.isConnected; });
    root.querySelectorAll('[data-countdown]').forEach(function (el) { countdownEls.push(el); });
  }
  function tickCountdowns() {
    var now = Date.now();
    countdownEls.forEach(function (el) {
      var left = Date.parse(el.getAttribute('data-countdown')) - now;
      el.textContent = left > 0 ? 'in ' + span(left) : 'now';
    });
  }

  // morph makes the live node from look like to, changing only what
  // differs, so that the elements that stay (the dashboard's card links)
  // keep the keyboard focus and a screen reader's place.
  function morph(from, to) {
    if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
      from.replaceWith(to);
      return;
    }
    if (from.nodeType !== Node.ELEMENT_NODE) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    Array.from(from.attributes).forEach(function (a) {
      if (!to.hasAttribute(a.name)) from.removeAttribute(a.name);
    });
    Array.from(to.attributes).forEach(function (a) {
      if (from.getAttribute(a.name) !== a.value) from.setAttribute(a.name, a.value);
    });
    morphChildren(from, Array.from(to.childNodes));
  }
  function morphChildren(parent, nodes) {
    morphNodes(parent, Array.from(parent.childNodes), nodes);
  }
  function morphNodes(parent, old, nodes) {
    nodes.forEach(function (n, i) {
      if (i < old.length) morph(old[i], n);
      else parent.appendChild(n);
    });
    old.slice(nodes.length).forEach(function (n) { n.remove(); });
  }

  // update puts nodes into el in place (see morph). Should the focused
  // element have gone all the same (the part around it changed shape), the
  // focus goes to the element now in its place.
  var focusable = 'a[href], button, input, select, textarea, [tabindex]';
  function update(el, nodes) {
    var active = document.activeElement;
    var at = active && active !== el && el.contains(active) ? Array.from(el.querySelectorAll(focusable)).indexOf(active) : -1;
    // The parser drops the whitespace a fragment starts with: whitespace
    // between the top-level parts does not count.
    var blank = function (n) { return n.nodeType === Node.TEXT_NODE && !n.nodeValue.trim(); };
    var old = Array.from(el.childNodes);
    old.filter(blank).forEach(function (n) { n.remove(); });
    morphNodes(el, old.filter(function (n) { return !blank(n); }), nodes.filter(function (n) { return !blank(n); }));
    if (at >= 0 && !el.contains(document.activeElement)) {
      var again = el.querySelectorAll(focusable)[at];
      if (again) again.focus({ preventScroll: true });
    }
  }

  // <div data-refresh="URL" data-interval="ms">: brought up to date every
  // interval from a fresh fragment while the tab is visible (in place: the
  // keyboard focus stays). A lost session reloads the page, which then
  // leads to the login page.
  function refresh(el) {
    var url = el.getAttribute('data-refresh');
    var every = parseInt(el.getAttribute('data-interval'), 10) || 5000;
    var busy = false;
    var stamp = document.getElementById('updated');
    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } })
        .then(function (res) {
          if (res.status === 401 || res.status === 403) {
            window.location.reload();
            return null;
          }
          if (!res.ok) throw new Error('HTTP ' + res.status);
          return res.text();
        })
        .then(function (html) {
          if (html === null) return;
          update(el, fragment(html));
          el.removeAttribute('data-stale');
          countdowns(el);
          tickCountdowns();
          if (stamp) stamp.textContent = 'Live · updated ' + new Date().toLocaleTimeString();
        })
        .catch(function () {
          el.setAttribute('data-stale', '');
          if (stamp) stamp.textContent = 'Cannot reach the server; retrying…';
        })
        .then(function () { busy = false; });
    }
    if (stamp) stamp.textContent = 'Live · refreshes every ' + Math.round(every / 1000) + ' s';
    setInterval(tick, every);
    document.addEventListener('visibilitychange', tick);
  }

  // <form data-confirm="question">: asks first; the server asks on a page
  // of its own unless the form says confirmed=1.
  function confirmable(form) {
    form.addEventListener('submit', function (ev) {
      if (!window.confirm(form.getAttribute('data-confirm'))) {
        ev.preventDefault();
        return;
      }
      if (!form.querySelector('input[name="confirmed"]')) {
        var ok = document.createElement('input');
        ok.type = 'hidden';
        ok.name = 'confirmed';
        ok.value = '1';
        form.appendChild(ok);
      }
    });
  }

  // <button data-copy="input-id">: copies the input's value.
  function copyButton(btn) {
    var input = document.getElementById(btn.getAttribute('data-copy'));
    if (!input) return;
    btn.hidden = false;
    btn.addEventListener('click', function () {
      var done = function () {
        btn.textContent = 'Copied';
        setTimeout(function () { btn.textContent = 'Copy'; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () { input.select(); });
        return;
      }
      input.select();
      try { if (document.execCommand('copy')) done(); } catch (e) { /* selected: the user copies */ }
    });
    input.addEventListener('focus', function () { input.select(); });
  }

  // <button data-check="URL"> in a form: posts the form there and shows the
  // verdict in #check-result without reloading, so the token stays typed.
  function checkButton(btn) {
    var form = btn.form;
    var out = document.getElementById('check-result');
    if (!form || !out) return;
    btn.addEventListener('click', function (ev) {
      ev.preventDefault();
      var label = btn.textContent;
      btn.disabled = true;
      btn.textContent = 'Checking…';
      fetch(btn.getAttribute('data-check'), {
        method: 'POST',
        credentials: 'same-origin',
        body: new URLSearchParams(new FormData(form))
      })
        .then(function (res) {
          if (res.status === 401 || res.status === 403) {
            window.location.reload();
            return null;
          }
          return res.text();
        })
        .then(function (html) {
          if (html !== null) out.replaceChildren.apply(out, fragment(html));
        })
        .catch(function () {
          out.textContent = 'The server could not be reached.';
        })
        .then(function () {
          btn.disabled = false;
          btn.textContent = label;
        });
    });
  }

  function init() {
    document.querySelectorAll('[data-refresh]').forEach(refresh);
    document.querySelectorAll('form[data-confirm]').forEach(confirmable);
    document.querySelectorAll('button[data-copy]').forEach(copyButton);
    document.querySelectorAll('button[data-check]').forEach(checkButton);
    countdowns(document);
    if (countdownEls.length || document.querySelector('[data-refresh]')) setInterval(tickCountdowns, 1000);
  }

  // A new API token is shown once: when its page is left, or shown again
  // from the browser's back/forward cache, the token goes away.
  function forgetNewToken() {
    var panel = document.getElementById('new-token-panel');
    if (panel) panel.remove();
  }
  window.addEventListener('pagehide', forgetNewToken);
  window.addEventListener('pageshow', function (ev) { if (ev.persisted) forgetNewToken(); });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
