// Small DOM helpers shared by the pages: element builder, notices, dialogs, tables,
// paging, status badges. Text always goes in as text nodes, never as HTML.

import { t, statusLabel } from './i18n.js';

/**
 * Builds an element. `attrs`: `class`, `text`, `testid` (→ data-testid), `on` (event
 * map), `dataset`, boolean properties (`checked`, `disabled`, …) and plain attributes.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (['checked', 'disabled', 'value', 'selected', 'hidden', 'required'].includes(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A fresh id for label/control pairs. */
export const nextId = (prefix = 'f') => `${prefix}-${++uid}`;

// ---- notices -------------------------------------------------------------------------

let noticeRoot = null;

export function setNoticeRoot(el) {
  noticeRoot = el;
}

export function clearNotices() {
  if (noticeRoot) noticeRoot.replaceChildren();
}

/** `[code] message` of an API error (or any error). */
export function errorText(err) {
  if (err && err.code) return `${err.code}: ${err.message}`;
  return String((err && err.message) || err);
}

/** Shows an error until dismissed (or the page changes). */
export function showError(err) {
  console.warn('vpcep console:', err);
  if (!noticeRoot) return;
  const box = h(
    'div',
    { class: 'notice notice-error', role: 'alert', testid: 'error-banner' },
    h('span', { class: 'notice-label', text: t('common.error') }),
    h('span', { class: 'notice-text', testid: 'error-text', text: errorText(err) }),
    h('button', {
      class: 'notice-close',
      type: 'button',
      'aria-label': t('common.dismiss'),
      text: '×',
      on: { click: () => box.remove() },
    }),
  );
  noticeRoot.append(box);
}

export function showSuccess(text) {
  if (!noticeRoot) return;
  const box = h('div', { class: 'notice notice-ok', role: 'status', testid: 'success-banner', text });
  noticeRoot.append(box);
  setTimeout(() => box.remove(), 4000);
}

// ---- dialogs -------------------------------------------------------------------------

/**
 * A modal dialog. `ok` runs on confirm; if it throws, the error is shown inside the
 * dialog and the dialog stays open. Resolves true when confirmed and ok succeeded.
 */
export function modal({ title, body, okText, cancelText, ok, testid = 'modal', danger = false }) {
  return new Promise((resolve) => {
    const titleId = nextId('dlg');
    const errBox = h('div', { class: 'dialog-error', role: 'alert', testid: `${testid}-error`, hidden: true });
    const okBtn = h('button', {
      type: 'submit',
      class: danger ? 'btn btn-danger' : 'btn btn-primary',
      testid: `${testid}-ok`,
      text: okText || t('common.ok'),
    });
    const cancelBtn = h('button', {
      type: 'button',
      class: 'btn',
      testid: `${testid}-cancel`,
      text: cancelText || t('common.cancel'),
    });
    const form = h(
      'form',
      { method: 'dialog', class: 'dialog-form' },
      h('h2', { id: titleId, class: 'dialog-title', text: title }),
      h('div', { class: 'dialog-body' }, body),
      errBox,
      h('div', { class: 'dialog-actions' }, okBtn, cancelBtn),
    );
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': titleId, testid }, form);
    let done = false;
    const finish = (v) => {
      if (done) return;
      done = true;
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    cancelBtn.addEventListener('click', () => finish(false));
    dlg.addEventListener('cancel', (e) => {
      e.preventDefault();
      finish(false);
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!ok) return finish(true);
      okBtn.disabled = true;
      errBox.hidden = true;
      try {
        await ok();
        finish(true);
      } catch (err) {
        errBox.textContent = errorText(err);
        errBox.hidden = false;
        okBtn.disabled = false;
      }
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Yes/No question (the guide's “在弹出的对话框中单击‘是’”). */
export function confirmDialog(text, { danger = true, ok } = {}) {
  return modal({
    title: t('common.confirmTitle'),
    body: h('p', { class: 'confirm-text', testid: 'confirm-text', text }),
    okText: t('common.yes'),
    cancelText: t('common.no'),
    testid: 'confirm',
    danger,
    ok,
  });
}

// ---- tables --------------------------------------------------------------------------

/**
 * `columns`: [{label, render(row) → Node|string, class}]. Rows get
 * `data-testid="{testid}-row"` and `data-id`.
 */
export function table({ columns, rows, testid, caption, rowId = (r) => r.id }) {
  const thead = h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label))));
  const body = rows.length
    ? rows.map((r) =>
        h(
          'tr',
          { testid: `${testid}-row`, dataset: { id: rowId(r) ?? '' } },
          columns.map((c) => h('td', { class: c.class, dataset: { col: c.key || '' } }, c.render(r))),
        ),
      )
    : [h('tr', {}, h('td', { colspan: columns.length, class: 'empty', text: t('common.none') }))];
  return h(
    'div',
    { class: 'table-wrap' },
    h('table', { class: 'table', testid }, caption ? h('caption', { class: 'sr-only', text: caption }) : null, thead, h('tbody', {}, body)),
  );
}

/** Paging controls for limit/offset lists with a total count. */
export function pager({ total, limit, offset, onChange, testid = 'pager' }) {
  const pages = Math.max(1, Math.ceil(total / limit));
  const page = Math.floor(offset / limit) + 1;
  const sizeId = nextId('size');
  return h(
    'nav',
    { class: 'pager', 'aria-label': 'pagination', testid },
    h('span', { class: 'pager-total', testid: `${testid}-total`, text: t('common.total', { n: total }) }),
    h('label', { for: sizeId, class: 'pager-size-label', text: t('common.pageSize') }),
    h(
      'select',
      { id: sizeId, on: { change: (e) => onChange(0, Number(e.target.value)) } },
      [10, 20, 50, 100].map((n) => h('option', { value: String(n), selected: n === limit, text: String(n) })),
    ),
    h('button', {
      type: 'button',
      class: 'btn btn-small',
      testid: `${testid}-prev`,
      disabled: page <= 1,
      text: t('common.prev'),
      on: { click: () => onChange(Math.max(0, offset - limit), limit) },
    }),
    h('span', { class: 'pager-page', text: t('common.page', { p: page, n: pages }) }),
    h('button', {
      type: 'button',
      class: 'btn btn-small',
      testid: `${testid}-next`,
      disabled: page >= pages,
      text: t('common.next'),
      on: { click: () => onChange(offset + limit, limit) },
    }),
  );
}

// ---- small pieces --------------------------------------------------------------------

export const TRANSITIONAL = new Set(['creating', 'deleting']);

export function statusBadge(status) {
  return h('span', {
    class: `status status-${status}`,
    testid: 'status',
    dataset: { status: status || '' },
    text: statusLabel(status),
  });
}

/** `2025-01-01T12:00:00Z` → local `2025-01-01 20:00:00 GMT+08:00`. */
export function fmtTime(s) {
  if (!s) return '-';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return s;
  const pad = (n) => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const tz = `GMT${sign}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${tz}`;
}

export const dash = (v) => (v === undefined || v === null || v === '' ? '-' : v);

export function link(href, text, testid) {
  return h('a', { href, testid, text });
}

/** A label/value list for detail pages; `items`: [[label, value, testid]]. */
export function infoList(items) {
  return h(
    'dl',
    { class: 'info' },
    items.map(([label, value, testid]) =>
      h('div', { class: 'info-row' }, h('dt', { text: label }), h('dd', { testid }, value ?? '-')),
    ),
  );
}

/** A form row: label, control, optional hint and error slot. */
export function field({ label, control, hint, error, required = false, id, describes }) {
  const fid = id || control.id || nextId('fld');
  if (!id && !control.id) control.id = fid;
  const hintEl = hint ? h('div', { class: 'hint', id: `${fid}-hint` }, hint) : null;
  const target = describes || control;
  const described = [hintEl && hintEl.id, error && error.id].filter(Boolean).join(' ');
  if (described) target.setAttribute('aria-describedby', described);
  return h(
    'div',
    { class: 'field' },
    h('label', { class: 'field-label', for: fid }, label, required ? h('span', { class: 'req', 'aria-hidden': 'true', text: ' *' }) : null),
    h('div', { class: 'field-control' }, control, hintEl, error || null),
  );
}

/** A group of controls with a visible legend (radio groups and the like). */
export function fieldset({ legend, children, hint, testid }) {
  return h(
    'fieldset',
    { class: 'field fieldset', testid },
    h('legend', { class: 'field-label', text: legend }),
    h('div', { class: 'field-control' }, children, hint ? h('div', { class: 'hint' }, hint) : null),
  );
}

export function radio(name, value, label, checked, onChange, testid) {
  const id = nextId('r');
  return h(
    'span',
    { class: 'radio' },
    h('input', { type: 'radio', id, name, value, checked, testid, on: { change: onChange } }),
    h('label', { for: id, text: label }),
  );
}

/** A <select> with a placeholder; `options`: [{value, label}]. */
export function select({ options, value, onChange, testid, placeholder = t('common.choose'), id }) {
  return h(
    'select',
    { id, testid, on: { change: (e) => onChange(e.target.value) } },
    h('option', { value: '', text: placeholder, selected: !value }),
    options.map((o) => h('option', { value: o.value, selected: o.value === value, text: o.label })),
  );
}

export function pageHeader(title, ...actions) {
  document.title = `${title} - ${t('app.title')}`;
  return h('div', { class: 'page-header' }, h('h1', { text: title, testid: 'page-title' }), h('div', { class: 'page-actions' }, actions));
}

export function button(text, onClick, { testid, kind = '', disabled = false, label } = {}) {
  return h('button', {
    type: 'button',
    class: `btn ${kind ? `btn-${kind}` : ''}`.trim(),
    testid,
    disabled,
    'aria-label': label,
    text,
    on: { click: onClick },
  });
}

/** Runs `rebuild` (which replaces DOM) and puts focus back on the control with the same testid. */
export function keepFocus(rebuild) {
  const active = document.activeElement;
  const testid = active && active.dataset ? active.dataset.testid : null;
  rebuild();
  if (!testid) return;
  const again = document.querySelector(`[data-testid="${CSS.escape(testid)}"]`);
  if (again && again !== active) again.focus();
}

/** id → name of the caller's VPCs (names fall back to ids). */
export function vpcLabel(vpcs, id) {
  const v = vpcs.find((x) => x.id === id);
  return v ? v.name || v.id : id || '-';
}
