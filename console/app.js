// The console shell: login page, header (language, account, logout), navigation and the
// hash router. Pages are functions `(ctx, ...params)` that fill `ctx.main`.

import { getSession, login, logout, setExpiredHandler } from './api.js';
import { getLang, setLang, t } from './i18n.js';
import { clear, clearNotices, errorText, h, nextId, setNoticeRoot, showSuccess } from './ui.js';
import * as endpoints from './endpoints.js';
import * as services from './services.js';
import * as quotas from './quotas.js';
import * as openapi from './openapi.js';

const root = document.getElementById('app');

const ROUTES = [
  [/^\/endpoints$/, endpoints.list, 'endpoints'],
  [/^\/endpoints\/create$/, endpoints.create, 'endpoints'],
  [/^\/endpoints\/([^/]+)$/, endpoints.detail, 'endpoints'],
  [/^\/services$/, services.list, 'services'],
  [/^\/services\/create$/, services.create, 'services'],
  [/^\/services\/([^/]+)(?:\/(basic|connections|permissions|ports|tags))?$/, services.detail, 'services'],
  [/^\/quotas$/, quotas.page, 'quotas'],
  [/^\/openapi$/, openapi.page, 'openapi'],
];

let current = null; // { key, state, gen, timers, leave }
let generation = 0;

function routePath() {
  const raw = decodeURIComponent(location.hash.replace(/^#/, '')) || '/endpoints';
  return raw.startsWith('/') ? raw : `/${raw}`;
}

let pendingFlash = null;

/** Navigates to `path`; `flash` is a success message shown on the next page. */
export function go(path, flash) {
  pendingFlash = flash || null;
  if (location.hash === `#${path}`) render();
  else location.hash = path;
}

function leaveCurrent() {
  if (!current) return;
  for (const id of current.timers.values()) clearTimeout(id);
  current.timers.clear();
  for (const fn of current.leave) {
    try {
      fn();
    } catch {
      // A page's cleanup must not stop the next page.
    }
  }
  current.leave = [];
}

/** Draws everything for the current hash; `keepState` is set on a language switch. */
function render({ keepState = true } = {}) {
  const session = getSession();
  const path = routePath();
  leaveCurrent();
  if (!session) {
    current = null;
    renderLogin();
    return;
  }
  if (path === '/login') {
    location.replace('#/endpoints');
    return;
  }
  const match = ROUTES.map(([re, fn, nav]) => [path.match(re), fn, nav]).find(([m]) => m);
  const [m, page, nav] = match || [null, endpoints.list, 'endpoints'];
  const gen = ++generation;
  const state = keepState && current && current.key === path ? current.state : {};
  current = { key: path, state, gen, timers: new Map(), leave: [] };
  const main = renderShell(session, nav);
  if (pendingFlash) {
    showSuccess(pendingFlash);
    pendingFlash = null;
  }
  const ctx = {
    main,
    state,
    alive: () => generation === gen,
    /** Runs `fn` after `ms` unless the page is left first; one pending run per key. */
    later(key, fn, ms) {
      if (generation !== gen) return;
      const timers = current.timers;
      clearTimeout(timers.get(key));
      timers.set(key, setTimeout(() => {
        timers.delete(key);
        if (generation === gen) fn();
      }, ms));
    },
    cancel(key) {
      clearTimeout(current.timers.get(key));
      current.timers.delete(key);
    },
    onLeave(fn) {
      current.leave.push(fn);
    },
    rerender: () => render(),
    go,
  };
  Promise.resolve()
    .then(() => page(ctx, ...(m ? m.slice(1) : [])))
    .catch((e) => {
      if (ctx.alive()) {
        clear(main, h('div', { class: 'notice notice-error', role: 'alert', testid: 'error-banner' }, errorText(e)));
      }
    });
}

function langButton() {
  return h('button', {
    type: 'button',
    class: 'btn btn-ghost lang-toggle',
    testid: 'lang-toggle',
    'aria-label': t('app.langLabel'),
    lang: getLang() === 'zh' ? 'en' : 'zh-CN',
    text: t('app.lang'),
    on: {
      click: () => {
        setLang(getLang() === 'zh' ? 'en' : 'zh');
        render();
      },
    },
  });
}

let shell = null; // { key, main, links }

/** The header and navigation are built once per language and session; pages swap in `main`. */
function renderShell(session, nav) {
  const key = `${getLang()}|${session.token}`;
  if (!shell || shell.key !== key || !root.contains(shell.main)) shell = buildShell(session, key);
  for (const [name, a] of Object.entries(shell.links)) {
    a.classList.toggle('active', name === nav);
    if (name === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clear(shell.main);
  return shell.main;
}

function buildShell(session, key) {
  const links = {};
  const navLink = (name, href) =>
    h('li', {}, (links[name] = h('a', { href, testid: `nav-${name}`, text: t(`nav.${name}`) })));
  const notices = h('div', { class: 'notices', testid: 'notices', 'aria-live': 'polite' });
  const main = h('div', { class: 'page', testid: 'page' });
  setNoticeRoot(notices);
  clear(
    root,
    h('a', { class: 'skip-link', href: '#main', text: t('app.skip'), on: { click: (e) => { e.preventDefault(); document.getElementById('main')?.focus(); } } }),
    h(
      'header',
      { class: 'topbar' },
      h('div', { class: 'brand' }, h('img', { src: 'favicon.svg', alt: '', width: 24, height: 24 }), h('span', { text: t('app.title') })),
      h(
        'div',
        { class: 'topbar-right' },
        h('span', { class: 'topbar-item', testid: 'region' }, `${t('app.region')}: `, h('strong', { text: session.region || '-' })),
        h('span', { class: 'topbar-item', testid: 'account-name' }, `${t('app.account')}: `, h('strong', { text: session.name })),
        h('span', { class: 'topbar-item account-id', title: t('app.accountId') }, `${t('app.accountId')}: `, h('code', { testid: 'account-id', text: session.domainId || '-' })),
        langButton(),
        h('button', {
          type: 'button',
          class: 'btn btn-ghost',
          testid: 'logout',
          text: t('app.logout'),
          on: {
            click: () => {
              logout();
              location.hash = '#/login';
              render();
            },
          },
        }),
      ),
    ),
    h(
      'div',
      { class: 'layout' },
      h(
        'nav',
        { class: 'sidebar', 'aria-label': t('nav.label') },
        h('div', { class: 'sidebar-title', text: t('nav.label') }),
        h('ul', {}, navLink('endpoints', '#/endpoints'), navLink('services', '#/services'), navLink('quotas', '#/quotas'), navLink('openapi', '#/openapi')),
      ),
      h('main', { id: 'main', class: 'main', tabindex: '-1' }, notices, main),
    ),
  );
  return { key, main, links };
}

function renderLogin(message) {
  shell = null;
  setNoticeRoot(null);
  document.title = `${t('login.title')} - ${t('app.title')}`;
  const nameId = nextId('login');
  const pwId = nextId('login');
  const err = h('div', { class: 'dialog-error', role: 'alert', testid: 'login-error', hidden: !message, text: message || '' });
  const name = h('input', { id: nameId, name: 'username', autocomplete: 'username', required: true, testid: 'login-name' });
  const pw = h('input', { id: pwId, name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit', text: t('login.submit') });
  const form = h(
    'form',
    { class: 'login-card', testid: 'login-form', 'aria-labelledby': 'login-title' },
    h('div', { class: 'login-top' }, h('div', { class: 'brand' }, h('img', { src: 'favicon.svg', alt: '', width: 28, height: 28 }), h('span', { text: t('app.title') })), langButton()),
    h('h1', { id: 'login-title', text: t('login.title') }),
    h('div', { class: 'field-stack' }, h('label', { for: nameId, text: t('login.name') }), name),
    h('div', { class: 'field-stack' }, h('label', { for: pwId, text: t('login.password') }), pw),
    err,
    submit,
    h('p', { class: 'hint', text: t('login.hint') }),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    submit.textContent = t('login.busy');
    err.hidden = true;
    try {
      await login(name.value.trim(), pw.value);
      if (routePath() === '/login' || !location.hash) location.hash = '#/endpoints';
      else render();
    } catch (ex) {
      err.textContent = errorText(ex);
      err.hidden = false;
      submit.disabled = false;
      submit.textContent = t('login.submit');
      pw.select();
    }
  });
  clear(root, h('div', { class: 'login-page' }, form));
  name.focus();
}

setExpiredHandler((err) => {
  leaveCurrent();
  current = null;
  renderLogin(errorText(err));
});

let lastPath = null;
window.addEventListener('hashchange', () => {
  const path = routePath();
  if (path !== lastPath) clearNotices();
  lastPath = path;
  render({ keepState: false });
  document.getElementById('main')?.focus({ preventScroll: true });
});

setLang(getLang());
lastPath = routePath();
render();
