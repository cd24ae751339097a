// Endpoints (终端节点): list, create (with the confirmation step), details with the
// source whitelist (访问控制) and tags.

import { api, p, qs, getSession, ApiError } from './api.js';
import { t } from './i18n.js';
import {
  h, clear, statusBadge, fmtTime, dash, link, infoList, field, fieldset, radio,
  select, pageHeader, button, modal, confirmDialog, showError, showSuccess, errorText,
  keepFocus, vpcLabel, TRANSITIONAL, nextId, listView, tagsSection, switchControl, onOff,
} from './ui.js';

const listState = { filter: '', offset: 0, limit: 10 };

async function loadVpcs() {
  const r = await api('GET', p('/vpcs'));
  return r.vpcs || [];
}

const typeLabel = (type) => (type ? t(`type.${type}`) : '-');

// ---- list ----------------------------------------------------------------------------

export async function list(ctx) {
  let vpcs = [];
  const view = listView(ctx, {
    name: 'ep',
    state: listState,
    caption: t('ep.title'),
    filter: t('ep.filter'),
    load: async (st) => {
      const data = await api('GET', p(`/vpc-endpoints${qs({ endpoint_service_name: st.filter, limit: st.limit, offset: st.offset })}`));
      return { rows: data.endpoints || [], total: data.total_count };
    },
    columns: () => [
      { key: 'id', label: t('ep.id'), render: (e) => link(`#/endpoints/${e.id}`, e.id, 'ep-link') },
      { key: 'vpc', label: t('common.vpc'), render: (e) => vpcLabel(vpcs, e.vpc_id) },
      { key: 'service', label: t('ep.serviceName'), class: 'wrap', render: (e) => dash(e.endpoint_service_name) },
      { key: 'ip', label: t('ep.nodeIp'), render: (e) => dash(e.ip) },
      { key: 'dns', label: t('ep.domain'), class: 'wrap', render: (e) => dash((e.dns_names || [])[0]) },
      { key: 'status', label: t('common.status'), render: (e) => statusBadge(e.status) },
      { key: 'type', label: t('ep.type'), render: (e) => typeLabel(e.service_type) },
      { key: 'created', label: t('common.created'), render: (e) => fmtTime(e.created_at) },
      {
        key: 'op',
        label: t('common.operation'),
        render: (e) => button(t('common.delete'), () => remove(e), { testid: 'ep-delete', kind: 'link', disabled: e.status === 'deleting', label: `${t('common.delete')} ${e.id}` }),
      },
    ],
  });
  clear(
    ctx.main,
    pageHeader(t('ep.title'), button(t('ep.create'), () => ctx.go('/endpoints/create'), { testid: 'ep-create', kind: 'primary' })),
    view.el,
  );

  try {
    vpcs = await loadVpcs();
  } catch (e) {
    showError(e);
  }

  async function remove(e) {
    if (!(await confirmDialog(t('ep.deleteConfirm', { id: e.id })))) return;
    try {
      await api('DELETE', p(`/vpc-endpoints/${encodeURIComponent(e.id)}`));
    } catch (err) {
      showError(err);
    }
    view.refresh();
  }

  await view.refresh();
}

// ---- create --------------------------------------------------------------------------

export async function create(ctx) {
  const s = ctx.state;
  if (!s.init) {
    Object.assign(s, {
      init: true,
      step: 'form',
      category: 'cloud',
      publicId: '',
      nameInput: '',
      verified: null, // { name, service } or { name, error }
      enableDns: true,
      vpcId: '',
      subnetId: '',
      publics: null,
      vpcs: null,
      subnets: {},
      problem: '',
    });
  }
  const wrap = h('div', { class: 'form-page' });
  clear(ctx.main, pageHeader(t('epc.title'), button(t('common.back'), () => ctx.go('/endpoints'), { testid: 'ep-back' })), wrap);

  const loads = [];
  if (!s.publics) {
    loads.push(api('GET', p(`/vpc-endpoint-services/public${qs({ limit: 1000 })}`)).then((r) => { s.publics = r.endpoint_services || []; }));
  }
  if (!s.vpcs) loads.push(loadVpcs().then((v) => { s.vpcs = v; }));
  clear(wrap, t('app.loading'));
  const results = await Promise.allSettled(loads);
  for (const r of results) if (r.status === 'rejected') showError(r.reason);
  s.publics ||= [];
  s.vpcs ||= [];
  if (!ctx.alive()) return;
  if (s.category === 'cloud' && !s.publics.length && !s.touchedCategory) s.category = 'name';
  if (!s.vpcId && s.vpcs.length === 1) s.vpcId = s.vpcs[0].id;
  if (s.vpcId) await loadSubnets(s.vpcId);
  if (!ctx.alive()) return;
  draw();

  async function loadSubnets(vpcId) {
    if (s.subnets[vpcId]) return;
    try {
      const r = await api('GET', p(`/subnets${qs({ vpc_id: vpcId })}`));
      s.subnets[vpcId] = r.subnets || [];
      if (!s.subnetId && s.subnets[vpcId].length === 1) s.subnetId = s.subnets[vpcId][0].id;
    } catch (e) {
      showError(e);
      s.subnets[vpcId] = [];
    }
  }

  function chosen() {
    if (s.category === 'cloud') return s.publics.find((x) => x.id === s.publicId) || null;
    if (s.verified && s.verified.service && s.verified.name === s.nameInput.trim()) return s.verified.service;
    return null;
  }

  function draw() {
    keepFocus(() => clear(wrap, s.step === 'form' ? form() : confirmStep()));
  }

  function form() {
    const svc = chosen();
    const interfaceSvc = !svc || svc.service_type !== 'gateway';
    const region = getSession().region;

    const category = fieldset({
      legend: t('epc.category'),
      testid: 'ep-category',
      children: [
        radio('category', 'cloud', t('epc.cloud'), s.category === 'cloud', () => { s.category = 'cloud'; s.touchedCategory = true; s.problem = ''; draw(); }, 'cat-cloud'),
        radio('category', 'name', t('epc.byName'), s.category === 'name', () => { s.category = 'name'; s.touchedCategory = true; s.problem = ''; draw(); }, 'cat-name'),
      ],
    });

    let serviceRow;
    if (s.category === 'cloud') {
      serviceRow = s.publics.length
        ? fieldset({
            legend: t('epc.pick'),
            testid: 'ep-public-list',
            children: h(
              'div',
              { class: 'choice-list' },
              s.publics.map((x) =>
                h(
                  'label',
                  { class: `choice ${s.publicId === x.id ? 'selected' : ''}` },
                  h('input', {
                    type: 'radio',
                    name: 'public',
                    value: x.id,
                    checked: s.publicId === x.id,
                    testid: 'ep-public',
                    on: { change: () => { s.publicId = x.id; s.problem = ''; draw(); } },
                  }),
                  h('span', { class: 'choice-name', text: x.service_name }),
                  h('span', { class: 'tag-pill', text: typeLabel(x.service_type) }),
                ),
              ),
            ),
          })
        : field({ label: t('epc.pick'), control: h('div', { class: 'hint', text: t('epc.noPublic'), testid: 'ep-no-public' }) });
    } else {
      const input = h('input', {
        type: 'text',
        value: s.nameInput,
        testid: 'ep-service-name',
        class: 'wide',
        autocomplete: 'off',
        spellcheck: 'false',
        on: {
          input: (e) => {
            s.nameInput = e.target.value;
            const stale = s.verified && s.verified.name !== s.nameInput.trim();
            result.hidden = !!stale || !s.verified;
          },
          keydown: (e) => {
            if (e.key === 'Enter') {
              e.preventDefault();
              verify();
            }
          },
        },
      });
      const result = h('div', { class: 'verify-result', id: nextId('verify'), testid: 'verify-result', role: 'status', hidden: !s.verified });
      if (s.verified) {
        if (s.verified.service) {
          result.dataset.found = 'true';
          result.classList.add('ok');
          result.append(h('strong', { text: `✓ ${t('epc.found')}` }), ' ', `${s.verified.service.service_name} · ${typeLabel(s.verified.service.service_type)}`);
        } else {
          result.dataset.found = 'false';
          result.classList.add('bad');
          result.append(h('strong', { text: `✗ ${t('epc.notFound')}` }), ' ', t('epc.notFoundHint'), h('div', { class: 'server-msg', text: s.verified.error }));
        }
      }
      serviceRow = field({
        label: t('epc.serviceName'),
        required: true,
        control: h('div', { class: 'inline' }, input, button(t('epc.verify'), verify, { testid: 'ep-verify' })),
        hint: t('epc.serviceNameHint'),
        error: result,
        id: input.id || (input.id = nextId('svcname')),
        describes: input,
      });
    }

    const dns = interfaceSvc
      ? fieldset({
          legend: t('epc.dns'),
          testid: 'ep-dns-field',
          children: h(
            'label',
            { class: 'check' },
            h('input', { type: 'checkbox', checked: s.enableDns, testid: 'ep-dns', on: { change: (e) => { s.enableDns = e.target.checked; } } }),
            ' ',
            t('epc.createDns'),
          ),
        })
      : null;

    const vpcSel = select({
      testid: 'ep-vpc',
      value: s.vpcId,
      options: s.vpcs.map((v) => ({ value: v.id, label: `${v.name || v.id} (${v.cidr})` })),
      onChange: async (v) => {
        s.vpcId = v;
        s.subnetId = '';
        s.problem = '';
        if (v) await loadSubnets(v);
        if (ctx.alive()) draw();
      },
    });
    const vpcRow = field({
      label: t('common.vpc'),
      required: true,
      control: vpcSel,
      hint: s.vpcs.length ? t('epc.vpcHint') : t('epc.noVpc'),
    });

    let subnetRow = null;
    if (interfaceSvc) {
      const subnets = s.vpcId ? s.subnets[s.vpcId] || [] : [];
      subnetRow = field({
        label: t('common.subnet'),
        required: true,
        control: select({
          testid: 'ep-subnet',
          value: s.subnetId,
          options: subnets.map((x) => ({ value: x.id, label: `${x.name || x.id} (${x.cidr})` })),
          onChange: (v) => { s.subnetId = v; s.problem = ''; },
        }),
        hint: s.vpcId && !subnets.length ? t('epc.noSubnet') : null,
      });
    } else {
      subnetRow = h('p', { class: 'hint', text: t('epc.routeHint') });
    }

    const problem = h('div', { class: 'form-problem', role: 'alert', testid: 'ep-form-problem', hidden: !s.problem, text: s.problem });
    const next = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'ep-next', text: t('epc.next') });
    const f = h(
      'form',
      { class: 'form card', testid: 'ep-create-form', novalidate: true },
      field({ label: t('common.region'), control: h('output', { text: region || '-', testid: 'ep-region' }) }),
      category,
      serviceRow,
      dns,
      vpcRow,
      subnetRow,
      problem,
      h('div', { class: 'form-actions' }, next, button(t('common.cancel'), () => ctx.go('/endpoints'), { testid: 'ep-cancel' })),
    );
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      const svcNow = chosen();
      const iface = !svcNow || svcNow.service_type !== 'gateway';
      s.problem = !svcNow
        ? t('epc.needService')
        : !s.vpcId
          ? t('epc.needVpc')
          : iface && !s.subnetId
            ? t('epc.needSubnet')
            : '';
      if (!s.problem) s.step = 'confirm';
      draw();
    });
    return f;
  }

  async function verify() {
    const name = s.nameInput.trim();
    if (!name) return;
    try {
      const svc = await api('GET', p(`/vpc-endpoint-services/describe${qs({ endpoint_service_name: name })}`));
      s.verified = { name, service: svc };
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404) {
        showError(e);
      }
      s.verified = { name, error: errorText(e) };
    }
    s.problem = '';
    if (ctx.alive()) draw();
  }

  function confirmStep() {
    const svc = chosen();
    const iface = svc.service_type !== 'gateway';
    const vpc = s.vpcs.find((v) => v.id === s.vpcId);
    const subnet = (s.subnets[s.vpcId] || []).find((x) => x.id === s.subnetId);
    const items = [
      [t('common.region'), getSession().region || '-'],
      [t('epc.category'), s.category === 'cloud' ? t('epc.cloud') : t('epc.byName')],
      [t('epc.serviceName'), svc.service_name, 'confirm-service'],
      [t('ep.type'), typeLabel(svc.service_type)],
    ];
    if (iface) items.push([t('epc.dns'), s.enableDns ? t('common.yes') : t('common.no'), 'confirm-dns']);
    items.push([t('common.vpc'), vpc ? `${vpc.name || vpc.id} (${vpc.cidr})` : s.vpcId, 'confirm-vpc']);
    if (iface) items.push([t('common.subnet'), subnet ? `${subnet.name || subnet.id} (${subnet.cidr})` : s.subnetId, 'confirm-subnet']);
    const submit = button(t('epc.submit'), async () => {
      submit.disabled = true;
      const body = { endpoint_service_id: svc.id, vpc_id: s.vpcId };
      if (iface) {
        body.subnet_id = s.subnetId;
        body.enable_dns = !!s.enableDns;
      }
      try {
        await api('POST', p('/vpc-endpoints'), body);
        ctx.go('/endpoints', t('epc.submitted'));
      } catch (e) {
        showError(e);
        submit.disabled = false;
      }
    }, { testid: 'ep-submit', kind: 'primary' });
    return h(
      'section',
      { class: 'card', testid: 'ep-confirm', 'aria-labelledby': 'ep-confirm-title' },
      h('h2', { id: 'ep-confirm-title', text: t('epc.confirm') }),
      h('p', { class: 'hint', text: t('epc.confirmHint') }),
      infoList(items),
      h('div', { class: 'form-actions' }, button(t('epc.prev'), () => { s.step = 'form'; draw(); }, { testid: 'ep-prev' }), submit),
    );
  }
}

// ---- detail --------------------------------------------------------------------------

/** What the server accepts in an endpoint whitelist: an IPv4 address or CIDR. */
const IPV4 = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
export const SOURCE_RE = new RegExp(`^${IPV4}(\\.${IPV4}){3}(/(3[0-2]|[12]?\\d))?$`);
const MAX_WHITELIST = 20;

export async function detail(ctx, id) {
  const box = h('div', { testid: 'ep-detail' }, t('app.loading'));
  clear(ctx.main, pageHeader(t('ep.detail'), button(t('common.back'), () => ctx.go('/endpoints'), { testid: 'ep-back' })), box);
  let vpcs = [];
  let subnets = [];
  try {
    [vpcs, subnets] = await Promise.all([loadVpcs(), api('GET', p('/subnets')).then((r) => r.subnets || [])]);
  } catch (e) {
    showError(e);
  }

  async function refresh() {
    ctx.cancel('poll');
    let ep;
    try {
      ep = await api('GET', p(`/vpc-endpoints/${encodeURIComponent(id)}`));
    } catch (e) {
      if (!ctx.alive()) return;
      if (e instanceof ApiError && e.status === 404) {
        clear(box, h('p', { class: 'empty-page', testid: 'ep-gone', text: t('common.notFound') }), link('#/endpoints', t('nav.endpoints')));
      } else {
        showError(e);
      }
      return;
    }
    if (!ctx.alive()) return;
    draw(ep);
    if (TRANSITIONAL.has(ep.status)) ctx.later('poll', refresh, 1000);
  }

  function draw(ep) {
    const subnet = subnets.find((x) => x.id === ep.subnet_id);
    const items = [
      ['ID', ep.id, 'ep-id'],
      [t('common.vpc'), vpcLabel(vpcs, ep.vpc_id), 'ep-vpc-name'],
    ];
    if (ep.service_type !== 'gateway') items.push([t('common.subnet'), subnet ? `${subnet.name || subnet.id} (${subnet.cidr})` : dash(ep.subnet_id)]);
    items.push(
      [t('ep.serviceName'), dash(ep.endpoint_service_name), 'ep-service'],
      [t('ep.nodeIp'), dash(ep.ip), 'ep-ip'],
      [t('ep.domain'), dash((ep.dns_names || [])[0]), 'ep-domain'],
      [t('common.status'), statusBadge(ep.status), 'ep-status'],
      [t('ep.type'), typeLabel(ep.service_type)],
      [t('ep.marker'), dash(ep.marker_id)],
      [t('common.created'), fmtTime(ep.created_at)],
    );
    if (ep.status === 'failed' && ep.error && ep.error.length) {
      items.push([t('ep.error'), ep.error.map((x) => `${x.error_code}: ${x.error_message}`).join('; '), 'ep-error']);
    }
    const busy = TRANSITIONAL.has(ep.status);
    keepFocus(() =>
      clear(
        box,
        h(
          'section',
          { class: 'card', 'aria-labelledby': 'ep-basic' },
          h('div', { class: 'card-head' }, h('h2', { id: 'ep-basic', text: t('ep.basic') }), button(t('common.delete'), () => removeIt(ep), { testid: 'ep-detail-delete', kind: 'danger', disabled: ep.status === 'deleting' })),
          busy ? h('div', { class: 'hint polling', testid: 'polling', text: t('common.autoRefresh') }) : null,
          infoList(items),
        ),
        ep.service_type === 'gateway' ? null : whitelistCard(ep),
        tagsSection({ kind: 'endpoint', id, tags: ep.tags || [], busy, onChanged: refresh, testid: 'ep-tags' }),
      ),
    );
  }

  /** The endpoint's source whitelist (访问控制): on/off and the addresses it admits. */
  function whitelistCard(ep) {
    const list = ep.whitelist || [];
    const editable = !TRANSITIONAL.has(ep.status) && ep.status !== 'failed';
    return h(
      'section',
      { class: 'card', 'aria-labelledby': 'ep-wl-title', testid: 'ep-whitelist' },
      h(
        'div',
        { class: 'card-head' },
        h('h2', { id: 'ep-wl-title', text: t('wl.title') }),
        button(t('wl.edit'), () => editWhitelist(ep), { testid: 'wl-edit', kind: 'primary', disabled: !editable }),
      ),
      infoList([
        [t('wl.enabled'), onOff(ep.enable_whitelist), 'wl-enabled'],
        [
          t('wl.entries'),
          list.length ? h('ul', { class: 'plain-list', testid: 'wl-list' }, list.map((x) => h('li', { testid: 'wl-entry' }, h('code', { text: x })))) : t('wl.noEntries'),
          'wl-entries',
        ],
      ]),
      h('p', { class: 'hint', testid: 'wl-effect', text: t(`wl.effect${ep.enable_whitelist ? 'On' : 'Off'}${list.length ? '' : 'Empty'}`) }),
      editable ? null : h('p', { class: 'hint', text: t('wl.notNow') }),
    );
  }

  async function editWhitelist(ep) {
    const rows = (ep.whitelist || []).map((v) => ({ value: v }));
    if (!rows.length) rows.push({ value: '' });
    let enable = !!ep.enable_whitelist;
    const sw = switchControl({ checked: enable, testid: 'wl-switch', onChange: (v) => { enable = v; } });
    const entries = h('div', { class: 'entry-list', testid: 'wl-rows' });
    const count = h('span', { class: 'hint', testid: 'wl-count' });
    const add = button(t('wl.add'), () => {
      rows.push({ value: '' });
      drawRows();
      const inputs = entries.querySelectorAll('[data-testid="wl-entry-input"]');
      inputs[inputs.length - 1]?.focus();
    }, { testid: 'wl-entry-add' });

    function check(v) {
      return v === '' || SOURCE_RE.test(v) ? '' : t('wl.bad');
    }

    function drawRows() {
      clear(
        entries,
        rows.map((r, i) => {
          const err = h('div', { class: 'field-error', id: nextId('wlerr'), testid: 'wl-entry-error', role: 'status', text: check(r.value) });
          const input = h('input', {
            type: 'text',
            value: r.value,
            testid: 'wl-entry-input',
            placeholder: '192.168.0.10 / 192.168.1.0/24',
            'aria-label': t('wl.entryN', { n: i + 1 }),
            'aria-describedby': err.id,
            'aria-invalid': check(r.value) ? 'true' : 'false',
            autocomplete: 'off',
            spellcheck: 'false',
            on: {
              input: (e) => {
                r.value = e.target.value.trim();
                err.textContent = check(r.value);
                e.target.setAttribute('aria-invalid', err.textContent ? 'true' : 'false');
              },
            },
          });
          return h(
            'div',
            { class: 'entry-row', testid: 'wl-row' },
            input,
            button(t('common.delete'), () => { rows.splice(i, 1); drawRows(); }, { testid: 'wl-entry-remove', kind: 'link', label: t('wl.removeN', { n: i + 1 }) }),
            err,
          );
        }),
      );
      count.textContent = `${rows.length} / ${MAX_WHITELIST}`;
      add.disabled = rows.length >= MAX_WHITELIST;
    }
    drawRows();

    const switchId = sw.input.id;
    const done = await modal({
      title: t('wl.edit'),
      testid: 'wl-dialog',
      body: [
        field({ label: t('wl.enabled'), control: sw, id: switchId, describes: sw.input, hint: t('wl.switchHint') }),
        fieldset({ legend: t('wl.entries'), testid: 'wl-entries-field', children: [entries, h('div', { class: 'inline' }, add, count)], hint: t('wl.hint') }),
      ],
      ok: async () => {
        // Empty rows are dropped; everything else goes to the server, which has the last
        // word on the format (its message is shown in the dialog).
        const whitelist = rows.map((r) => r.value).filter((v) => v !== '');
        await api('PUT', p(`/vpc-endpoints/${encodeURIComponent(ep.id)}`), { enable_whitelist: enable, whitelist });
      },
    });
    if (done) {
      showSuccess(t('wl.saved'));
      await refresh();
    }
  }

  async function removeIt(ep) {
    if (!(await confirmDialog(t('ep.deleteConfirm', { id: ep.id })))) return;
    try {
      await api('DELETE', p(`/vpc-endpoints/${encodeURIComponent(ep.id)}`));
      ctx.go('/endpoints', t('common.deleted'));
    } catch (e) {
      showError(e);
      refresh();
    }
  }

  await refresh();
}
