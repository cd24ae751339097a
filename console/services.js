// Endpoint services (终端节点服务): list, create, and details with the tabs of the user
// guide (basic info with the approval switch, connection management with notes,
// permission management, port mapping) and tags.

import { api, p, qs, getSession, ApiError } from './api.js';
import { t } from './i18n.js';
import {
  h, clear, table, statusBadge, fmtTime, dash, link, infoList, field, fieldset, radio,
  select, pageHeader, button, modal, confirmDialog, showError, showSuccess, keepFocus, vpcLabel,
  TRANSITIONAL, nextId, listView, tagsSection, switchControl, onOff,
} from './ui.js';

export const LB_OWNER = 'neutron:LOADBALANCERV2';
const MAX_PORTS = 50;
const NAME_RE = /^[A-Za-z0-9_-]{0,16}$/;
/** Whitelist entries the server accepts: `*`, `iam:domain::*`, `iam:domain::<32 hex>`. */
export const PERMISSION_RE = /^(\*|iam:domain::(\*|[0-9a-f]{32}))$/;

const listState = { filter: '', offset: 0, limit: 10 };
const servicePath = (id, rest = '') => p(`/vpc-endpoint-services/${encodeURIComponent(id)}${rest}`);
const typeLabel = (type) => (type ? t(`type.${type}`) : '-');
const serverLabel = (st) => (st ? t(`server.${st}`) : '-');

/** The short name the owner gave: the middle part of `{region}.{name}.{id}`. */
function shortName(svc) {
  const parts = (svc.service_name || '').split('.');
  return parts.length >= 3 ? parts.slice(1, -1).join('.') : '';
}

async function loadVpcs() {
  return (await api('GET', p('/vpcs'))).vpcs || [];
}

/** Backends to pick from: the VPC's ports, named after their host when there is one. */
async function loadBackends() {
  const [ports, hosts] = await Promise.all([
    api('GET', p('/ports')).then((r) => r.ports || []),
    api('GET', p('/hosts')).then((r) => r.hosts || []).catch(() => []),
  ]);
  const hostName = new Map(hosts.map((x) => [x.port_id, x.name]));
  return ports.map((x) => ({
    id: x.id,
    vpcId: x.vpc_id,
    lb: x.device_owner === LB_OWNER,
    owner: x.device_owner || '',
    ip: (x.fixed_ips || [])[0]?.ip_address || '',
    name: hostName.get(x.id) || x.name || '',
  }));
}

const backendLabel = (b) => `${b.name || b.id}${b.ip ? ` (${b.ip})` : ''}`;

// ---- list ----------------------------------------------------------------------------

export async function list(ctx) {
  let vpcs = [];
  const view = listView(ctx, {
    name: 'svc',
    state: listState,
    caption: t('svc.title'),
    filter: t('svc.filter'),
    load: async (st) => {
      const data = await api('GET', p(`/vpc-endpoint-services${qs({ endpoint_service_name: st.filter, limit: st.limit, offset: st.offset })}`));
      return { rows: data.endpoint_services || [], total: data.total_count };
    },
    columns: () => [
      { key: 'name', label: t('svc.name'), class: 'wrap', render: (x) => link(`#/services/${x.id}`, x.service_name, 'svc-link') },
      { key: 'id', label: t('svc.id'), render: (x) => h('span', { class: 'mono', text: x.id }) },
      { key: 'backend', label: t('svc.backendType'), render: (x) => serverLabel(x.server_type) },
      { key: 'vpc', label: t('common.vpc'), render: (x) => vpcLabel(vpcs, x.vpc_id) },
      { key: 'status', label: t('common.status'), render: (x) => statusBadge(x.status) },
      { key: 'approval', label: t('svc.approval'), render: (x) => onOff(x.approval_enabled) },
      { key: 'type', label: t('svc.serviceType'), render: (x) => typeLabel(x.service_type) },
      { key: 'conns', label: t('svc.connections'), render: (x) => String(x.connection_count ?? 0) },
      { key: 'created', label: t('common.created'), render: (x) => fmtTime(x.created_at) },
      {
        key: 'op',
        label: t('common.operation'),
        render: (x) => button(t('common.delete'), () => remove(x), { testid: 'svc-delete', kind: 'link', disabled: x.status === 'deleting', label: `${t('common.delete')} ${x.service_name}` }),
      },
    ],
  });
  clear(
    ctx.main,
    pageHeader(t('svc.title'), button(t('svc.create'), () => ctx.go('/services/create'), { testid: 'svc-create', kind: 'primary' })),
    view.el,
  );
  try {
    vpcs = await loadVpcs();
  } catch (e) {
    showError(e);
  }

  async function remove(svc) {
    if (await deleteService(svc)) view.refresh();
  }

  await view.refresh();
}

/** Asks, then deletes; a refusal (EndPoint.3006 while endpoints are connected) is shown. */
async function deleteService(svc) {
  if (!(await confirmDialog(t('svc.deleteConfirm', { name: svc.service_name })))) return false;
  try {
    await api('DELETE', servicePath(svc.id));
    return true;
  } catch (e) {
    showError(e);
    return false;
  }
}

// ---- create --------------------------------------------------------------------------

export async function create(ctx) {
  const s = ctx.state;
  if (!s.init) {
    Object.assign(s, {
      init: true,
      name: '',
      vpcId: '',
      approval: true,
      ports: [{ protocol: 'TCP', server: '', client: '' }],
      serverType: 'VM',
      portId: '',
      description: '',
      vpcs: null,
      backends: null,
      problem: '',
      tried: false,
    });
  }
  const wrap = h('div', { class: 'form-page' }, t('app.loading'));
  clear(ctx.main, pageHeader(t('svcc.title'), button(t('common.back'), () => ctx.go('/services'), { testid: 'svc-back' })), wrap);
  const [v, b] = await Promise.allSettled([s.vpcs ? s.vpcs : loadVpcs(), s.backends ? s.backends : loadBackends()]);
  if (v.status === 'rejected') showError(v.reason);
  if (b.status === 'rejected') showError(b.reason);
  s.vpcs = v.value || [];
  s.backends = b.value || [];
  if (!ctx.alive()) return;
  if (!s.vpcId && s.vpcs.length === 1) s.vpcId = s.vpcs[0].id;
  draw();

  function draw() {
    keepFocus(() => clear(wrap, form()));
  }

  function nameProblem(name) {
    return NAME_RE.test(name) ? '' : t('svcc.nameBad');
  }

  function portProblem(raw) {
    if (raw === '' || raw === undefined) return t('svcc.portBad');
    if (!/^\d+$/.test(String(raw).trim())) return t('svcc.portBad');
    const n = Number(raw);
    return n >= 1 && n <= 65535 ? '' : t('svcc.portBad');
  }

  /** Row index → repeated (client port, protocol) problem. */
  function duplicates() {
    const seen = new Map();
    const dup = new Set();
    s.ports.forEach((r, i) => {
      const k = `${Number(r.client)}/${r.protocol}`;
      if (r.client === '' || portProblem(r.client)) return;
      if (seen.has(k)) {
        dup.add(i);
        dup.add(seen.get(k));
      } else seen.set(k, i);
    });
    return dup;
  }

  function candidates() {
    return s.backends.filter((x) => x.vpcId === s.vpcId && (s.serverType === 'LB' ? x.lb : !x.lb && !x.owner.startsWith('network:')));
  }

  function form() {
    // Name, with live validation.
    const nameErr = h('div', { class: 'field-error', id: nextId('err'), testid: 'svc-name-error', role: 'alert', hidden: !nameProblem(s.name), text: nameProblem(s.name) });
    const nameInput = h('input', {
      type: 'text',
      value: s.name,
      testid: 'svc-name',
      autocomplete: 'off',
      'aria-invalid': nameProblem(s.name) ? 'true' : 'false',
      on: {
        input: (e) => {
          s.name = e.target.value;
          const msg = nameProblem(s.name);
          nameErr.textContent = msg;
          nameErr.hidden = !msg;
          nameInput.setAttribute('aria-invalid', msg ? 'true' : 'false');
          nameInput.classList.toggle('invalid', !!msg);
        },
      },
    });
    nameInput.classList.toggle('invalid', !!nameProblem(s.name));

    const vpcRow = field({
      label: t('common.vpc'),
      required: true,
      control: select({
        testid: 'svc-vpc',
        value: s.vpcId,
        options: s.vpcs.map((x) => ({ value: x.id, label: `${x.name || x.id} (${x.cidr})` })),
        onChange: (val) => {
          s.vpcId = val;
          s.portId = '';
          draw();
        },
      }),
      hint: s.vpcs.length ? null : t('epc.noVpc'),
    });

    const approval = switchControl({ checked: s.approval, testid: 'svc-approval', onChange: (v) => { s.approval = v; } });

    // Port mappings.
    const dup = duplicates();
    const rows = s.ports.map((r, i) => portRow(r, i, dup));
    const addBtn = button(t('svcc.addPort'), () => {
      if (s.ports.length >= MAX_PORTS) return;
      s.ports.push({ protocol: 'TCP', server: '', client: '' });
      draw();
      const inputs = document.querySelectorAll('[data-testid="port-server"]');
      inputs[inputs.length - 1]?.focus();
    }, { testid: 'port-add', disabled: s.ports.length >= MAX_PORTS });
    const portsTable = h(
      'table',
      { class: 'table ports-table', testid: 'port-rows' },
      h('caption', { class: 'sr-only', text: t('svcc.ports') }),
      h('thead', {}, h('tr', {}, [t('svc.protocol'), t('svc.serverPort'), t('svc.clientPort'), t('common.operation')].map((x) => h('th', { scope: 'col', text: x })))),
      h('tbody', {}, rows),
    );
    const portsBlock = fieldset({
      legend: t('svcc.ports'),
      testid: 'svc-ports',
      children: [
        portsTable,
        h('div', { class: 'inline' }, addBtn, h('span', { class: 'hint', testid: 'port-count', text: `${s.ports.length} / ${MAX_PORTS}` })),
        s.ports.length >= MAX_PORTS ? h('div', { class: 'hint', text: t('svcc.portsMax') }) : null,
      ],
      hint: [t('svcc.portsHint'), ' ', t('svc.portsImmutable')],
    });

    // Backend.
    const backendType = fieldset({
      legend: t('svcc.backend'),
      testid: 'svc-backend-type',
      children: [
        radio('server_type', 'VM', t('server.VM'), s.serverType === 'VM', () => { s.serverType = 'VM'; s.portId = ''; draw(); }, 'backend-vm'),
        radio('server_type', 'LB', t('server.LB'), s.serverType === 'LB', () => { s.serverType = 'LB'; s.portId = ''; draw(); }, 'backend-lb'),
      ],
      hint: h('div', { class: 'callout', testid: 'sg-hint' }, t('svcc.sgHint'), s.serverType === 'LB' ? h('div', { text: t('svcc.lbHint') }) : null),
    });
    const cands = candidates();
    const resourceRow = field({
      label: s.serverType === 'LB' ? t('svcc.pickLB') : t('svcc.pickVM'),
      required: true,
      control: select({
        testid: 'svc-resource',
        value: s.portId,
        options: cands.map((x) => ({ value: x.id, label: backendLabel(x) })),
        onChange: (val) => { s.portId = val; },
      }),
      hint: s.vpcId && !cands.length ? t('svcc.noResource') : null,
    });

    const descInput = h('input', { type: 'text', value: s.description, maxlength: 512, testid: 'svc-description', on: { input: (e) => { s.description = e.target.value; } } });

    const problem = h('div', { class: 'form-problem', role: 'alert', testid: 'svc-form-problem', hidden: !s.problem, text: s.problem });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'svc-submit', text: t('svcc.submit') });
    const f = h(
      'form',
      { class: 'form card', testid: 'svc-create-form', novalidate: true },
      field({ label: t('common.region'), control: h('output', { text: getSession().region || '-' }) }),
      field({
        label: `${t('svc.name')} (${t('common.optional')})`,
        control: nameInput,
        hint: [t('svcc.nameHint'), ' ', t('svcc.nameFormat', { region: getSession().region || '{region}', name: s.name || '{name}', id: '{service_id}' })],
        error: nameErr,
      }),
      vpcRow,
      field({ label: t('svc.serviceType'), control: h('output', { text: t('svcc.typeFixed') }) }),
      field({ label: t('svc.approval'), control: approval, id: approval.input.id, hint: t('svcc.approvalHint'), describes: approval.input }),
      portsBlock,
      backendType,
      resourceRow,
      field({ label: `${t('common.description')} (${t('common.optional')})`, control: descInput }),
      problem,
      h('div', { class: 'form-actions' }, submit, button(t('common.cancel'), () => ctx.go('/services'), { testid: 'svc-cancel' })),
    );
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      submitForm(submit);
    });
    return f;
  }

  function portRow(r, i, dup) {
    const n = i + 1;
    const cellErr = (testid) => h('div', { class: 'field-error', id: nextId('perr'), testid, role: 'alert' });
    const serverErr = cellErr('port-server-error');
    const clientErr = cellErr('port-client-error');
    const show = (input, errEl, raw, extra) => {
      const msg = (raw === '' && !s.tried ? '' : portProblem(raw)) || extra;
      errEl.textContent = msg;
      errEl.hidden = !msg;
      input.setAttribute('aria-invalid', msg ? 'true' : 'false');
      input.classList.toggle('invalid', !!msg);
    };
    const portInput = (key, testid, label, errEl) => {
      const input = h('input', {
        type: 'text',
        inputmode: 'numeric',
        value: r[key],
        testid,
        'aria-label': `${label} ${n}`,
        'aria-describedby': errEl.id,
        class: 'port-input',
        on: {
          input: (e) => {
            r[key] = e.target.value.trim();
            show(e.target, errEl, r[key], '');
            if (key === 'client') refreshDup();
          },
        },
      });
      return input;
    };
    const serverIn = portInput('server', 'port-server', t('svc.serverPort'), serverErr);
    const clientIn = portInput('client', 'port-client', t('svc.clientPort'), clientErr);
    show(serverIn, serverErr, r.server, '');
    show(clientIn, clientErr, r.client, dup.has(i) ? t('svcc.portDup') : '');
    const proto = h(
      'select',
      { testid: 'port-protocol', 'aria-label': `${t('svc.protocol')} ${n}`, on: { change: (e) => { r.protocol = e.target.value; refreshDup(); } } },
      ['TCP', 'UDP'].map((x) => h('option', { value: x, selected: r.protocol === x, text: x })),
    );
    return h(
      'tr',
      { testid: 'port-row' },
      h('td', {}, proto),
      h('td', {}, serverIn, serverErr),
      h('td', {}, clientIn, clientErr),
      h('td', {}, button(t('common.delete'), () => { s.ports.splice(i, 1); draw(); }, { testid: 'port-remove', kind: 'link', disabled: s.ports.length <= 1, label: `${t('svcc.removePort')} ${n}` })),
    );
  }

  /** Re-marks repeated client ports without rebuilding the form (keeps the caret). */
  function refreshDup() {
    const dup = duplicates();
    const rows = document.querySelectorAll('[data-testid="port-row"]');
    rows.forEach((tr, i) => {
      const input = tr.querySelector('[data-testid="port-client"]');
      const err = tr.querySelector('[data-testid="port-client-error"]');
      const r = s.ports[i];
      if (!r || !input || !err) return;
      const msg = (r.client === '' && !s.tried ? '' : portProblem(r.client)) || (dup.has(i) ? t('svcc.portDup') : '');
      err.textContent = msg;
      err.hidden = !msg;
      input.setAttribute('aria-invalid', msg ? 'true' : 'false');
      input.classList.toggle('invalid', !!msg);
    });
  }

  async function submitForm(btn) {
    s.tried = true;
    const bad =
      nameProblem(s.name) ||
      s.ports.some((r) => portProblem(r.server) || portProblem(r.client)) ||
      duplicates().size > 0;
    s.problem = bad ? t('svcc.fixErrors') : !s.vpcId ? t('svcc.needVpc') : !s.portId ? t('svcc.needResource') : '';
    if (s.problem) {
      draw();
      return;
    }
    btn.disabled = true;
    const body = {
      vpc_id: s.vpcId,
      port_id: s.portId,
      server_type: s.serverType,
      approval_enabled: !!s.approval,
      service_type: 'interface',
      ports: s.ports.map((r) => ({ client_port: Number(r.client), server_port: Number(r.server), protocol: r.protocol })),
    };
    if (s.name) body.service_name = s.name;
    if (s.description.trim()) body.description = s.description.trim();
    try {
      await api('POST', p('/vpc-endpoint-services'), body);
      ctx.go('/services', t('svcc.created'));
    } catch (e) {
      showError(e);
      btn.disabled = false;
    }
  }
}

// ---- detail --------------------------------------------------------------------------

const TABS = ['basic', 'connections', 'permissions', 'ports', 'tags'];

export async function detail(ctx, id, tab = 'basic') {
  if (!TABS.includes(tab)) tab = 'basic';
  const head = h('div');
  const panel = h('div', { class: 'tab-panel', role: 'tabpanel', id: 'svc-panel', 'aria-labelledby': `tab-${tab}`, testid: `panel-${tab}`, tabindex: '0' }, t('app.loading'));
  const tabs = h(
    'div',
    { class: 'tabs', role: 'tablist', 'aria-label': t('svc.title') },
    TABS.map((name) =>
      h('a', {
        href: `#/services/${id}/${name}`,
        role: 'tab',
        id: `tab-${name}`,
        testid: `tab-${name}`,
        'aria-selected': name === tab ? 'true' : 'false',
        'aria-controls': 'svc-panel',
        class: name === tab ? 'tab active' : 'tab',
        text: t(`svc.tab.${name}`),
        on: { keydown: (e) => tabKeys(e, name) },
      }),
    ),
  );
  function tabKeys(e, name) {
    const i = TABS.indexOf(name);
    const to = e.key === 'ArrowRight' ? TABS[(i + 1) % TABS.length] : e.key === 'ArrowLeft' ? TABS[(i + TABS.length - 1) % TABS.length] : null;
    if (!to) return;
    e.preventDefault();
    ctx.go(`/services/${id}/${to}`);
    setTimeout(() => document.getElementById(`tab-${to}`)?.focus(), 0);
  }
  clear(ctx.main, head, tabs, panel);

  let svc;
  try {
    svc = await api('GET', servicePath(id));
  } catch (e) {
    if (!ctx.alive()) return;
    clear(head, pageHeader(t('svc.title'), button(t('common.back'), () => ctx.go('/services'), { testid: 'svc-back' })));
    tabs.remove();
    if (e instanceof ApiError && e.status === 404) clear(panel, h('p', { class: 'empty-page', testid: 'svc-gone', text: t('common.notFound') }));
    else {
      clear(panel);
      showError(e);
    }
    return;
  }
  if (!ctx.alive()) return;
  const drawHead = () =>
    clear(
      head,
      pageHeader(
        svc.service_name,
        button(t('common.back'), () => ctx.go('/services'), { testid: 'svc-back' }),
        button(t('common.delete'), async () => {
          if (await deleteService(svc)) ctx.go('/services', t('common.deleted'));
        }, { testid: 'svc-detail-delete', kind: 'danger', disabled: svc.status === 'deleting' }),
      ),
    );
  drawHead();

  const reloadSvc = async () => {
    svc = await api('GET', servicePath(id));
    if (ctx.alive()) drawHead();
    return svc;
  };
  if (tab === 'basic') await basicTab(ctx, panel, svc, reloadSvc);
  else if (tab === 'connections') await connectionsTab(ctx, panel, svc);
  else if (tab === 'permissions') await permissionsTab(ctx, panel, svc);
  else if (tab === 'tags') tagsTab(ctx, panel, svc, reloadSvc);
  else portsTab(panel, svc);
}

async function basicTab(ctx, panel, svc, reload) {
  let vpcs = [];
  let backends = [];
  try {
    [vpcs, backends] = await Promise.all([loadVpcs(), loadBackends()]);
  } catch (e) {
    showError(e);
  }
  if (!ctx.alive()) return;

  /** Connection approval, changed in place (user guide 3.5); a refusal is shown and undone. */
  const approvalSwitch = () => {
    const sw = switchControl({
      checked: !!svc.approval_enabled,
      testid: 'svc-approval-switch',
      disabled: TRANSITIONAL.has(svc.status),
      onChange: async (v, input) => {
        input.disabled = true;
        try {
          svc = await api('PUT', servicePath(svc.id), { approval_enabled: v });
          if (ctx.alive()) showSuccess(v ? t('svc.approvalNowOn') : t('svc.approvalNowOff'));
        } catch (e) {
          if (!ctx.alive()) return;
          showError(e);
          // Show what the server has now (or, if that fails too, what it had).
          try {
            svc = await reload();
          } catch {
            // The error above is the one that matters.
          }
        }
        if (ctx.alive()) keepFocus(draw);
      },
    });
    sw.input.setAttribute('aria-label', t('svc.approval'));
    return sw;
  };

  const draw = () => {
    const backend = backends.find((x) => x.id === svc.port_id);
    clear(
      panel,
      TRANSITIONAL.has(svc.status) ? h('div', { class: 'hint polling', testid: 'polling', text: t('common.autoRefresh') }) : null,
      infoList([
        [t('svc.name'), dash(shortName(svc)), 'svc-short-name'],
        [t('svc.fullName'), h('code', { text: svc.service_name }), 'svc-full-name'],
        ['ID', svc.id, 'svc-id'],
        [t('svc.backendType'), serverLabel(svc.server_type)],
        [t('svc.backendName'), backend ? backendLabel(backend) : dash(svc.port_id), 'svc-backend'],
        [t('common.vpc'), vpcLabel(vpcs, svc.vpc_id)],
        [t('common.status'), statusBadge(svc.status), 'svc-status'],
        [t('svc.approval'), approvalSwitch(), 'svc-approval-value'],
        [t('svc.serviceType'), typeLabel(svc.service_type)],
        [t('svc.connections'), String(svc.connection_count ?? 0)],
        [t('common.created'), fmtTime(svc.created_at)],
        [t('common.description'), dash(svc.description)],
      ]),
      h('p', { class: 'hint', testid: 'svc-approval-hint', text: t('svc.approvalSwitchHint') }),
    );
  };
  draw();
  const poll = async () => {
    try {
      svc = await reload();
    } catch (e) {
      if (ctx.alive()) showError(e);
      return;
    }
    if (!ctx.alive()) return;
    keepFocus(draw);
    if (TRANSITIONAL.has(svc.status)) ctx.later('poll', poll, 1000);
  };
  if (TRANSITIONAL.has(svc.status)) ctx.later('poll', poll, 1000);
}

async function connectionsTab(ctx, panel, svc) {
  const view = listView(ctx, {
    name: 'conn',
    state: { offset: 0, limit: 10 },
    caption: t('svc.tab.connections'),
    intro: svc.approval_enabled ? null : h('p', { class: 'callout', testid: 'conn-approval-off', text: t('conn.approvalOff') }),
    load: async (st) => {
      const data = await api('GET', servicePath(svc.id, `/connections${qs({ limit: st.limit, offset: st.offset })}`));
      return { rows: data.connections || [], total: data.total_count };
    },
    columns: () => [
      { key: 'id', label: t('conn.endpointId'), render: (c) => h('span', { class: 'mono', testid: 'conn-id', text: c.id }) },
      { key: 'marker', label: t('ep.marker'), render: (c) => dash(c.marker_id) },
      { key: 'status', label: t('common.status'), render: (c) => statusBadge(c.status) },
      { key: 'owner', label: t('conn.owner'), render: (c) => h('span', { class: 'mono', text: dash(c.domain_id) }) },
      {
        key: 'desc',
        label: t('conn.note'),
        class: 'wrap',
        render: (c) =>
          h(
            'span',
            { class: 'inline' },
            h('span', { testid: 'conn-desc', text: dash(c.description) }),
            button(t('common.edit'), () => editNote(c), { testid: 'conn-desc-edit', kind: 'link', label: `${t('conn.editNote')} ${c.id}` }),
          ),
      },
      { key: 'created', label: t('common.created'), render: (c) => fmtTime(c.created_at) },
      {
        key: 'op',
        label: t('common.operation'),
        render: (c) => [
          button(t('conn.accept'), () => act(c, 'receive'), {
            testid: 'conn-accept',
            kind: 'link',
            disabled: !['pendingAcceptance', 'rejected'].includes(c.status),
            label: `${t('conn.accept')} ${c.id}`,
          }),
          button(t('conn.reject'), () => act(c, 'reject'), {
            testid: 'conn-reject',
            kind: 'link',
            disabled: !['pendingAcceptance', 'accepted'].includes(c.status),
            label: `${t('conn.reject')} ${c.id}`,
          }),
        ],
      },
    ],
  });
  clear(panel, view.el);

  const act = async (c, action) => {
    if (action === 'reject' && !(await confirmDialog(t('conn.rejectConfirm', { id: c.id })))) return;
    try {
      await api('POST', servicePath(svc.id, '/connections/action'), { action, endpoints: [c.id] });
    } catch (e) {
      showError(e);
    }
    view.refresh();
  };

  /** The provider's note on one connection (update_endpoint_connections_desc). */
  const editNote = async (c) => {
    const input = h('input', { type: 'text', class: 'wide', value: c.description || '', testid: 'conn-desc-input', maxlength: 512, autocomplete: 'off' });
    const done = await modal({
      title: t('conn.editNote'),
      testid: 'conn-desc-dialog',
      body: [
        field({ label: t('conn.endpointId'), control: h('output', { class: 'mono', text: c.id }) }),
        field({ label: t('conn.note'), control: input, hint: t('conn.noteHint') }),
      ],
      ok: async () => {
        await api('PUT', servicePath(svc.id, '/connections/description'), {
          connections: [{ id: c.id, description: input.value.trim() }],
        });
      },
    });
    if (done) view.refresh();
  };

  await view.refresh();
}

async function permissionsTab(ctx, panel, svc) {
  const state = { offset: 0, limit: 10, selected: new Set() };
  let shown = [];
  const syncSelection = () => {
    delSel.disabled = state.selected.size === 0;
    const all = panel.querySelector('[data-testid="perm-select-all"]');
    if (all) all.checked = shown.length > 0 && state.selected.size === shown.length;
  };
  const delSel = button(t('perm.deleteSelected'), () => removeRows([...state.selected]), { testid: 'perm-delete-selected', disabled: true });
  const view = listView(ctx, {
    name: 'perm',
    state,
    refresh: false,
    caption: t('svc.tab.permissions'),
    intro: h('p', { class: 'hint', text: t('perm.hint') }),
    tools: [button(t('perm.add'), () => addDialog(), { testid: 'perm-add', kind: 'primary' }), delSel],
    load: async (st) => {
      const data = await api('GET', servicePath(svc.id, `/permissions${qs({ limit: st.limit, offset: st.offset })}`));
      return { rows: data.permissions || [], total: data.total_count };
    },
    onRows: (rows) => {
      shown = rows;
      const ids = new Set(rows.map((r) => r.id));
      for (const x of [...state.selected]) if (!ids.has(x)) state.selected.delete(x);
      delSel.disabled = state.selected.size === 0;
    },
    columns: (rows) => [
      {
        key: 'sel',
        label: h('input', {
          type: 'checkbox',
          testid: 'perm-select-all',
          'aria-label': t('perm.selectAll'),
          checked: rows.length > 0 && state.selected.size === rows.length,
          on: {
            change: (e) => {
              state.selected = e.target.checked ? new Set(rows.map((r) => r.id)) : new Set();
              for (const box of panel.querySelectorAll('[data-testid="perm-select"]')) box.checked = e.target.checked;
              syncSelection();
            },
          },
        }),
        class: 'narrow',
        render: (r) =>
          h('input', {
            type: 'checkbox',
            testid: 'perm-select',
            checked: state.selected.has(r.id),
            'aria-label': t('perm.selectRow', { p: r.permission }),
            on: {
              change: (e) => {
                if (e.target.checked) state.selected.add(r.id);
                else state.selected.delete(r.id);
                syncSelection();
              },
            },
          }),
      },
      {
        key: 'perm',
        label: t('perm.account'),
        render: (r) => [h('code', { testid: 'perm-value', text: r.permission }), r.permission === '*' ? h('span', { class: 'tag-pill', text: t('perm.everyone') }) : null],
      },
      { key: 'desc', label: t('common.description'), render: (r) => dash(r.description) },
      { key: 'created', label: t('common.created'), render: (r) => fmtTime(r.created_at) },
      {
        key: 'op',
        label: t('common.operation'),
        render: (r) => button(t('common.delete'), () => removeRows([r.id]), { testid: 'perm-delete', kind: 'link', label: `${t('common.delete')} ${r.permission}` }),
      },
    ],
  });
  clear(panel, view.el);

  const removeRows = async (ids) => {
    if (!ids.length) return;
    if (!(await confirmDialog(t('perm.deleteConfirm', { n: ids.length })))) return;
    try {
      await api('POST', servicePath(svc.id, '/permissions/batch-delete'), { permissions: ids.map((x) => ({ id: x })) });
      for (const x of ids) state.selected.delete(x);
    } catch (e) {
      showError(e);
    }
    view.refresh();
  };

  const addDialog = async () => {
    const formatMsg = h('div', { class: 'field-error', id: nextId('pfmt'), testid: 'perm-format', role: 'status', hidden: true });
    const input = h('input', {
      type: 'text',
      class: 'wide',
      testid: 'perm-input',
      placeholder: t('perm.placeholder'),
      autocomplete: 'off',
      spellcheck: 'false',
      on: {
        input: () => {
          const v = input.value.trim();
          const ok = PERMISSION_RE.test(v);
          formatMsg.hidden = v === '';
          formatMsg.dataset.valid = ok ? 'true' : 'false';
          formatMsg.className = ok ? 'field-ok' : 'field-error';
          formatMsg.textContent = ok ? `✓ ${t('perm.formatOk')}` : t('perm.badFormat');
          input.setAttribute('aria-invalid', ok || v === '' ? 'false' : 'true');
        },
      },
    });
    const desc = h('input', { type: 'text', testid: 'perm-desc', maxlength: 512 });
    const done = await modal({
      title: t('perm.add'),
      testid: 'perm-dialog',
      body: [
        field({ label: t('perm.account'), control: input, required: true, hint: t('perm.hint'), error: formatMsg }),
        field({ label: `${t('common.description')} (${t('common.optional')})`, control: desc }),
      ],
      ok: async () => {
        const v = input.value.trim();
        if (!PERMISSION_RE.test(v)) {
          formatMsg.hidden = false;
          formatMsg.dataset.valid = 'false';
          formatMsg.className = 'field-error';
          formatMsg.textContent = t('perm.badFormat');
          input.setAttribute('aria-invalid', 'true');
        }
        // The server has the last word (and says why), also for entries the check above
        // does not know; its message is shown in the dialog.
        try {
          await api('POST', servicePath(svc.id, '/permissions/batch-create'), {
            permissions: [{ permission: v, description: desc.value.trim() }],
          });
        } catch (e) {
          input.focus();
          throw e;
        }
      },
    });
    if (done) view.refresh();
  };

  await view.refresh();
}

/** Tags of the service (the same component as on the endpoint details). */
function tagsTab(ctx, panel, svc, reload) {
  const draw = () =>
    clear(
      panel,
      tagsSection({
        kind: 'endpoint_service',
        id: svc.id,
        tags: svc.tags || [],
        busy: TRANSITIONAL.has(svc.status),
        framed: false,
        testid: 'svc-tags',
        onChanged: async () => {
          try {
            svc = await reload();
          } catch (e) {
            if (ctx.alive()) showError(e);
            return;
          }
          if (ctx.alive()) keepFocus(draw);
        },
      }),
    );
  draw();
}

function portsTab(panel, svc) {
  clear(
    panel,
    h('p', { class: 'hint', text: t('svc.portsImmutable') }),
    table({
      testid: 'ports-table',
      caption: t('svc.tab.ports'),
      rows: svc.ports || [],
      rowId: (r) => `${r.protocol}-${r.client_port}`,
      columns: [
        { key: 'protocol', label: t('svc.protocol'), render: (r) => r.protocol },
        { key: 'server', label: t('svc.serverPort'), render: (r) => String(r.server_port) },
        { key: 'client', label: t('svc.clientPort'), render: (r) => String(r.client_port) },
      ],
    }),
  );
}

