// Quotas (配额): used and total per resource type.

import { api, p } from './api.js';
import { t } from './i18n.js';
import { h, clear, table, pageHeader, button, showError } from './ui.js';

export async function page(ctx) {
  const body = h('div', { testid: 'quota-list', 'aria-busy': 'true' }, t('app.loading'));
  clear(ctx.main, pageHeader(t('quota.title'), button(t('common.refresh'), () => load(), { testid: 'quota-refresh' })), body);

  async function load() {
    let data;
    try {
      data = await api('GET', p('/quotas'));
    } catch (e) {
      if (ctx.alive()) showError(e);
      return;
    }
    if (!ctx.alive()) return;
    const rows = (data.quotas && data.quotas.resources) || [];
    clear(
      body,
      table({
        testid: 'quota-table',
        caption: t('quota.title'),
        rows,
        rowId: (r) => r.type,
        columns: [
          { key: 'type', label: t('quota.type'), render: (r) => t(`quota.${r.type}`) },
          { key: 'used', label: t('quota.used'), render: (r) => h('span', { testid: 'quota-used', text: String(r.used) }) },
          { key: 'quota', label: t('quota.total'), render: (r) => h('span', { testid: 'quota-total', text: String(r.quota) }) },
          {
            key: 'bar',
            label: `${t('quota.used')} / ${t('quota.total')}`,
            render: (r) =>
              h(
                'div',
                { class: 'meter-cell' },
                h('meter', { min: '0', max: String(Math.max(r.quota, 1)), value: String(r.used), high: String(Math.max(r.quota, 1) * 0.8), 'aria-label': `${t(`quota.${r.type}`)} ${r.used} / ${r.quota}` }),
                h('span', { text: `${r.used} / ${r.quota}` }),
              ),
          },
        ],
      }),
      h('p', { class: 'hint', text: t('quota.hint') }),
    );
    body.removeAttribute('aria-busy');
  }

  await load();
}
