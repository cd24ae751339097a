// Endpoints (终端节点): list, create (with the confirmation step), details with tags.

import { api, p, qs, getSession, ApiError } from './api.js';
import { t } from './i18n.js';
import {
  h, clear, table, pager, statusBadge, fmtTime, dash, link, infoList, field, fieldset, radio,
  select, pageHeader, button, modal, confirmDialog, showError, errorText,
  keepFocus, vpcLabel, TRANSITIONAL, nextId,
} from './ui.js';

const listState = { name: '', offset: 0, limit: 10 };

async function loadVpcs() {
  const r = await api('GET', p('/vpcs'));
  return r.vpcs || [];
}

const typeLabel = (type) => (type ? t(`type.${type}`) : '-');

// ---- list ----------------------------------------------------------------------------

export async function list(ctx) {
  const filter = h('input', {
    type: 'search',
    value: listState.name,
    placeholder: t('ep.filter'),
    'aria-label': t('ep.filter'),
    testid: 'ep-filter',
  });
  const body = h('div', { testid: 'ep-list', 'aria-busy': 'true' }, t('app.loading'));
  const polling = h('div', { class: 'hint polling', testid: 'polling', hidden: true, text: t('common.autoRefresh') });
  const toolbar = h(
    'form',
    { class: 'toolbar', role: 'search', on: { submit: (e) => { e.preventDefault(); listState.name = filter.value.trim(); listState.offset = 0; refresh(); } } },
    filter,
    h('button', { type: 'submit', class: 'btn', testid: 'ep-search', text: t('common.search') }),
    button(t('common.refresh'), () => refresh(), { testid: 'ep-refresh' }),
  );
  clear(
    ctx.main,
    pageHeader(t('ep.title'), button(t('ep.create'), () => ctx.go('/endpoints/create'), { testid: 'ep-create', kind: 'primary' })),
    toolbar,
    polling,
    body,
  );

  let vpcs = [];
  try {
    vpcs = await loadVpcs();
  } catch (e) {
    showError(e);
  }

  async function refresh() {
    ctx.cancel('poll');
    let data;
    try {
      data = await api('GET', p(`/vpc-endpoints${qs({ endpoint_service_name: listState.name, limit: listState.limit, offset: listState.offset })}`));
    } catch (e) {
      if (ctx.alive()) {
        showError(e);
        body.removeAttribute('aria-busy');
      }
      return;
    }
    if (!ctx.alive()) return;
    if (data.total_count > 0 && listState.offset >= data.total_count) {
      listState.offset = Math.max(0, Math.floor((data.total_count - 1) / listState.limit) * listState.limit);
      return refresh();
    }
    const rows = data.endpoints || [];
    clear(
      body,
      table({
        testid: 'ep-table',
        caption: t('ep.title'),
        rows,
        columns: [
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
      }),
      pager({
        total: data.total_count || 0,
        limit: listState.limit,
        offset: listState.offset,
        testid: 'ep-pager',
        onChange: (offset, limit) => {
          listState.offset = offset;
          listState.limit = limit;
          refresh();
        },
      }),
    );
    body.removeAttribute('aria-busy');
    const moving = rows.some((e) => TRANSITIONAL.has(e.status));
    polling.hidden = !moving;
    if (moving) ctx.later('poll', refresh, 1000);
  }

  async function remove(e) {
    if (!(await confirmDialog(t('ep.deleteConfirm', { id: e.id })))) return;
    try {
      await api('DELETE', p(`/vpc-endpoints/${encodeURIComponent(e.id)}`));
    } catch (err) {
      showError(err);
    }
    refresh();
  }

  await refresh();
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
    const tags = ep.tags || [];
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
        h(
          'section',
          { class: 'card', 'aria-labelledby': 'ep-tags-title', testid: 'ep-tags' },
          h('div', { class: 'card-head' }, h('h2', { id: 'ep-tags-title', text: t('ep.tags') }), button(t('ep.addTag'), () => editTag(ep, null), { testid: 'tag-add', kind: 'primary', disabled: busy })),
          table({
            testid: 'tag-table',
            caption: t('ep.tags'),
            rows: tags,
            rowId: (x) => x.key,
            columns: [
              { key: 'key', label: t('ep.tagKey'), render: (x) => h('span', { testid: 'tag-key', text: x.key }) },
              { key: 'value', label: t('ep.tagValue'), render: (x) => h('span', { testid: 'tag-value', text: x.value }) },
              {
                key: 'op',
                label: t('common.operation'),
                render: (x) => [
                  button(t('common.edit'), () => editTag(ep, x), { testid: 'tag-edit', kind: 'link', disabled: busy, label: `${t('common.edit')} ${x.key}` }),
                  button(t('common.delete'), () => deleteTag(x), { testid: 'tag-delete', kind: 'link', disabled: busy, label: `${t('common.delete')} ${x.key}` }),
                ],
              },
            ],
          }),
        ),
      ),
    );
  }

  const tagsPath = () => p(`/endpoint/${encodeURIComponent(id)}/tags/action`);

  async function editTag(ep, tag) {
    const key = h('input', { type: 'text', value: tag ? tag.key : '', testid: 'tag-key-input', maxlength: 128, readonly: tag ? true : null, required: true });
    const value = h('input', { type: 'text', value: tag ? tag.value : '', testid: 'tag-value-input', maxlength: 255 });
    const done = await modal({
      title: tag ? t('ep.editTag') : t('ep.addTag'),
      testid: 'tag-dialog',
      body: [field({ label: t('ep.tagKey'), control: key, required: true }), field({ label: t('ep.tagValue'), control: value })],
      ok: async () => {
        const k = key.value.trim();
        if (!k) throw new Error(t('ep.tagKeyRequired'));
        await api('POST', tagsPath(), { action: 'create', tags: [{ key: k, value: value.value.trim() }] });
      },
    });
    if (done) refresh();
  }

  async function deleteTag(tag) {
    if (!(await confirmDialog(t('ep.tagDeleteConfirm', { key: tag.key })))) return;
    try {
      await api('POST', tagsPath(), { action: 'delete', tags: [{ key: tag.key }] });
    } catch (e) {
      showError(e);
    }
    refresh();
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

