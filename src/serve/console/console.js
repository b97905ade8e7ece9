// The web console of `rewindb serve` (docs/api.md). It signs in with a bearer
// token kept in sessionStorage, then shows the sources with their freshness,
// the jobs with live progress, the snapshots with their actions, a chart of
// added bytes, the repository's figures and the audit log, polling the JSON
// API under /api/v1. No framework and no build step. Every string reaches the
// DOM as a text node or an attribute value, never through innerHTML.
'use strict';

(() => {
  const API = '/api/v1';
  const TOKEN_KEY = 'rewindb-token';
  const FAST_POLL_MS = 1000;   // while a job runs
  const SLOW_POLL_MS = 10000;  // otherwise: status, snapshots, jobs, stats, audit
  const MAX_JOBS_SHOWN = 20;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    session: 0,             // bumped at each sign-in and sign-out
    whoami: null,
    status: null,
    stats: null,
    snapshots: [],
    running: new Set(),     // ids of jobs running at the last look
    watched: new Map(),     // jobs this page started, until seen done -> jobsAsked then
    jobsAsked: 0,           // to drop a /jobs answer older than one drawn
    jobsDrawn: 0,
    fileChoice: new Map(),  // snapshot id -> the file picked in its row
    drawn: {},              // table -> the JSON it was last drawn from
    pollTimer: null,
    lastFull: 0,
    messageFromPoll: false,
  };

  const $ = (selector) => document.querySelector(selector);
  const enc = encodeURIComponent;

  // ---- DOM and formatting helpers ----------------------------------------

  /** An element with attributes (`class`, `on<event>` handlers, the rest set
   *  as attributes; null/false skipped) and children (strings become text). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key === 'class') node.className = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  /** Any API value as display text. */
  const text = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

  function humanBytes(n) {
    if (n === null || n === undefined || isNaN(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = Number(n);
    let unit = 0;
    while (v >= 1024 && unit < units.length - 1) { v /= 1024; unit += 1; }
    return unit === 0 ? `${n} B` : `${v.toFixed(1)} ${units[unit]}`;
  }

  /** Seconds as "3h 5m", "2d 4h", "12m", "40s". */
  function humanAge(secs) {
    const s = Math.max(0, Math.floor(Number(secs) || 0));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return h ? `${d}d ${h}h` : `${d}d`;
    if (h > 0) return m ? `${h}h ${m}m` : `${h}h`;
    return m > 0 ? `${m}m` : `${s}s`;
  }

  function localTime(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    });
  }

  /** A <time> showing the local time, the UTC original on hover. */
  const timeEl = (iso) => el('time', { datetime: iso || null, title: iso || null }, localTime(iso));

  /** A table cell; `label` heads it when the table collapses into cards. */
  const cell = (label, content, cls) => el('td', { 'data-label': label, class: cls || null }, content);

  const isConfigured = (name) => name !== null && name !== undefined && name !== '';
  const basename = (name) => String(name).split(/[\\/]/).pop() || 'download';

  /** The padlock of the table's header, an SVG (no emoji font needed). */
  const lockIcon = () => $('#snapshots th.lock-col svg').cloneNode(true);

  // ---- The status line ---------------------------------------------------

  let messageSerial = 0;

  /** Shows `msg` at the top; `kind` is info or error. Info fades after 10 s. */
  function showMessage(msg, kind = 'info', fromPoll = false) {
    const box = $('#message');
    box.textContent = msg;
    box.className = `message ${kind}`;
    box.hidden = !msg;
    state.messageFromPoll = fromPoll;
    const serial = ++messageSerial;
    if (msg && kind === 'info') setTimeout(() => serial === messageSerial && showMessage(''), 10000);
  }

  /** Shows an error's message; a 401 has already sent us to the token form. */
  function report(err, fromPoll = false) {
    if (err && err.status === 401) return;
    showMessage(err && err.message ? err.message : String(err), 'error', fromPoll);
  }

  // ---- The API -----------------------------------------------------------

  const apiError = (status, code, message) => Object.assign(new Error(message), { status, code });

  /** The API's `{"error":{"code","message"}}`, or the status line. */
  async function errorOf(res) {
    const body = await res.json().catch(() => null);  // not JSON: the status line
    const e = (body && body.error) || {};
    return apiError(res.status, e.code || 'http', e.message || `${res.status} ${res.statusText}`.trim());
  }

  /** fetch with the bearer token; throws unless 2xx; a 401 signs out. */
  async function authFetch(path, options = {}) {
    const session = state.session;
    const headers = new Headers(options.headers || {});
    headers.set('Authorization', `Bearer ${state.token}`);
    let res;
    try {
      res = await fetch(API + path, { ...options, headers, cache: 'no-store' });
    } catch (e) {
      throw apiError(0, 'network', `Cannot reach the server (${e.message}).`);
    }
    if (res.ok) return res;
    const err = await errorOf(res);
    if (res.status === 401 && session === state.session) {
      signOut(`The token was not accepted: ${err.message}`);
    }
    throw err;
  }

  /** A JSON request; answers the parsed body (null when empty). */
  async function api(method, path, body) {
    const json = body === undefined ? {} : { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } };
    const res = await authFetch(path, { method, ...json });
    const raw = await res.text();
    return raw ? JSON.parse(raw) : null;
  }

  // ---- Signing in and out, scopes --------------------------------------------

  async function signIn(token) {
    state.session += 1;
    state.token = token;
    $('#token-submit').disabled = true;
    try {
      state.whoami = await api('GET', '/whoami');
      sessionStorage.setItem(TOKEN_KEY, token);
      showApp();
    } catch (err) {
      if (err.status !== 401) {  // e.g. the server is down: let them retry
        state.token = null;
        showTokenForm(err.message);
        $('#token').value = token;
      }
    } finally {
      $('#token-submit').disabled = false;
    }
  }

  function signOut(message = '') {
    state.session += 1;
    state.token = null;
    state.whoami = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.pollTimer);
    state.running.clear(); state.watched.clear();
    showTokenForm(message);
  }

  function showTokenForm(message) {
    $('#app').hidden = true;
    $('#logout').hidden = true;
    $('#whoami').textContent = '';
    $('#scopes').textContent = '';
    showMessage('');
    const dialog = $('#confirm');
    if (dialog.open) $('#confirm-cancel').click();
    $('#token-error').textContent = message || '';
    $('#token-form').hidden = false;
    $('#token').value = '';
    $('#token').focus();
  }

  function showApp() {
    $('#token-form').hidden = true;
    $('#token-error').textContent = '';
    $('#token').value = '';
    $('#whoami').textContent = state.whoami.name;
    $('#scopes').textContent = (state.whoami.scopes || []).join(' · ');
    $('#logout').hidden = false;
    // Start afresh: what is drawn depends on the scopes.
    state.drawn = {};
    $('#sources').replaceChildren();
    $('#jobs').replaceChildren();
    allow($('#verify'), 'backup');
    allow($('#read-data'), 'backup');
    $('#read-data').closest('label').hidden = !can('backup');
    $('#app').hidden = false;
    if (!can('read')) {
      showMessage('This token has no "read" scope: there is nothing it may list.', 'error');
      return;
    }
    state.lastFull = 0;
    poll();
  }

  const can = (scope) => !!state.whoami && (state.whoami.scopes || []).includes(scope);

  /** Hides and disables `node` unless the token has `scope`. */
  function allow(node, scope) {
    const ok = can(scope);
    node.hidden = !ok;
    node.disabled = !ok;
    return node;
  }

  // ---- Polling -----------------------------------------------------------

  function schedulePoll(ms) {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(poll, ms);
  }

  /** Every second while a job runs, the jobs; every 10 s, everything. */
  async function poll() {
    const session = state.session;
    try {
      if (Date.now() - state.lastFull >= SLOW_POLL_MS) {
        state.lastFull = Date.now();
        await refreshAll();
      } else {
        await refreshJobs();
      }
      if (state.messageFromPoll) showMessage('');
    } catch (err) {
      if (session === state.session) report(err, true);
    }
    if (session === state.session && state.token) {
      schedulePoll(state.running.size || state.watched.size ? FAST_POLL_MS : SLOW_POLL_MS);
    }
  }

  const refreshAll = () => Promise.all([refreshData(), refreshJobs()]);
  const refreshData = () => Promise.all([refreshStatus(), refreshSnapshots(), refreshStats(), refreshAudit()]);

  async function refreshStatus() {
    state.status = await api('GET', '/status');
    renderSources(state.status.sources || []);
    renderStats();
  }

  async function refreshStats() {
    state.stats = await api('GET', '/stats');
    renderStats();
  }

  async function refreshSnapshots() {
    const list = await api('GET', '/snapshots?limit=1000');
    state.snapshots = Array.isArray(list) ? list : [];
    renderSnapshots(state.snapshots);
    drawChart();
  }

  async function refreshAudit() {
    renderAudit(await api('GET', '/audit?limit=50'));
  }

  async function refreshJobs() {
    const asked = ++state.jobsAsked;
    const jobs = await api('GET', '/jobs');
    if (asked < state.jobsDrawn) return;  // a newer answer is already drawn
    state.jobsDrawn = asked;
    renderJobs(jobs);
    const byId = new Map(jobs.map((j) => [j.id, j]));
    const active = (j) => j.state === 'running' || j.state === 'queued';
    let finished = jobs.some((j) => !active(j) && state.running.has(j.id));
    for (const [id, since] of state.watched) {
      const job = byId.get(id);
      if (job && active(job)) continue;
      if (job) finished = true;
      if (job || asked > since) state.watched.delete(id);  // done, or unknown to the server
    }
    state.running = new Set(jobs.filter(active).map((j) => j.id));
    if (finished) await refreshData();
  }

  /** After starting a job: follow it closely until it is done. */
  function watchJob(job) {
    if (job && job.id !== undefined) state.watched.set(job.id, state.jobsAsked);
    schedulePoll(0);
  }

  /** Runs an action with its button disabled; shows what goes wrong. */
  async function busy(button, action) {
    if (button) button.disabled = true;
    try {
      await action();
    } catch (err) {
      report(err);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- Sources -----------------------------------------------------------

  /** Keeps one card per source, updating it in place (a label being typed
   *  survives a refresh). */
  function renderSources(sources) {
    const box = $('#sources');
    const old = new Map([...box.querySelectorAll('.source')].map((c) => [c.dataset.source, c]));
    const cards = sources.map((s) => {
      const key = isConfigured(s.name) ? s.name : s.source;
      const card = old.get(key) || sourceCard(s, key);
      updateSourceCard(card, s);
      return card;
    });
    cards.forEach((card, i) => { if (box.children[i] !== card) box.insertBefore(card, box.children[i] || null); });
    while (box.children.length > cards.length) box.lastChild.remove();
    if (!cards.length) box.append(el('p', { class: 'empty' }, 'No sources.'));
  }

  function sourceCard(s, key) {
    const card = el('div', { class: 'source', 'data-source': key },
      el('div', { class: 'source-head' },
        el('h3', { class: 'source-name' }, key),
        el('span', { class: 'badge' })),
      el('div', { class: 'source-info' }));
    if (isConfigured(s.name)) {
      const input = el('input', {
        class: 'backup-label', type: 'text', placeholder: 'optional label',
        'aria-label': `Label for a backup of ${s.name}`, autocomplete: 'off',
      });
      const button = el('button', { class: 'backup-now', type: 'submit' }, 'Back up now');
      const form = el('form', { class: 'backup-form' }, input, button);
      form.addEventListener('submit', (e) => { e.preventDefault(); backupNow(s.name, input, button); });
      allow(input, 'backup');
      allow(button, 'backup');
      form.hidden = !can('backup');
      card.append(form);
    }
    return card;
  }

  function updateSourceCard(card, s) {
    const fresh = s.newest_time ? (s.stale ? 'stale' : 'fresh') : 'never';
    const age = s.age_secs !== null && s.age_secs !== undefined
      ? s.age_secs : (Date.now() - Date.parse(s.newest_time)) / 1000;
    const badge = card.querySelector('.badge');
    badge.className = `badge ${fresh}`;
    badge.textContent = fresh === 'never' ? 'never backed up' : `${fresh} · ${humanAge(age)}`;
    const info = [
      el('p', { class: 'source-kind' }, [s.kind, isConfigured(s.name) ? s.source : null].filter(Boolean).join(' · ')),
      el('p', {}, `${s.snapshots} snapshot${s.snapshots === 1 ? '' : 's'}`,
        s.newest_time ? [' · newest ', timeEl(s.newest_time), ` (${humanAge(age)} ago)`] : null,
        s.max_age_secs ? ` · max age ${humanAge(s.max_age_secs)}` : null),
    ];
    if (s.stale && s.stale_reason) info.push(el('p', { class: 'stale-reason' }, text(s.stale_reason)));
    if (s.pitr_window) {
      info.push(el('p', { class: 'pitr' }, 'Point-in-time recovery from ', timeEl(s.pitr_window.from), ' to ', timeEl(s.pitr_window.to)));
    }
    card.querySelector('.source-info').replaceChildren(...info);
  }

  async function backupNow(name, input, button) {
    const label = input.value.trim();
    await busy(button, async () => {
      const job = await api('POST', `/sources/${enc(name)}/backup`, label ? { label } : {});
      input.value = '';
      showMessage(`Backup of ${name} started (job ${job.id}).`);
      watchJob(job);
    });
  }

  // ---- Jobs --------------------------------------------------------------

  /** One element per job, kept across refreshes (keyed by id). */
  function renderJobs(jobs) {
    const box = $('#jobs');
    const old = new Map([...box.querySelectorAll('.job')].map((n) => [n.dataset.job, n]));
    const nodes = (Array.isArray(jobs) ? jobs : []).slice(0, MAX_JOBS_SHOWN).map((job) => {
      const node = old.get(String(job.id)) || el('div', { class: 'job', 'data-job': job.id });
      node.dataset.state = job.state;
      node.replaceChildren(...jobContent(job));
      return node;
    });
    box.replaceChildren(...(nodes.length ? nodes : [el('p', { class: 'empty' }, 'No jobs since the server started.')]));
  }

  function jobTitle(job) {
    const source = job.source ? ` ${job.source}` : '';
    if (job.kind === 'backup') return `Backup of${source}`;
    if (job.kind === 'check') return 'Verify repository';
    if (job.kind === 'restore') return `Restore${source}`;
    return `${text(job.kind)}${source}`;
  }

  function jobContent(job) {
    const took = job.finished ? (Date.parse(job.finished) - Date.parse(job.started)) / 1000 : null;
    const head = el('div', { class: 'job-head' },
      el('span', { class: 'job-title' }, `#${job.id} ${jobTitle(job)}`),
      el('span', { class: `state ${job.state}` }, text(job.state)));
    const meta = el('div', { class: 'job-meta' }, `by ${text(job.who)} · `, timeEl(job.started),
      took !== null && !isNaN(took) ? ` · took ${humanAge(took)}` : null);
    return [head, meta, jobDetail(job)];
  }

  function jobDetail(job) {
    if (job.state === 'queued') return el('div', { class: 'job-progress' }, 'queued behind the job before it');
    if (job.state === 'running') {
      const p = job.progress;
      if (!p || !p.total) return el('div', { class: 'job-progress' }, el('progress', {}), p ? `${humanBytes(p.done)}` : 'working…');
      const pct = Math.min(100, Math.floor((p.done / p.total) * 100));
      return el('div', { class: 'job-progress' },
        el('progress', { max: p.total, value: Math.min(p.done, p.total) }),
        `${humanBytes(p.done)} of ${humanBytes(p.total)} (${pct}%)`);
    }
    if (job.state === 'failed') return el('div', { class: 'job-error' }, text(job.error) || 'failed');
    if (job.snapshot) return el('div', { class: 'job-result' }, 'snapshot ', el('code', {}, String(job.snapshot).slice(0, 8)));
    return el('div', { class: 'job-result' }, 'done');
  }

  async function verify(button) {
    await busy(button, async () => {
      const job = await api('POST', '/check', $('#read-data').checked ? { read_data: true } : {});
      showMessage(`Verification started (job ${job.id}).`);
      watchJob(job);
    });
  }

  // ---- Snapshots ---------------------------------------------------------

  function sourceName(s) {
    if (isConfigured(s.name)) return s.name;
    const path = (Array.isArray(s.files) && s.files[0] && s.files[0].source_path) || (s.postgres && s.postgres.pgdata);
    return [s.source, path].filter(Boolean).join(' ');
  }

  /** Redraws the table when the list (or the token) changed; newest first. */
  function renderSnapshots(list) {
    const drawn = JSON.stringify([list, state.whoami && state.whoami.scopes]);
    if (drawn === state.drawn.snapshots) return;
    state.drawn.snapshots = drawn;
    $('#snapshots tbody').replaceChildren(...[...list].reverse().map(snapshotRow));
    $('#snapshots-empty').hidden = list.length > 0;
  }

  function snapshotRow(s) {
    const files = Array.isArray(s.files) && s.files.length ? s.files : null;
    let select = null;
    if (files && files.length > 1) {
      select = el('select', { class: 'file', 'aria-label': `File of snapshot ${s.short_id}` },
        files.map((f) => el('option', { value: f.name }, text(f.name))));
      const chosen = state.fileChoice.get(s.id);
      if (files.some((f) => f.name === chosen)) select.value = chosen;
      select.addEventListener('change', () => state.fileChoice.set(s.id, select.value));
    }
    const file = () => (select && files.find((f) => f.name === select.value)) || files[0];
    const button = (cls, label, scope, action) => allow(el('button', {
      type: 'button', class: cls, onclick: (e) => action(e.currentTarget),
    }, label), scope);
    const actions = el('div', { class: 'actions' },
      files ? el('span', { class: 'pair' },
        button('download', 'Download', 'restore', (b) => download(s, file(), b)),
        button('restore', 'Restore', 'restore', (b) => restore(s, file(), b))) : null,
      el('span', { class: 'pair' },
        button('protect secondary', s.protected ? 'Unprotect' : 'Protect', 'admin', (b) => protect(s, b)),
        button('forget danger', 'Forget', 'admin', (b) => forget(s, b))));
    return el('tr', { 'data-id': s.id, 'data-short': s.short_id, class: s.protected ? 'is-protected' : null },
      cell('ID', el('code', {}, text(s.short_id))),
      cell('Time', timeEl(s.time)),
      cell('Source', sourceName(s)),
      cell('Label', text(s.label), 'label'),
      cell('Size', humanBytes(s.logical_size), 'num'),
      cell('Added', humanBytes(s.bytes_added), 'num'),
      cell('Protected', s.protected ? lockIcon() : null, 'protected'),
      cell('File', select || (files ? text(files[0].name) : 'base backup'), 'file-cell'),
      cell('Actions', actions, 'actions-cell'));
  }

  /** Fetches a file with the token, checks its length, and saves it. */
  async function download(snap, file, button) {
    await busy(button, async () => {
      const res = await authFetch(`/snapshots/${enc(snap.id)}/download?file=${enc(file.name)}`);
      const header = res.headers.get('Content-Length');
      const expected = header !== null ? Number(header) : file.size;
      const parts = [];
      let received = 0;
      let shown = 0;
      const reader = res.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parts.push(value);
          received += value.length;
          if (Date.now() - shown > 250) {
            shown = Date.now();
            showMessage(`Downloading ${file.name}: ${humanBytes(received)} of ${humanBytes(expected)}…`);
          }
        }
      } catch (e) {
        throw new Error(`The download of ${file.name} broke off after ${humanBytes(received)} of ${humanBytes(expected)} (${e.message}); the server may have found damaged data: see the audit log.`);
      }
      if (typeof expected === 'number' && !isNaN(expected) && received !== expected) {
        throw new Error(`The download of ${file.name} is incomplete: ${received} bytes received of ${expected}; the server may have found damaged data: see the audit log.`);
      }
      saveBlob(new Blob(parts, { type: 'application/octet-stream' }), basename(file.name));
      showMessage(`Downloaded ${file.name} (${humanBytes(received)}).`);
    });
  }

  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  /** A dry run first, so that the confirmation names what is replaced. */
  async function restore(snap, file, button) {
    await busy(button, async () => {
      const path = `/snapshots/${enc(snap.id)}/restore`;
      const plan = await api('POST', path, { file: file.name, in_place: true, dry_run: true });
      const ok = await confirmDialog(restorePlanText(snap, file, (plan && plan.files) || []), 'Restore');
      if (!ok) return;
      const job = await api('POST', path, { file: file.name, in_place: true });
      showMessage(`Restore of ${file.name} from ${snap.short_id} started (job ${job.id}).`);
      watchJob(job);
    });
  }

  function restorePlanText(snap, file, planned) {
    const replaced = planned.filter((f) => f.replace);
    return [
      el('p', { class: 'confirm-title' }, `Restore ${file.name} from snapshot ${snap.short_id} (${localTime(snap.time)}) in place?`),
      el('p', {}, replaced.length ? 'This replaces:' : 'Nothing is replaced; this writes:'),
      el('ul', { class: 'dests' }, planned.map((f) => el('li', {},
        el('code', {}, text(f.dest)), f.replace ? ' (replaced)' : ' (new file)'))),
      replaced.length
        ? el('p', {}, 'A safety copy of each replaced file (and its -wal/-journal) is kept beside it, ' +
          'named <file>.rewindb-safety-<time>, and put back if the restore fails.')
        : null,
    ];
  }

  async function forget(snap, button) {
    const ok = await confirmDialog([
      el('p', { class: 'confirm-title' }, `Forget snapshot ${snap.short_id}?`),
      el('p', {}, `${sourceName(snap)}, taken ${localTime(snap.time)}${snap.label ? `, label "${snap.label}"` : ''}.`),
      el('p', {}, 'It is removed from the list; the next gc frees its data.'),
    ], 'Forget');
    if (!ok) return;
    await busy(button, async () => {
      await api('DELETE', `/snapshots/${enc(snap.id)}`);
      showMessage(`Snapshot ${snap.short_id} forgotten.`);
      await refreshData();
    });
  }

  async function protect(snap, button) {
    await busy(button, async () => {
      const answer = await api('POST', `/snapshots/${enc(snap.id)}/protect`, { protected: !snap.protected });
      const now = answer && typeof answer.protected === 'boolean' ? answer.protected : !snap.protected;
      showMessage(`Snapshot ${snap.short_id} is ${now ? 'now protected' : 'no longer protected'}.`);
      await refreshSnapshots();
    });
  }

  // ---- The confirmation dialog --------------------------------------------

  /** Shows `content` with OK (labelled `okLabel`) and Cancel; resolves to
   *  whether OK was chosen. */
  function confirmDialog(content, okLabel) {
    const dialog = $('#confirm');
    $('#confirm-text').replaceChildren(...content.filter(Boolean));
    $('#confirm-ok').textContent = okLabel;
    return new Promise((resolve) => {
      const finish = (ok) => {
        $('#confirm-ok').onclick = null;
        $('#confirm-cancel').onclick = null;
        dialog.oncancel = null;
        if (dialog.open) dialog.close();
        resolve(ok);
      };
      $('#confirm-ok').onclick = () => finish(true);
      $('#confirm-cancel').onclick = () => finish(false);
      dialog.oncancel = (e) => { e.preventDefault(); finish(false); };  // Esc
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else dialog.setAttribute('open', '');
      $('#confirm-cancel').focus();
    });
  }

  // ---- Repository figures and the chart -------------------------------------

  /** GET /stats's figures, and the status's size on disk and encryption. */
  function renderStats() {
    const st = state.stats || {};
    const status = state.status || {};
    const items = [
      ['stored_bytes', 'Stored', st.stored_bytes, humanBytes],
      ['logical_bytes', 'Logical', st.logical_bytes, humanBytes],
      ['dedup_ratio', 'Dedup ratio', st.dedup_ratio, (v) => `${Number(v).toFixed(2)}×`],
      ['snapshots', 'Snapshots', st.snapshots, text],
      ['repository_bytes', 'On disk', status.repository_bytes, humanBytes],
      ['encrypted', 'Encrypted', status.encrypted, (v) => (v ? 'yes' : 'no')],
    ].filter(([, , value]) => value !== undefined && value !== null);
    $('#stats').replaceChildren(...items.map(([key, label, value, show]) =>
      el('div', { class: 'stat', 'data-stat': key, title: text(value) }, el('dt', {}, label), el('dd', {}, show(value)))));
  }

  /** Bars of bytes added per snapshot (right scale) and a line of the
   *  running total of added bytes (left scale), over time. */
  function drawChart() {
    const canvas = $('#chart');
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const css = getComputedStyle(canvas);
    const color = (name) => css.getPropertyValue(name).trim() || '#666';
    ctx.font = `11px ${css.fontFamily}`;
    const label = (words, lx, ly, textAlign, fill) => {
      Object.assign(ctx, { textAlign, fillStyle: color(fill) });
      ctx.fillText(words, lx, ly);
    };

    const points = state.snapshots
      .map((s) => ({ t: Date.parse(s.time), added: Number(s.bytes_added) || 0 }))
      .filter((p) => !isNaN(p.t))
      .sort((a, b) => a.t - b.t);
    if (!points.length) return label('No snapshots yet', width / 2, height / 2, 'center', '--muted');
    let total = 0;
    for (const p of points) { total += p.added; p.total = total; }
    canvas.setAttribute('aria-label',
      `Bytes added per snapshot over time: ${points.length} snapshots, ${humanBytes(total)} added in all`);

    const pad = { left: 68, right: 64, top: 8, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const first = points[0].t;
    const last = points[points.length - 1].t;
    const margin = (last - first) * 0.03;
    const t0 = first - margin;
    const span = last + margin - t0;
    const x = (t) => pad.left + (span > 0 ? ((t - t0) / span) * plotW : plotW / 2);
    const maxBar = Math.max(...points.map((p) => p.added), 1) * 1.1;
    const maxLine = Math.max(total, 1) * 1.1;
    const y = (v, max) => pad.top + plotH - (v / max) * plotH;

    // Grid and scales: left for the running total, right for the bars.
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i += 1) {
      const gy = Math.round(pad.top + plotH - (i / 4) * plotH) + 0.5;
      ctx.strokeStyle = color('--grid');
      ctx.beginPath(); ctx.moveTo(pad.left, gy); ctx.lineTo(width - pad.right, gy); ctx.stroke();
      label(humanBytes((maxLine * i) / 4), pad.left - 6, gy, 'right', '--chart-line');
      label(humanBytes((maxBar * i) / 4), width - pad.right + 6, gy, 'left', '--chart-bar');
    }

    const barW = Math.max(2, Math.min(14, (plotW / points.length) * 0.6));
    ctx.fillStyle = color('--chart-bar');
    for (const p of points) {
      const top = y(p.added, maxBar);
      ctx.fillRect(x(p.t) - barW / 2, top, barW, pad.top + plotH - top);
    }

    ctx.strokeStyle = color('--chart-line');
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(p.t), y(p.total, maxLine)));
    ctx.stroke();

    // Dates under the plot: the first and last snapshot's, the middle if room.
    const sameDay = last - first < 2 * 86400000;
    const fmt = (t) => new Date(t).toLocaleString(undefined, sameDay
      ? { hour: '2-digit', minute: '2-digit' } : { month: 'short', day: 'numeric' });
    ctx.textBaseline = 'top';
    const under = height - pad.bottom + 6;
    label(fmt(first), pad.left, under, 'left', '--muted');
    if (last > first) label(fmt(last), width - pad.right, under, 'right', '--muted');
    if (last > first && plotW > 360) label(fmt((first + last) / 2), pad.left + plotW / 2, under, 'center', '--muted');
  }

  // ---- The audit log ------------------------------------------------------

  function renderAudit(entries) {
    const list = Array.isArray(entries) ? entries : [];
    const drawn = JSON.stringify(list);
    if (drawn === state.drawn.audit) return;
    state.drawn.audit = drawn;
    $('#audit tbody').replaceChildren(...list.map((a) => el('tr', { class: `audit-entry ${a.ok ? 'ok' : 'failed'}` },
      cell('Time', timeEl(a.time)),
      cell('Who', text(a.who)),
      cell('From', text(a.from)),
      cell('Action', text(a.action)),
      cell('Target', text(a.target)),
      cell('OK', el('span', { class: a.ok ? 'yes' : 'no', title: a.ok ? 'succeeded' : 'failed' }, a.ok ? '✓' : '✗'), 'ok-cell'),
      cell('Detail', text(a.detail), 'detail'))));
    $('#audit-empty').hidden = list.length > 0;
  }

  // ---- Start -------------------------------------------------------------

  function init() {
    $('#token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('#token').value.trim();
      if (token) signIn(token);
      else $('#token-error').textContent = 'Enter a token.';
    });
    $('#logout').addEventListener('click', () => signOut());
    $('#verify').addEventListener('click', (e) => verify(e.currentTarget));
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(drawChart, 150);
    });
    if (state.token) signIn(state.token);
    else showTokenForm('');
  }

  init();
})();
