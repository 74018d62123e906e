// The recman console's script: confirmations before actions (posted to the
// API with the session's CSRF token), the live part of a page refreshed from
// the server when an event arrives over Server-Sent Events, running clocks.
// It talks to this server only (the Content-Security-Policy enforces it).
(function () {
  'use strict';
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') : '';
  var offset = 0; // the server's clock minus ours

  function syncClock(root) {
    var n = root.querySelector('[data-now]');
    if (n) offset = Number(n.getAttribute('data-now')) - Date.now();
  }

  function fmt(ms) {
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    if (ms < 3600000) return Math.floor(ms / 60000) + ' min ' + Math.floor((ms % 60000) / 1000) + ' s';
    return Math.floor(ms / 3600000) + ' h ' + Math.floor((ms % 3600000) / 60000) + ' min';
  }

  function tick() {
    var now = Date.now() + offset;
    document.querySelectorAll('.clock[data-since]').forEach(function (c) {
      c.textContent = fmt(Math.max(0, Math.round(now - Number(c.getAttribute('data-since')))));
    });
  }

  function toast(text, bad) {
    var t = document.getElementById('toast');
    if (!t) return;
    t.textContent = text;
    t.className = bad ? 'show bad' : 'show';
    setTimeout(function () { t.className = ''; }, 6000);
  }

  // The confirmation box.
  var pending = null;
  var box = document.getElementById('confirm');
  function ask(text, then) {
    document.getElementById('confirm-text').textContent = text;
    pending = then;
    box.hidden = false;
    document.getElementById('confirm-yes').focus();
  }
  function closeBox() { box.hidden = true; pending = null; }
  document.getElementById('confirm-no').addEventListener('click', closeBox);
  document.getElementById('confirm-yes').addEventListener('click', function () {
    var then = pending;
    closeBox();
    if (then) then();
  });

  function send(b) {
    var body = JSON.parse(b.getAttribute('data-body') || '{}');
    if (b.hasAttribute('data-request-id')) {
      body.request_id = 'console-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 10);
    }
    fetch(b.getAttribute('data-url'), {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) { return { ok: r.ok, status: r.status, j: j }; });
    }).then(function (x) {
      if (!x.ok) {
        toast('Refused (' + x.status + '): ' + ((x.j.error && x.j.error.message) || 'no reason given'), true);
        return;
      }
      if (b.hasAttribute('data-follow') && x.j.job_id) {
        location.href = '/job/' + encodeURIComponent(x.j.job_id);
        return;
      }
      toast('Accepted' + (x.j.job_id ? ': job ' + x.j.job_id : ''));
      refresh();
    }, function (e) { toast('Not sent: ' + e, true); });
  }

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest ? ev.target.closest('button.act') : null;
    if (!b) return;
    ask(b.getAttribute('data-confirm') || 'Are you sure?', function () { send(b); });
  });

  // The live part: refreshed (at most every 150 ms) when an event arrives.
  var live = document.getElementById('live');
  var timer = null;
  var es = null;
  function ended(root) { return !!root.querySelector('[data-terminal="1"]'); }
  function refresh() {
    if (!live || timer) return;
    timer = setTimeout(function () {
      timer = null;
      fetch(live.getAttribute('data-src'), { credentials: 'same-origin' }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        syncClock(live);
        tick();
        live.setAttribute('data-refreshed', String(Number(live.getAttribute('data-refreshed') || '0') + 1));
        if (ended(live) && es) { es.close(); es = null; live.setAttribute('data-live', 'ended'); }
      });
    }, 150);
  }
  if (live && live.getAttribute('data-stream') && !ended(live)) {
    es = new EventSource(live.getAttribute('data-stream'));
    (live.getAttribute('data-kinds') || '').split(' ').forEach(function (k) {
      if (k) es.addEventListener(k, refresh);
    });
    es.onmessage = refresh;
    es.onopen = function () { live.setAttribute('data-live', 'open'); };
    es.onerror = function () { if (es && es.readyState === 2) live.setAttribute('data-live', 'closed'); };
  }

  syncClock(document);
  tick();
  setInterval(tick, 250);
})();
