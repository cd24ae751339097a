// Small DOM helpers shared by the pages: element builder, notices, dialogs, tables,
// paging, status badges, and the shared components (paged lists, switches, tags).
// Text always goes in as text nodes, never as HTML.

import { api, p } from './api.js';
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

/** On/Off text of a boolean setting. */
export const onOff = (v) => (v ? t('common.enabled') : t('common.disabled'));

/**
 * A switch (a checkbox with `role="switch"`) followed by its On/Off text. `onChange`
 * gets the new value and the input. The wrapper's text is the On/Off text only.
 */
export function switchControl({ checked, testid, id = nextId('sw'), disabled = false, onChange }) {
  const state = h('span', { class: 'switch-state', 'aria-hidden': 'true', text: onOff(checked) });
  const input = h('input', {
    type: 'checkbox',
    role: 'switch',
    id,
    class: 'switch',
    checked,
    disabled,
    testid,
    'aria-checked': checked ? 'true' : 'false',
    on: {
      change: (e) => {
        const v = e.target.checked;
        e.target.setAttribute('aria-checked', v ? 'true' : 'false');
        state.textContent = onOff(v);
        if (onChange) onChange(v, e.target);
      },
    },
  });
  const row = h('span', { class: 'switch-row' }, input, state);
  /** Sets the switch without running `onChange` (to put back the server's value). */
  row.set = (v) => {
    input.checked = v;
    input.setAttribute('aria-checked', v ? 'true' : 'false');
    state.textContent = onOff(v);
  };
  row.input = input;
  return row;
}

// ---- paged lists ---------------------------------------------------------------------

/**
 * A paged table with an optional name filter, a Refresh button, a polling hint while a
 * row is creating or deleting (refreshing every second), and the pager. Used by the
 * endpoint and service lists and by the connection and whitelist tabs.
 *
 * - `name`: testid prefix: `{name}-list`, `-table`, `-pager`, `-filter`, `-search`, `-refresh`.
 * - `state`: `{ offset, limit, filter? }`, kept by the caller across visits.
 * - `load(state)` → `{ rows, total }` (rejects with an ApiError, which is shown).
 * - `columns(rows)` → column definitions for `table()`.
 * - `filter`: placeholder text of the name filter (no filter when absent).
 * - `intro`: nodes above the toolbar; `tools`: buttons at the start of the toolbar.
 * - `refresh`: show a Refresh button (default true); `onRows(rows)`: after each load.
 *
 * Returns `{ el, refresh }`; call `refresh()` once to load the first page.
 */
export function listView(ctx, { name, state, load, columns, caption, rowId, filter, intro, tools = [], refresh: refreshButton = true, onRows }) {
  const body = h('div', { testid: `${name}-list`, 'aria-busy': 'true' }, t('app.loading'));
  const polling = h('div', { class: 'hint polling', testid: 'polling', hidden: true, text: t('common.autoRefresh') });
  let filterInput = null;
  if (filter) {
    filterInput = h('input', {
      type: 'search',
      value: state.filter || '',
      placeholder: filter,
      'aria-label': filter,
      testid: `${name}-filter`,
    });
  }
  const toolbar = h(
    filter ? 'form' : 'div',
    {
      class: 'toolbar',
      role: filter ? 'search' : null,
      on: filter
        ? {
            submit: (e) => {
              e.preventDefault();
              state.filter = filterInput.value.trim();
              state.offset = 0;
              refresh();
            },
          }
        : null,
    },
    tools,
    filterInput,
    filter ? h('button', { type: 'submit', class: 'btn', testid: `${name}-search`, text: t('common.search') }) : null,
    refreshButton ? button(t('common.refresh'), () => refresh(), { testid: `${name}-refresh` }) : null,
  );
  const pollKey = `poll-${name}`;

  async function refresh() {
    ctx.cancel(pollKey);
    let data;
    try {
      data = await load(state);
    } catch (e) {
      if (ctx.alive()) {
        showError(e);
        body.removeAttribute('aria-busy');
      }
      return;
    }
    if (!ctx.alive()) return;
    const total = data.total || 0;
    if (state.offset > 0 && state.offset >= total) {
      // The last page emptied (deletions, or a filter): show the last page that has rows.
      const last = total > 0 ? Math.floor((total - 1) / state.limit) * state.limit : 0;
      if (last !== state.offset) {
        state.offset = last;
        return refresh();
      }
    }
    const rows = data.rows || [];
    if (onRows) onRows(rows);
    keepFocus(() =>
      clear(
        body,
        table({ testid: `${name}-table`, caption, rows, rowId, columns: columns(rows) }),
        pager({
          total,
          limit: state.limit,
          offset: state.offset,
          testid: `${name}-pager`,
          onChange: (offset, limit) => {
            state.offset = offset;
            state.limit = limit;
            refresh();
          },
        }),
      ),
    );
    body.removeAttribute('aria-busy');
    const moving = rows.some((r) => TRANSITIONAL.has(r.status));
    polling.hidden = !moving;
    if (moving) ctx.later(pollKey, refresh, 1000);
  }

  return { el: h('div', { class: 'list-view' }, intro, toolbar, polling, body), refresh };
}

// ---- tags ----------------------------------------------------------------------------

/**
 * The tags of one endpoint or endpoint service: a table with Add, Edit and Delete.
 * `kind` is the tag API's resource type (`endpoint` or `endpoint_service`); `tags` the
 * resource's current tags; `onChanged()` reloads the resource and draws again.
 * Testids: `tag-add`, `tag-table(-row)`, `tag-key`, `tag-value`, `tag-edit`,
 * `tag-delete`, and in the dialog `tag-dialog`, `tag-key-input`, `tag-value-input`.
 */
export function tagsSection({ kind, id, tags, busy = false, onChanged, framed = true, testid = 'tags' }) {
  const path = p(`/${kind}/${encodeURIComponent(id)}/tags/action`);
  const titleId = nextId('tags');

  async function edit(tag) {
    const key = h('input', { type: 'text', value: tag ? tag.key : '', testid: 'tag-key-input', maxlength: 128, readonly: tag ? true : null, required: true });
    const value = h('input', { type: 'text', value: tag ? tag.value : '', testid: 'tag-value-input', maxlength: 255 });
    const done = await modal({
      title: tag ? t('tag.edit') : t('tag.add'),
      testid: 'tag-dialog',
      body: [
        field({ label: t('tag.key'), control: key, required: true, hint: tag ? null : t('tag.keyHint') }),
        field({ label: t('tag.value'), control: value, hint: t('tag.valueHint') }),
      ],
      ok: async () => {
        const k = key.value.trim();
        if (!k) throw new Error(t('tag.keyRequired'));
        await api('POST', path, { action: 'create', tags: [{ key: k, value: value.value.trim() }] });
      },
    });
    if (done) await onChanged();
  }

  async function remove(tag) {
    if (!(await confirmDialog(t('tag.deleteConfirm', { key: tag.key })))) return;
    try {
      await api('POST', path, { action: 'delete', tags: [{ key: tag.key }] });
    } catch (e) {
      showError(e);
    }
    await onChanged();
  }

  return h(
    'section',
    { class: framed ? 'card' : 'tags-section', 'aria-labelledby': titleId, testid },
    h(
      'div',
      { class: 'card-head' },
      h('h2', { id: titleId, text: t('tag.title') }),
      button(t('tag.add'), () => edit(null), { testid: 'tag-add', kind: 'primary', disabled: busy || tags.length >= 20 }),
    ),
    table({
      testid: 'tag-table',
      caption: t('tag.title'),
      rows: tags,
      rowId: (x) => x.key,
      columns: [
        { key: 'key', label: t('tag.key'), render: (x) => h('span', { testid: 'tag-key', text: x.key }) },
        { key: 'value', label: t('tag.value'), render: (x) => h('span', { testid: 'tag-value', text: x.value }) },
        {
          key: 'op',
          label: t('common.operation'),
          render: (x) => [
            button(t('common.edit'), () => edit(x), { testid: 'tag-edit', kind: 'link', disabled: busy, label: `${t('common.edit')} ${x.key}` }),
            button(t('common.delete'), () => remove(x), { testid: 'tag-delete', kind: 'link', disabled: busy, label: `${t('common.delete')} ${x.key}` }),
          ],
        },
      ],
    }),
    h('p', { class: 'hint', text: t('tag.limits') }),
  );
}
