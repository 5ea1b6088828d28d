// MRFC-AS operator console. Plain JavaScript, no libraries, no build step.
//
// Every datum comes from the token-protected REST API (/api/v1) and its event stream; the
// pages served by the MRFC-AS are empty shells. What is shown changes only when the server
// says so: an action's button waits for the change event, it never updates the view itself.
// Text from the server is always set with textContent, never parsed as markup.
(() => {
  'use strict';

  const body = document.body;
  const BASE = body.dataset.base || '/console';
  const API = body.dataset.api || '/api/v1';
  const TOKEN_KEY = 'mrfc-console.token';
  const FLASH_KEY = 'mrfc-console.flash';
  // How long a pending action waits for its event before saying so.
  const CONFIRM_TIMEOUT_MS = 15000;

  // The SSE event names published by the focus (app.service.events.ChangeKind and the
  // MRFP-driven participant.talking / participant.media).
  const KINDS = [
    'conference.created', 'conference.locked', 'conference.unlocked', 'conference.ended',
    'participant.dialing', 'participant.joined', 'participant.status', 'participant.muted',
    'participant.unmuted', 'participant.left', 'participant.kicked', 'participant.talking',
    'participant.media',
  ];

  // ---- small helpers ------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('data-')) node.setAttribute(key, value === true ? '' : value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function message(text, kind) {
    const box = $('message');
    if (!box) return;
    box.textContent = text || '';
    box.className = 'message' + (kind ? ' ' + kind : '');
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  function clock(date) {
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function age(fromIso, now) {
    const secs = Math.max(0, Math.floor((now - Date.parse(fromIso)) / 1000));
    const h = Math.floor(secs / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = secs % 60;
    return h > 0 ? `${h}h ${pad(m)}m` : m > 0 ? `${m}m ${pad(s)}s` : `${s}s`;
  }

  function when(iso) {
    if (!iso) return '—';
    const date = new Date(iso);
    const today = new Date();
    return date.toDateString() === today.toDateString()
      ? clock(date) : `${date.toISOString().slice(0, 10)} ${clock(date)}`;
  }

  // ---- token and API ------------------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function signOut(note) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (note) sessionStorage.setItem(FLASH_KEY, note);
    window.location.assign(BASE + '/');
  }

  class ApiError extends Error {
    constructor(status, code, text) {
      super(text);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, payload) {
    const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    const resp = await fetch(API + path, init);
    if (resp.status === 401) {
      signOut('The token was refused (revoked or mistyped); sign in again.');
      throw new ApiError(401, 'unauthorized', 'signed out');
    }
    if (!resp.ok) {
      let code = 'error';
      let text = `${resp.status} ${resp.statusText}`;
      try {
        const err = (await resp.json()).error;
        code = err.code;
        text = err.message;
      } catch (_) { /* not our JSON error shape */ }
      throw new ApiError(resp.status, code, text);
    }
    return resp.status === 204 ? null : resp.json();
  }

  const enc = encodeURIComponent;

  // Who is signed in; admin-only controls stay disabled for a `read` token (the API refuses
  // them with 403 anyway: this only spares the operator the attempt).
  const session = { name: '', scope: 'read' };
  const isAdmin = () => session.scope === 'admin';

  async function loadSession() {
    const me = await api('GET', '/whoami');
    session.name = me.name;
    session.scope = me.scope;
    $('who').textContent = `${me.name} (${me.scope})`;
    $('signout').hidden = false;
    body.dataset.scope = me.scope;
    for (const node of document.querySelectorAll('[data-admin]')) {
      node.disabled = !isAdmin() || node.dataset.busy === '1' || node.dataset.off === '1';
      node.title = isAdmin() ? '' : 'needs an admin token';
    }
  }

  function adminButton(label, attrs) {
    const button = el('button', { type: 'button', 'data-admin': true, ...attrs, text: label });
    button.disabled = !isAdmin();
    if (!isAdmin()) button.title = 'needs an admin token';
    return button;
  }

  // A button whose action is confirmed by a later event: busy until `settle()` or timeout.
  function pending(button, busyLabel) {
    const label = button.textContent;
    button.dataset.busy = '1';
    button.disabled = true;
    button.textContent = busyLabel;
    let done = false;
    const settle = () => {
      if (done) return;
      done = true;
      delete button.dataset.busy;
      button.textContent = label;
      button.disabled = !isAdmin() || button.dataset.off === '1';
    };
    setTimeout(() => {
      if (!done) {
        message('No confirmation from the focus yet; the view shows the last known state.', 'warn');
        settle();
      }
    }, CONFIRM_TIMEOUT_MS);
    return settle;
  }

  // ---- live events --------------------------------------------------------------------------

  // Follows /events (EventSource cannot send headers, hence ?token=). `onOpen` runs on every
  // (re)connection so the page re-reads the state it may have missed while disconnected.
  function follow(onEvent, onOpen, conferenceId) {
    const params = new URLSearchParams({ token: token() });
    if (conferenceId) params.set('conference_id', conferenceId);
    const live = $('live');
    let source = null;
    const connect = () => {
      source = new EventSource(`${API}/events?${params}`);
      for (const kind of KINDS) {
        source.addEventListener(kind, (e) => {
          let data;
          try { data = JSON.parse(e.data); } catch (_) { return; }
          onEvent(kind, data);
        });
      }
      source.onopen = () => {
        live.textContent = 'live';
        live.className = 'live on';
        onOpen();
      };
      source.onerror = () => {
        live.textContent = 'reconnecting';
        live.className = 'live off';
        if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (e.g. a 401): check the token, then try again.
          source.close();
          setTimeout(() => loadSession().then(connect, () => setTimeout(connect, 5000)), 3000);
        }
      };
    };
    connect();
    window.addEventListener('beforeunload', () => source && source.close());
  }

  // While a REST read is in flight, events keep arriving; the read may predate them (the
  // database is written after the event is published), so they are replayed on top of it.
  function syncer(read, apply, replay) {
    let buffer = null;
    let again = false;
    const sync = async () => {
      if (buffer !== null) { again = true; return; }
      buffer = [];
      try {
        const snapshot = await read();
        apply(snapshot);
        for (const [kind, data] of buffer) replay(kind, data);
      } catch (err) {
        if (err.status !== 401) message(`Could not load: ${err.message}`, 'error');
      } finally {
        buffer = null;
        if (again) { again = false; sync(); }
      }
    };
    const note = (kind, data) => { if (buffer !== null) buffer.push([kind, data]); };
    return { sync, note };
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  // ---- charts: inline SVG -------------------------------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // series: [{label, cls, kind: 'step'|'bars', points: [[timeMs, value], ...]}]
  function chart(container, series, t0, t1) {
    // Drawn at the container's own pixel size, so text is never stretched or scaled.
    const W = Math.max(320, Math.floor(container.clientWidth) || 640);
    const H = 170, L = 36, R = 12, T = 12, B = 26;
    const maxY = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
    const span = Math.max(1, t1 - t0);
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => H - B - (v / maxY) * (H - T - B);
    const root = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'svg-chart', role: 'img',
    });
    // Grid and y labels: 0, half, max (integers: these are counts).
    for (const v of [...new Set([0, Math.round(maxY / 2), maxY])]) {
      root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid-line' }));
      root.append(svg('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, v));
    }
    root.append(svg('text', { x: L, y: H - 8, class: 'axis' }, clock(new Date(t0))));
    root.append(svg('text', { x: W - R, y: H - 8, class: 'axis', 'text-anchor': 'end' },
      clock(new Date(t1))));
    for (const s of series) {
      if (s.kind === 'bars') {
        const width = Math.max(1, ((W - L - R) / Math.max(1, s.points.length)) * 0.7);
        for (const [t, v] of s.points) {
          if (v <= 0) continue;
          const bar = svg('rect', { x: x(t), y: y(v), width, height: H - B - y(v), class: s.cls });
          bar.append(svg('title', {}, `${clock(new Date(t))}: ${v} ${s.label}`));
          root.append(bar);
        }
      } else if (s.points.length) {
        let d = `M${x(s.points[0][0])},${y(s.points[0][1])}`;
        for (let i = 1; i < s.points.length; i++) {
          // A step series: the value holds until the next point.
          d += `H${x(s.points[i][0])}V${y(s.points[i][1])}`;
        }
        root.append(svg('path', { d, class: s.cls }));
      }
    }
    const legend = el('div', { class: 'legend' });
    for (const s of series) {
      legend.append(el('span', { class: 'key ' + s.cls }), el('span', { text: s.label }));
    }
    container.replaceChildren(root, legend);
    // The latest value of each series, for tests and for anyone reading the DOM.
    container.dataset.last = series.map((s) => {
      const p = s.points[s.points.length - 1];
      return p ? p[1] : '';
    }).join(',');
  }

  // ---- page: sign in ------------------------------------------------------------------------

  function signinPage() {
    const flash = sessionStorage.getItem(FLASH_KEY);
    if (flash) {
      sessionStorage.removeItem(FLASH_KEY);
      message(flash, 'warn');
    }
    $('signin-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const value = $('token').value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      message('Checking the token…');
      try {
        const resp = await fetch(API + '/whoami', {
          headers: { Authorization: 'Bearer ' + value }, cache: 'no-store',
        });
        if (!resp.ok) throw new Error(resp.status === 401 ? 'token refused' : resp.statusText);
        const next = new URLSearchParams(window.location.search).get('next');
        // Only paths of the console itself: never an open redirect.
        const target = next && next.startsWith(BASE + '/') && !next.startsWith('//')
          ? next : BASE + '/conferences';
        window.location.assign(target);
      } catch (err) {
        sessionStorage.removeItem(TOKEN_KEY);
        message(`Sign-in failed: ${err.message}`, 'error');
      }
    });
  }

  // ---- page: conferences --------------------------------------------------------------------

  function conferencesPage() {
    const tbody = document.querySelector('#conferences tbody');
    let conferences = [];

    const render = () => {
      const now = Date.now();
      tbody.replaceChildren(...conferences.map((c) => el('tr', { 'data-id': c.id },
        el('td', {}, el('a', { href: `${BASE}/conferences/${enc(c.id)}`, text: c.uri })),
        el('td', { class: 'age', 'data-created': c.created_at, text: age(c.created_at, now) }),
        el('td', { class: 'num count', text: String(c.participant_count) }),
        el('td', { text: c.mrfp_node || '—' }),
        el('td', { class: 'locked', text: c.locked ? 'locked' : 'no' }),
      )));
      $('empty').hidden = conferences.length > 0;
    };

    const readAll = async () => {
      const items = [];
      let cursor = null;
      do {
        const q = new URLSearchParams({ state: 'active', limit: '200' });
        if (cursor) q.set('cursor', cursor);
        const page = await api('GET', `/conferences?${q}`);
        items.push(...page.items);
        cursor = page.next_cursor;
      } while (cursor && items.length < 2000);
      return items;
    };

    // Events change single fields at once; counts and new rows are re-read (debounced) from
    // the API so a burst of joins costs one request.
    const replay = (kind, data) => {
      const id = data.conference_id;
      const row = conferences.find((c) => c.id === id);
      if (kind === 'conference.ended') {
        conferences = conferences.filter((c) => c.id !== id);
      } else if ((kind === 'conference.locked' || kind === 'conference.unlocked') && row) {
        row.locked = Boolean(data.data.locked ?? kind === 'conference.locked');
      }
    };
    const state = syncer(readAll, (items) => { conferences = items; }, replay);
    const refresh = debounce(() => state.sync().then(render), 300);

    const nodeChart = async () => {
      try {
        const stats = await api('GET', '/stats/node?minutes=60');
        const pts = stats.buckets.map((b) => [Date.parse(b.start), b]);
        const t0 = pts.length ? pts[0][0] : Date.now();
        const t1 = pts.length ? pts[pts.length - 1][0] + 60000 : Date.now();
        const active = pts.map(([t, b]) => [t, b.active_conferences]);
        if (active.length) active.push([t1, active[active.length - 1][1]]);
        chart($('node-chart'), [
          { label: 'joins per minute', cls: 'bars', kind: 'bars',
            points: pts.map(([t, b]) => [t, b.joins]) },
          { label: 'active conferences', cls: 'line', kind: 'step', points: active },
        ], t0, t1);
      } catch (err) {
        if (err.status !== 401) $('node-chart').textContent = `Chart unavailable: ${err.message}`;
      }
    };
    const refreshChart = debounce(nodeChart, 2000);

    follow((kind, data) => {
      state.note(kind, data);
      replay(kind, data);
      render();
      if (kind !== 'participant.talking' && kind !== 'participant.media') {
        refresh();
        if (kind === 'conference.created' || kind === 'conference.ended'
          || kind === 'participant.joined') refreshChart();
      }
    }, () => { refresh(); refreshChart(); });

    setInterval(() => {
      const now = Date.now();
      for (const cell of tbody.querySelectorAll('td.age')) {
        cell.textContent = age(cell.dataset.created, now);
      }
    }, 1000);
    setInterval(nodeChart, 60000);
  }

  // ---- page: one conference -----------------------------------------------------------------

  function conferencePage() {
    const id = body.dataset.conference;
    const tbody = document.querySelector('#participants tbody');
    $('back').href = BASE + '/conferences';
    let conf = null;
    // participant id -> participant (as the API shows it, updated from event snapshots)
    let people = new Map();
    // participant id -> {action: settle()} for buttons waiting for their event
    const waiting = new Map();
    let confWaiting = null;

    const present = (p) => p.status !== 'disconnected' && !p.left_at;

    const settle = (pid) => {
      const entry = waiting.get(pid);
      if (entry) { entry(); waiting.delete(pid); }
    };

    const renderConference = () => {
      if (!conf) return;
      $('conf-uri').textContent = conf.uri;
      $('conf-state').textContent = conf.state;
      $('conf-created').textContent = when(conf.created_at);
      $('conf-initiator').textContent = conf.initiator || '—';
      $('conf-node').textContent = conf.mrfp_node || '—';
      $('conf-locked').textContent = conf.locked ? 'locked' : 'no';
      const ended = conf.state !== 'active';
      for (const node of document.querySelectorAll('[data-admin]')) {
        node.dataset.off = ended ? '1' : '';
        if (node.dataset.busy !== '1') node.disabled = !isAdmin() || ended;
      }
      if (!confWaiting) $('lock').textContent = conf.locked ? 'Unlock' : 'Lock';
      if (ended) message('This conference has ended.', 'warn');
    };

    const row = (p) => {
      const ended = !conf || conf.state !== 'active';
      const mute = adminButton(p.muted ? 'Unmute' : 'Mute', { class: 'mute' });
      const kick = adminButton('Kick', { class: 'kick danger' });
      if (ended) { mute.disabled = true; kick.disabled = true; }
      mute.addEventListener('click', () => act(p.id, mute, p.muted ? 'unmuting…' : 'muting…',
        () => api('PATCH', `/conferences/${enc(id)}/participants/${enc(p.id)}`,
          { muted: !p.muted })));
      kick.addEventListener('click', () => act(p.id, kick, 'kicking…',
        () => api('DELETE', `/conferences/${enc(id)}/participants/${enc(p.id)}`)));
      if (waiting.has(p.id)) { mute.disabled = true; kick.disabled = true; }
      const identity = el('td', { class: 'identity' },
        el('span', { class: 'uri', text: p.uri }));
      if (p.display_name) identity.prepend(el('span', { class: 'name', text: p.display_name }));
      return el('tr', { 'data-id': p.id, 'data-uri': p.uri },
        identity,
        el('td', {}, el('span', { class: `status s-${p.status}`, text: p.status })),
        el('td', { text: when(p.joined_at) }),
        el('td', { class: 'muted', text: p.muted ? 'muted' : 'no' }),
        el('td', {}, el('span', {
          class: 'talk' + (p.talking ? ' on' : ''), title: p.talking ? 'talking' : 'silent',
          text: p.talking ? 'talking' : '',
        })),
        el('td', { class: 'row-actions' }, mute, kick),
      );
    };

    const renderPeople = () => {
      const shown = [...people.values()].filter(present);
      tbody.replaceChildren(...shown.map(row));
      $('count').textContent = String(shown.length);
      $('empty').hidden = shown.length > 0;
    };

    // One row changes (talking flips often): replace just that row.
    const renderOne = (pid) => {
      const p = people.get(pid);
      const old = tbody.querySelector(`tr[data-id="${CSS.escape(pid)}"]`);
      if (!p || !present(p)) { if (old) old.remove(); renderCount(); return; }
      if (old) old.replaceWith(row(p)); else renderPeople();
    };
    const renderCount = () => {
      const n = [...people.values()].filter(present).length;
      $('count').textContent = String(n);
      $('empty').hidden = n > 0;
    };

    async function act(pid, button, busyLabel, call) {
      const done = pending(button, busyLabel);
      waiting.set(pid, done);
      message('');
      try {
        await call();
      } catch (err) {
        waiting.delete(pid);
        done();
        message(`Refused: ${err.message}`, 'error');
      }
    }

    const replay = (kind, data) => {
      if (kind.startsWith('conference.')) {
        if (!conf) return;
        if (kind === 'conference.ended') {
          conf.state = 'ended';
          people = new Map();
        } else if (kind === 'conference.locked' || kind === 'conference.unlocked') {
          conf.locked = Boolean(data.data.locked ?? kind === 'conference.locked');
        }
        return;
      }
      const pid = data.participant_id;
      if (!pid) return;
      if (kind === 'participant.left' || kind === 'participant.kicked') {
        people.delete(pid);
        return;
      }
      const snap = data.data || {};
      const known = people.get(pid) || { id: pid, joined_at: null, left_at: null };
      const next = { ...known };
      for (const key of ['uri', 'display_name', 'status', 'muted', 'talking', 'joined_at',
        'left_at']) {
        if (key in snap) next[key] = snap[key];
      }
      people.set(pid, next);
    };

    const read = async () => {
      const [c, items] = await Promise.all([
        api('GET', `/conferences/${enc(id)}`),
        (async () => {
          const all = [];
          let cursor = null;
          do {
            const q = new URLSearchParams({ limit: '200' });
            if (cursor) q.set('cursor', cursor);
            const page = await api('GET', `/conferences/${enc(id)}/participants?${q}`);
            all.push(...page.items);
            cursor = page.next_cursor;
          } while (cursor && all.length < 2000);
          return all;
        })(),
      ]);
      return { c, items };
    };
    const apply = ({ c, items }) => {
      // Talking is not stored (too fleeting): keep what the events said.
      const talking = new Map([...people.values()].map((p) => [p.id, p.talking]));
      conf = c;
      people = new Map(items.map((p) => [p.id, { ...p, talking: talking.get(p.id) || false }]));
    };
    const state = syncer(read, apply, replay);
    const full = () => state.sync().then(() => { renderConference(); renderPeople(); });

    const convChart = async () => {
      try {
        const stats = await api('GET', `/stats/conferences/${enc(id)}`);
        const points = stats.points.map((p) => [Date.parse(p.at), p.participants]);
        const t0 = points.length ? points[0][0] : Date.now();
        const t1 = Math.max(Date.now(), points.length ? points[points.length - 1][0] : 0);
        if (points.length && conf && conf.state === 'active') {
          points.push([t1, points[points.length - 1][1]]);
        }
        chart($('conf-chart'), [
          { label: 'participants', cls: 'line', kind: 'step', points },
        ], t0, t1);
      } catch (err) {
        if (err.status === 404) message('No such conference.', 'error');
        else if (err.status !== 401) $('conf-chart').textContent = `Chart unavailable: ${err.message}`;
      }
    };
    const refreshChart = debounce(convChart, 800);

    $('lock').addEventListener('click', async () => {
      if (!conf) return;
      const want = !conf.locked;
      const done = pending($('lock'), want ? 'locking…' : 'unlocking…');
      confWaiting = { done, kind: 'lock' };
      try {
        await api('PATCH', `/conferences/${enc(id)}`, { locked: want });
      } catch (err) {
        confWaiting = null;
        done();
        message(`Refused: ${err.message}`, 'error');
      }
    });

    // Ending is the one irreversible action: it asks twice (a second click within 5 s).
    let armed = null;
    $('end').addEventListener('click', async () => {
      const button = $('end');
      if (!armed) {
        button.textContent = 'Click again to end';
        armed = setTimeout(() => { armed = null; button.textContent = 'End conference'; }, 5000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.textContent = 'End conference';
      const done = pending(button, 'ending…');
      confWaiting = { done, kind: 'end' };
      try {
        await api('DELETE', `/conferences/${enc(id)}`);
      } catch (err) {
        confWaiting = null;
        done();
        message(`Refused: ${err.message}`, 'error');
      }
    });

    $('dial').addEventListener('submit', async (e) => {
      e.preventDefault();
      const uri = $('dial-uri').value.trim();
      const button = e.target.querySelector('button');
      button.disabled = true;
      try {
        const p = await api('POST', `/conferences/${enc(id)}/participants`, { uri });
        // The row appears with the participant.dialing event, not from this answer.
        message(`Dialling ${p.uri}…`);
        $('dial-uri').value = '';
      } catch (err) {
        message(`Refused: ${err.message}`, 'error');
      } finally {
        button.disabled = !isAdmin() || !conf || conf.state !== 'active';
      }
    });

    follow((kind, data) => {
      state.note(kind, data);
      replay(kind, data);
      const pid = data.participant_id;
      if (kind.startsWith('conference.')) {
        if (confWaiting) { const w = confWaiting; confWaiting = null; w.done(); }
        renderConference();
        if (kind === 'conference.ended') { renderPeople(); refreshChart(); }
        return;
      }
      if (pid) settle(pid);
      if (kind === 'participant.talking') renderOne(pid);
      else renderPeople();
      if (kind === 'participant.joined' || kind === 'participant.left') refreshChart();
    }, () => { full().then(convChart); }, id);
    setInterval(convChart, 60000);
  }

  // ---- start --------------------------------------------------------------------------------

  const page = body.dataset.page;
  $('signout').addEventListener('click', () => signOut());
  if (page === 'signin') {
    signinPage();
    return;
  }
  if (!token()) {
    const next = window.location.pathname;
    window.location.assign(`${BASE}/?next=${enc(next)}`);
    return;
  }
  loadSession().then(() => {
    if (page === 'conferences') conferencesPage();
    else if (page === 'conference') conferencePage();
  }, (err) => {
    if (err.status !== 401) message(`Could not reach the API: ${err.message}`, 'error');
  });
})();
