// The API reference (API 参考): /openapi.json rendered as a list of operations, each with
// its parameters, request body schema and response schemas (expanded from
// components.schemas on demand).

import { t } from './i18n.js';
import { h, clear, pageHeader, showError } from './ui.js';

let cached = null;

async function loadDoc() {
  if (cached) return cached;
  const r = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
  if (!r.ok) throw new Error(`/openapi.json: HTTP ${r.status}`);
  cached = await r.json();
  return cached;
}

const refName = (ref) => ref.split('/').pop();

/** The named schema a schema points at (directly, through an array, or in a oneOf). */
function target(s) {
  if (!s) return null;
  if (s.$ref) return refName(s.$ref);
  if (s.items) return target(s.items);
  if (s.additionalProperties && typeof s.additionalProperties === 'object') return target(s.additionalProperties);
  for (const alt of s.oneOf || s.anyOf || []) {
    const n = target(alt);
    if (n) return n;
  }
  return null;
}

/** A short type label: `string | null`, `array of TagOut`, `map of string`, `any`. */
function typeLabel(s) {
  if (!s || Object.keys(s).filter((k) => k !== 'description').length === 0) return 'any';
  if (s.$ref) return refName(s.$ref);
  if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map(typeLabel).join(' | ');
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  if (types.length === 0) return 'any';
  return types
    .map((ty) => {
      if (ty === 'array') return `array of ${typeLabel(s.items)}`;
      if (ty === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') return `map of ${typeLabel(s.additionalProperties)}`;
      if (s.format) return `${ty} (${s.format})`;
      return ty;
    })
    .join(' | ');
}

/** The properties of a named schema as a nested list; nested named schemas open on demand. */
function schemaView(doc, name, depth = 0) {
  const s = (doc.components.schemas || {})[name];
  if (!s) return h('p', { class: 'hint', text: name });
  const props = Object.entries(s.properties || {});
  const required = new Set(s.required || []);
  return h(
    'div',
    { class: 'schema', testid: 'openapi-schema', dataset: { schema: name } },
    s.description ? h('p', { class: 'hint', text: s.description }) : null,
    props.length === 0
      ? h('p', { class: 'hint', text: typeLabel(s) === 'object' ? t('openapi.noFields') : typeLabel(s) })
      : h(
          'ul',
          { class: 'schema-props' },
          props.map(([prop, ps]) => {
            const line = [
              h('code', { class: 'schema-prop', text: prop }),
              required.has(prop) ? h('span', { class: 'req', title: t('openapi.required'), text: ' *' }) : null,
              ' ',
              h('span', { class: 'schema-type', text: typeLabel(ps) }),
              ps.description ? h('span', { class: 'hint', text: ` — ${ps.description}` }) : null,
            ];
            const inner = target(ps);
            if (!inner || depth > 6) return h('li', {}, line);
            const det = h('details', {}, h('summary', {}, line));
            det.addEventListener('toggle', () => {
              if (det.open && det.children.length === 1) det.append(schemaView(doc, inner, depth + 1));
            }, { once: false });
            return h('li', {}, det);
          }),
        ),
  );
}

function bodyView(doc, content) {
  const schema = content && content['application/json'] && content['application/json'].schema;
  if (!schema) return h('p', { class: 'hint', text: t('openapi.noBody') });
  const name = target(schema);
  return h('div', {}, h('div', { class: 'schema-name' }, h('code', { text: typeLabel(schema) })), name ? schemaView(doc, name) : null);
}

function operationView(doc, path, method, op) {
  const det = h(
    'details',
    { class: 'op', testid: 'openapi-op', dataset: { op: op.operationId } },
    h(
      'summary',
      {},
      h('span', { class: `op-method op-${method}`, text: method.toUpperCase() }),
      ' ',
      h('code', { class: 'op-path', text: path }),
      ' ',
      h('span', { class: 'op-summary', text: op.summary || '' }),
    ),
  );
  det.addEventListener('toggle', () => {
    if (!det.open || det.children.length > 1) return;
    const params = op.parameters || [];
    det.append(
      h(
        'div',
        { class: 'op-body' },
        h('p', {}, h('span', { class: 'hint', text: `${t('openapi.operationId')}: ` }), h('code', { text: op.operationId })),
        h('h3', { text: t('openapi.parameters') }),
        params.length === 0
          ? h('p', { class: 'hint', text: '-' })
          : h('ul', { class: 'schema-props' }, params.map((p) => h('li', {}, h('code', { text: p.name }), ` (${p.in}) `, h('span', { class: 'schema-type', text: typeLabel(p.schema) })))),
        h('h3', { text: t('openapi.request') }),
        h('div', { testid: 'openapi-request' }, op.requestBody ? bodyView(doc, op.requestBody.content) : h('p', { class: 'hint', text: t('openapi.noBody') })),
        h('h3', { text: t('openapi.responses') }),
        Object.entries(op.responses || {}).map(([status, r]) =>
          h(
            'div',
            { class: 'op-response', testid: 'openapi-response', dataset: { status } },
            h('h4', {}, h('code', { text: status === 'default' ? t('openapi.error') : status }), ' ', h('span', { class: 'hint', text: r.description || '' })),
            bodyView(doc, r.content),
          ),
        ),
      ),
    );
  });
  return det;
}

export async function page(ctx) {
  const body = h('div', { testid: 'openapi', 'aria-busy': 'true' }, t('app.loading'));
  clear(ctx.main, pageHeader(t('openapi.title'), h('a', { class: 'btn', href: '/openapi.json', target: '_blank', rel: 'noopener', testid: 'openapi-raw', text: 'openapi.json' })), body);
  let doc;
  try {
    doc = await loadDoc();
  } catch (e) {
    if (ctx.alive()) showError(e);
    return;
  }
  if (!ctx.alive()) return;
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) ops.push({ path, method, op });
  }
  const list = h('div', { class: 'op-list' });
  const search = h('input', { type: 'search', testid: 'openapi-filter', placeholder: t('openapi.filter'), 'aria-label': t('openapi.filter') });
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = ops.filter(({ path, method, op }) => !q || `${method} ${path} ${op.operationId} ${op.summary || ''}`.toLowerCase().includes(q));
    clear(list, shown.map(({ path, method, op }) => operationView(doc, path, method, op)));
  };
  search.addEventListener('input', draw);
  clear(
    body,
    h('p', { class: 'hint', text: t('openapi.hint', { version: doc.openapi, count: ops.length }) }),
    h('div', { class: 'list-tools' }, search),
    list,
  );
  draw();
  body.removeAttribute('aria-busy');
}
